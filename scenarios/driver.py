"""The workload models inside one Locust process: open (arrival rate) and closed (users + wait).

Open model. The shape's arrival times are generated as the run goes
(``mailstorm.scenarios.shapes.iter_arrivals``);
load process ``i`` of ``n`` takes arrivals ``i, i+n, i+2n...``, so the processes together offer exactly the
schedule and their ids never collide. A scheduler greenlet releases each arrival at its intended time,
whatever the SUT is doing; sender greenlets (one SMTP session or HTTP connection each, at most this
process's share of ``max_connections``) pick arrivals up. An arrival that no sender could start within
``max_lag_s`` of its intended time is not sent but recorded as ``load.dropped``; every sent one is a
``load.submit`` with its intended time, so latency is measured from when the message was due, not from
when a busy generator got round to it (no coordinated omission). At the end a ``load.finished`` record
says how busy the process itself was (CPU seconds, the lateness of a timer on its event loop), so a
report can tell a generator that could not keep up from senders held by a slow SUT.

Closed model. Each user sends, waits ``wait_s``, sends again, until the end; its "intended" time is
simply when it started, which is exactly why this model hides a slow SUT.

Runs only inside Locust processes (gevent): never import this from pytest, the runner or the reports.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import gevent
from gevent.event import Event
from gevent.queue import Queue

from mailstorm.ledger import LoadDropped, LoadFinished, LoadStarted, LoadSubmit, Record
from mailstorm.scenarios.messages import Message, MessageFactory
from mailstorm.scenarios.model import LoadSpec
from mailstorm.scenarios.shapes import Closed, expected_count, iter_arrivals, share
from mailstorm.scenarios.submit import Result

# Gaps between arrivals longer than this are slept on the stop event (abort wakes them); shorter ones
# with a plain gevent.sleep, which costs less at thousands of arrivals a second.
_INTERRUPTIBLE_S = 0.05
# The event loop's lateness is sampled with a timer this long, this often: cheap, and fine enough to see
# a loop that runs tens of milliseconds late (CPU-bound, or starved by other processes).
_LAG_TIMER_S = 0.05
ABORTED = "aborted: the load generator stopped before the SUT replied"


class Submitter(Protocol):
    target: str

    def submit(self, msg: Message) -> Result: ...

    def close(self) -> None: ...


class LedgerSink(Protocol):
    def write(self, record: Record, /) -> int: ...


class Recorder:
    """Writes each outcome to the load ledger, then tells Locust (stats, event hooks) about it."""

    def __init__(self, sink: LedgerSink, worker: int, fire: Callable[..., None], request_type: str) -> None:
        self._sink = sink
        self._worker = worker
        self._fire = fire
        self._type = request_type
        self.submitted = 0
        self.accepted = 0
        self.dropped = 0

    def submit(self, msg: Message, intended: int, start: int, end: int, res: Result, target: str) -> None:
        self._sink.write(
            LoadSubmit(
                id=msg.id,
                intended=intended,
                start=start,
                end=end,
                ok=res.ok,
                code=res.code,
                text=res.text,
                phase=res.phase,
                target=target,
                worker=self._worker,
                cls=msg.cls,
                size=len(msg.raw),
                rcpts=len(msg.recipients),
            )
        )
        self.submitted += 1
        self.accepted += res.ok
        self._fire(
            request_type=self._type,
            name=res.outcome,
            response_time=(end - intended) / 1e6,
            response_length=len(msg.raw),
            exception=None if res.ok else RuntimeError(f"{res.code} {res.text}"),
            context={"id": msg.id},
        )

    def started(self, t0: int, planned: int | None, shape: str) -> None:
        self._sink.write(LoadStarted(worker=self._worker, t0=t0, planned=planned, shape=shape))

    def abort(self, msg: Message, intended: int, start: int, target: str) -> None:
        """Stopped mid-submission: the SUT's answer (if any) is unknown; say so rather than lose it."""
        self.submit(msg, intended, start, time.time_ns(), Result(False, None, ABORTED, "stop"), target)

    def drop(self, intended: int, count: int, loop_lag_ms: float) -> None:
        self._sink.write(
            LoadDropped(
                intended=intended, count=count, worker=self._worker, loop_lag_ms=round(loop_lag_ms, 3)
            )
        )
        self.dropped += count

    def finished(self, *, cpu_s: float, wall_s: float, lag: LoopLag, connections: int) -> None:
        self._sink.write(
            LoadFinished(
                worker=self._worker,
                submitted=self.submitted,
                dropped=self.dropped,
                cpu_s=round(cpu_s, 4),
                wall_s=round(wall_s, 4),
                loop_lag_ms=round(lag.mean_ms, 3),
                loop_lag_max_ms=round(lag.max_ms, 3),
                connections=connections,
            )
        )


class LoopLag:
    """How late this process's event loop runs a timer, sampled while ``run`` runs (a greenlet): over
    the whole run (mean, max) and over the last second (``recent_ms``, what a drop is recorded with)."""

    def __init__(self) -> None:
        self.samples = 0
        self.total_s = 0.0
        self.max_s = 0.0
        self._recent: deque[float] = deque(maxlen=max(int(1 / _LAG_TIMER_S), 1))

    def run(self) -> None:
        while True:
            t = time.monotonic()
            gevent.sleep(_LAG_TIMER_S)
            late = max(time.monotonic() - t - _LAG_TIMER_S, 0.0)
            self.samples += 1
            self.total_s += late
            self.max_s = max(self.max_s, late)
            self._recent.append(late)

    @property
    def recent_ms(self) -> float:
        return 1e3 * sum(self._recent) / len(self._recent) if self._recent else 0.0

    @property
    def mean_ms(self) -> float:
        return 1e3 * self.total_s / self.samples if self.samples else 0.0

    @property
    def max_ms(self) -> float:
        return 1e3 * self.max_s


class _Driver:
    """What both models share: a stop signal that cuts a run short (Locust stopping or quitting) and
    the promise that, once ``run`` returns, every submission started has been recorded."""

    def __init__(self) -> None:
        self._stop = Event()
        self._finished = Event()

    def abort(self, timeout: float = 15.0) -> None:
        """Stop offering load, abort what is in flight (recorded as such) and wait until recorded."""
        self._stop.set()
        self._finished.wait(timeout)

    def _join(self, greenlets: list[gevent.Greenlet], bound_s: float) -> None:
        """Wait for ``greenlets`` up to ``bound_s``, or until abort(), whichever comes first."""
        deadline = time.monotonic() + bound_s
        while not self._stop.is_set() and any(not g.dead for g in greenlets):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            gevent.joinall(greenlets, timeout=min(left, 0.2))


class OpenDriver(_Driver):
    """Offers this process's share of the arrival schedule, on time, whatever the SUT does."""

    def __init__(
        self,
        spec: LoadSpec,
        *,
        index: int,
        processes: int,
        seed: int,
        factory: MessageFactory,
        submitters: Callable[[int], Submitter],
        recorder: Recorder,
    ) -> None:
        assert not isinstance(spec.shape, Closed)
        super().__init__()
        self._spec = spec
        everything = iter_arrivals(spec.shape, spec.duration_s, poisson=spec.arrivals == "poisson", seed=seed)
        self._arrivals = itertools.islice(everything, index, None, processes)
        # Uniform arrivals number the integral of the rate, rounded; Poisson ones are that on average.
        self.planned = share(round(expected_count(spec.shape, spec.duration_s)), index, processes)
        self._max_senders = max(share(spec.max_connections, index, processes), 1)
        self._factory = factory
        self._submitters = submitters
        self._rec = recorder
        # Arrivals due and not yet started; a None per sender at the end tells the senders to finish.
        self._queue: Queue = Queue()
        self._idle = 0
        self._senders: list[gevent.Greenlet] = []
        self._t0_mono = 0.0
        self._t0_ns = 0
        self._lag = LoopLag()

    def _intended_ns(self, at: float) -> int:
        return self._t0_ns + int(at * 1e9)

    def run(self) -> None:
        """Offer every arrival, then let in-flight submissions finish (bounded); record what is left."""
        self._t0_mono, self._t0_ns = time.monotonic(), time.time_ns()
        self._rec.started(self._t0_ns, self.planned, self._spec.shape.kind)
        cpu0, lag = time.process_time(), self._lag
        lag_probe = gevent.spawn(lag.run)
        schedule: tuple[float, float] | None = None
        try:
            for at in self._arrivals:
                delay = self._t0_mono + at - time.monotonic()
                if delay > _INTERRUPTIBLE_S:
                    self._stop.wait(delay)  # a long gap: wake early if aborted
                elif delay > 0:
                    gevent.sleep(delay)  # the common case at high rates: a plain timer is cheaper
                if self._stop.is_set():
                    break
                self._queue.put(at)
                # More arrivals waiting than idle senders: open another connection, up to the cap.
                if self._queue.qsize() > self._idle and len(self._senders) < self._max_senders:
                    self._senders.append(gevent.spawn(self._sender, len(self._senders)))
            # How busy the generator was is measured over the schedule, not the drain that follows.
            schedule = (time.process_time() - cpu0, time.monotonic() - self._t0_mono)
            lag_probe.kill()
            for _ in self._senders:
                self._queue.put(None)
            # Drain: what is queued is either started within max_lag_s or dropped; a started submission
            # gets up to timeout_s per SMTP step. Past that bound the stragglers are aborted (recorded).
            self._join(self._senders, self._spec.max_lag_s + 4 * self._spec.timeout_s)
        finally:
            gevent.killall(self._senders, block=True)
            lag_probe.kill()
            self._drop_stale(float("inf"))
            cpu_s, wall_s = schedule or (time.process_time() - cpu0, time.monotonic() - self._t0_mono)
            self._rec.finished(cpu_s=cpu_s, wall_s=wall_s, lag=lag, connections=self._max_senders)
            self._finished.set()

    def _drop_stale(self, due_before: float) -> None:
        """Record every queued arrival due before ``due_before`` as dropped (at the end: all of them)."""
        q = self._queue
        while not q.empty() and (head := q.peek_nowait()) is not None and head < due_before:
            q.get_nowait()
            count = 1 + self._take_same_second(head, due_before)
            self._rec.drop(self._intended_ns(head), count, self._lag.recent_ms)

    def _take_same_second(self, first: float, due_before: float) -> int:
        """Pop the queued arrivals right after ``first`` that fall in its second and are due before
        ``due_before``: one load.dropped record per second of intent keeps per-second counts exact."""
        q = self._queue
        count = 0
        while not q.empty() and (nxt := q.peek_nowait()) is not None and nxt < due_before:
            if int(nxt) != int(first):
                break
            q.get_nowait()
            count += 1
        return count

    def _sender(self, n: int) -> None:
        sub = self._submitters(n)
        try:
            while True:
                self._idle += 1
                try:
                    at = self._queue.get()
                finally:
                    self._idle -= 1
                if at is None:
                    return
                cutoff = time.monotonic() - self._t0_mono - self._spec.max_lag_s
                if at < cutoff:
                    count = 1 + self._take_same_second(at, cutoff)
                    self._rec.drop(self._intended_ns(at), count, self._lag.recent_ms)
                    continue
                self._send(sub, at)
        finally:
            sub.close()

    def _send(self, sub: Submitter, at: float) -> None:
        msg = self._factory.next()
        start = time.time_ns()
        try:
            res = sub.submit(msg)
        except gevent.GreenletExit:
            self._rec.abort(msg, self._intended_ns(at), start, sub.target)
            raise
        self._rec.submit(msg, self._intended_ns(at), start, time.time_ns(), res, sub.target)


class ClosedDriver(_Driver):
    """``users`` senders that each send, wait ``wait_s``, and send again until ``duration_s``."""

    def __init__(
        self,
        spec: LoadSpec,
        *,
        index: int,
        processes: int,
        factory: MessageFactory,
        submitters: Callable[[int], Submitter],
        recorder: Recorder,
    ) -> None:
        assert isinstance(spec.shape, Closed)
        super().__init__()
        self._spec = spec
        self._wait = spec.shape.wait_s
        self._users = share(spec.shape.users, index, processes)
        self._factory = factory
        self._submitters = submitters
        self._rec = recorder

    def run(self) -> None:
        deadline = time.monotonic() + self._spec.duration_s
        self._rec.started(time.time_ns(), None, "closed")
        users = [gevent.spawn(self._user, n, deadline) for n in range(self._users)]
        try:
            self._join(users, self._spec.duration_s + 4 * self._spec.timeout_s)
        finally:
            gevent.killall(users, block=True)
            self._finished.set()

    def _user(self, n: int, deadline: float) -> None:
        sub = self._submitters(n)
        try:
            while time.monotonic() < deadline and not self._stop.is_set():
                msg = self._factory.next()
                start = time.time_ns()
                try:
                    res = sub.submit(msg)
                except gevent.GreenletExit:
                    self._rec.abort(msg, start, start, sub.target)
                    raise
                self._rec.submit(msg, start, start, time.time_ns(), res, sub.target)
                if self._wait:
                    self._stop.wait(min(self._wait, max(deadline - time.monotonic(), 0)))
        finally:
            sub.close()
