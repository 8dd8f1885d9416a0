"""The chaos timeline driver: carries out a scenario's chaos steps at their times, on a thread of its own.

Each step becomes a begin event at ``at`` and, with ``for``, an end event at ``at + for``. Every event is
written to the timeline ledger (``chaos.begin`` / ``chaos.end``, and ``action`` for target actions)
*before* it is carried out, so the record is never later than the change it describes; an action's
outcome follows in its own ``action`` record. ESP faults and outages go through the fake ESP's control
API; target actions through the target's ``act``; network faults through the chaos proxy.

A failure to change the ESP or the proxy makes the run meaningless, so it is kept in ``errors`` for the
runner to stop on; a target action that fails (a restart that does not come up) is a finding about the
SUT and is only recorded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailstorm.errors import HarnessError, MailstormError, UserError
from mailstorm.harness.chaos_spec import INVERSE_ACTIONS, ChaosStep
from mailstorm.ledger import Action, ChaosBegin, ChaosEnd, LedgerWriter

# Actions that take the target down on purpose, and those that bring it back.
DOWN_ACTIONS = frozenset({"kill", "stop"})
UP_ACTIONS = frozenset({"restart", "start"})


@dataclass(frozen=True)
class Event:
    at: float  # seconds from the start of the load
    begin: bool
    index: int
    step: ChaosStep

    @property
    def label(self) -> str:
        return self.step.label(self.index)


def schedule(steps: tuple[ChaosStep, ...]) -> list[Event]:
    """Begin and end events in time order; at equal times ends come first (a window that closes as the
    next opens never overlaps it), then file order."""
    events = [Event(s.at, True, i, s) for i, s in enumerate(steps)]
    events += [Event(s.end, False, i, s) for i, s in enumerate(steps) if s.end is not None]
    return sorted(events, key=lambda e: (e.at, e.begin, e.index))


class Timeline:
    """Runs the events of ``steps`` against the ESP, the target and the proxy from ``start(t0)`` on.

    ``esp(name)`` returns the current control client of the ESP a step names (None: the first; a
    callable, because an ESP may be replaced); ``esp_lifecycle`` is (crash(name), restart(name));
    ``target`` needs ``act(action, **params)`` when the timeline has target steps; ``proxy`` needs
    ``add_toxic(spec, esp=name) -> str`` (``esp``: the step's, None for every ESP) and
    ``remove_toxic(name)`` when it has network steps.
    """

    def __init__(
        self,
        steps: tuple[ChaosStep, ...],
        *,
        writer: LedgerWriter,
        esp: Callable[[str | None], Any],
        target: Any = None,
        target_kind: str = "",
        proxy: Any = None,
        esp_lifecycle: tuple[Callable[[str | None], str], Callable[[str | None], str]] | None = None,
    ) -> None:
        self.events = schedule(steps)
        self._writer = writer
        self._esp = esp
        self._target = target
        self._target_kind = target_kind
        self._proxy = proxy
        self._esp_lifecycle = esp_lifecycle  # (crash, restart), for esp_outage in crash mode
        self.esps_down: set[str | None] = set()  # ESPs crashed on purpose and not back yet (None: the first)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._active: dict[int, str] = {}  # step index -> label, while its window is open
        self._handles: dict[int, str] = {}  # step index -> fault id / toxic name to remove at its end
        self._down = False  # the target was taken down on purpose (kill, stop) and not brought back
        self._acting = False
        self.errors: list[str] = []
        self.done = 0
        self.action_failures: list[str] = []

    def start(self, t0: float) -> None:
        """Begin at monotonic time ``t0`` (the start of the load)."""
        self._thread = threading.Thread(target=self._run, args=(t0,), name="chaos-timeline", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def target_down(self) -> bool:
        """True while the target is down on purpose, or an action on it is under way (a restart that has
        not brought it up yet): the runner must not take that for a crash."""
        return self._down or self._acting

    def active(self) -> list[str]:
        with self._lock:
            return list(self._active.values())

    def _run(self, t0: float) -> None:
        for event in self.events:
            if self._stop.wait(max(0.0, t0 + event.at - time.monotonic())):
                return
            try:
                self._fire(event)
            except Exception as exc:  # recorded for the runner, which stops the run on it
                self.errors.append(f"chaos step {event.label!r} at {event.at:g}s: {_why(exc)}")
            self.done += 1

    def _fire(self, event: Event) -> None:
        step, label = event.step, event.label
        params = step.params()
        begin = ChaosBegin(name=label, what=step.what, params=params, at_s=event.at, esp=step.esp)
        end = ChaosEnd(name=label, what=step.what, params=params, at_s=event.at, esp=step.esp)
        if event.begin:
            self._writer.write(begin)
            with self._lock:
                self._active[event.index] = label
            self._begin(event, params)
            if step.end is None and step.what == "target":
                # A bare action is a window as long as the action took, not one open to the end of the run.
                self._writer.write(end)
                with self._lock:
                    self._active.pop(event.index, None)
        else:
            self._writer.write(end)
            try:
                self._end(event)
            finally:
                with self._lock:
                    self._active.pop(event.index, None)

    def _begin(self, event: Event, params: dict[str, Any]) -> None:
        step = event.step
        if step.what == "esp_fault":
            spec = {**params, "name": params.get("name") or event.label}
            self._handles[event.index] = self._esp(step.esp).add_fault(spec)
        elif step.what == "esp_outage" and step.esp_outage.mode == "crash":
            crash, _ = self._esp_lifecycle
            self.esps_down.add(step.esp)
            self._record_action("esp-crash", step.esp or "esp", lambda: crash(step.esp))
        elif step.what == "esp_outage":
            spec = {"type": "outage", "name": event.label, "duration_s": step.for_, **params}
            self._handles[event.index] = self._esp(step.esp).add_fault(spec)
        elif step.what == "target":
            self._act(step.target.action, step.target.params)
        elif step.what == "network":
            toxic = step.network.model_copy(update={"name": step.network.name or event.label})
            self._handles[event.index] = self._proxy.add_toxic(toxic, esp=step.esp)

    def _end(self, event: Event) -> None:
        step = event.step
        handle = self._handles.pop(event.index, None)
        if step.what == "esp_outage" and step.esp_outage.mode == "crash":
            _, restart = self._esp_lifecycle
            if not self._record_action("esp-restart", step.esp or "esp", lambda: restart(step.esp)):
                raise HarnessError(f"the fake ESP {step.esp or 'esp'} did not come back after its crash")
            self.esps_down.discard(step.esp)
        elif (
            step.what in ("esp_fault", "esp_outage") and handle is not None and step.esp not in self.esps_down
        ):
            # An outage ends by itself after duration_s, a fault may have its own ttl, and a crashed ESP
            # took its faults with it: the fault may be gone already (404, a UserError), as we want.
            try:
                self._esp(step.esp).remove_fault(handle)
            except UserError:
                pass
        elif step.what == "target":
            self._act(INVERSE_ACTIONS[step.target.action], step.target.params)
        elif step.what == "network" and handle is not None:
            self._proxy.remove_toxic(handle)

    def _act(self, action: str, params: dict[str, Any]) -> None:
        self._acting = True
        try:
            self._record_action(action, self._target_kind, lambda: self._target.act(action, **params))
        finally:
            if action in DOWN_ACTIONS:
                self._down = True
            elif action in UP_ACTIONS:
                self._down = False
            self._acting = False

    def _record_action(self, what: str, on: str, do: Callable[[], Any]) -> bool:
        """Carry out ``do`` and write its ``action`` record (t: when it finished, started: when it was
        issued; the chaos.begin/chaos.end before this call marks the same moment)."""
        started = time.time_ns()
        try:
            detail, ok = str(do()), True
        except Exception as exc:
            detail, ok = _why(exc), False
            self.action_failures.append(f"{what}: {detail}")
        self._writer.write(Action(what=what, target=on, ok=ok, detail=detail, started=started))
        return ok


def _why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, MailstormError) else f"{type(exc).__name__}: {exc}"
