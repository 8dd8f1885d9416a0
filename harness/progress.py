"""What a run is doing right now: counters tailed from the ledgers, and their live rendering (rich).

``LedgerTail`` reads only the bytes appended to each ledger source since the last poll
(``mailstorm.ledger.tail``: across segments; a torn last line waits for its end), so following a long
run costs as much as the records it adds, and yields them as
their declared record classes (``mailstorm.ledger``; a line of no known kind is skipped). ``LiveStats`` folds
those records into the figures a person watching wants (offered, accepted and delivered per second, the
backlog, ESP refusals) and, through the fate module's incremental form (mailstorm.reports.fate), into
each message's outcome as the reports will decide it: the backlog the drain waits on is the messages
that would be lost or pending if the run ended now.
``Progress`` draws them: a rich live panel on a terminal, a plain line every few seconds otherwise;
``outcome_table`` is the run's closing lines.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from mailstorm.ledger import (
    AlertFiring,
    AlertResolved,
    EspAccepted,
    EspReplied,
    InvalidRecord,
    LoadDropped,
    LoadStarted,
    LoadSubmit,
    Record,
    SutQueue,
    decode,
)
from mailstorm.ledger.tail import LineTail
from mailstorm.reports.fate import BOUNCED, DELIVERED, DUPLICATED, OUTCOMES, REJECTED, Fates

FORGET_AFTER_S = 600.0  # the runner's live view forgets settled messages this long after (LiveStats)
EARLY_MAX = 100_000  # ESP acceptances read before their submission, kept for the live p95
RATE_WINDOW_S = 2  # rates are averaged over the last whole seconds, so they do not flicker
LATENCY_WINDOW_S = 10  # the live p95 is over the deliveries of the last seconds


class LedgerTail:
    """Yields the records appended to the ledger directory's sources since the previous ``poll``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lines = LineTail(directory)

    def poll(self, *, final: bool = False) -> Iterator[Record]:
        """The records appended since the last poll (``mailstorm.ledger.tail``: across segments, a line
        waits for its newline). ``final`` (every writer has stopped): also a last line left without its
        newline, as the reports' reader takes it."""
        return _parse(self._lines.poll(final=final))


def _parse(lines: Iterable[bytes]) -> Iterator[Record]:
    for raw in lines:
        try:
            yield decode(raw)
        except InvalidRecord:
            continue  # a torn line from a killed writer (the reports count those), or a foreign one


class LiveStats:
    """Running totals and recent rates of one run, from its ledger records.

    Every count of messages comes from ``fates``, the fate module's incremental form: the same rules as
    the reports, so the drain waits on exactly the messages a report would call lost or pending, and the
    last counts equal report.md's. The rest (rates, drops, refusals, the sampled queue) is for watching.

    ``forget_after_s`` (the runner gives ``FORGET_AFTER_S``; None: never) keeps its memory flat on a long
    run: ``fates`` forgets settled ids that long after they settled (what that changes: ``Fates``), and
    the live p95 forgets a submission not at the ESP after that long (a message delivered later than
    that is not in the live p95; the reports have it). The per-second rates keep the last minute, the
    p95 its window, ESP acceptances read before their submission at most ``EARLY_MAX``.
    """

    def __init__(self, *, forget_after_s: float | None = None) -> None:
        self.fates = Fates(forget_after_s=forget_after_s)
        self._forget_ns = None if forget_after_s is None else int(forget_after_s * 1e9)
        self._pruned_ns = 0
        self.dropped = 0
        self._planned: int | None = None  # the load processes' own word (load.started), when they give it
        self.esp_refusals = 0  # ESP replies other than an acceptance (retries included)
        self.sut_queue: int | None = None
        self.last_delivery_ns = 0
        self.load_t0_ns: int | None = None  # intended time of the first arrival seen: the load's zero
        self._per_second: dict[str, Counter[int]] = {"offered": Counter(), "accepted": Counter()}
        self._per_second["delivered"] = Counter()
        self.esp_replies: Counter[str] = Counter()  # ESP replies other than an acceptance, by code ("cut")
        self.esp_accepted = 0  # ESP acceptances (a duplicate counts again)
        # For the live p95: intended send time of each message submitted and not yet at the ESP, the ESP's
        # time of an acceptance read before its submission (ledger files are read one after the other),
        # and (ESP time s, end-to-end ms) of recent first deliveries.
        self._intended: dict[str, int] = {}
        self._early: dict[str, int] = {}
        self._latencies: deque[tuple[float, float]] = deque()
        self.alerts: dict[str, str] | None = None  # firing now, fingerprint -> name (None: no alert seen)

    def feed(self, records: Iterable[Record]) -> int:
        n = 0
        for rec in records:
            n += 1
            self.fates.feed(rec)
            if isinstance(rec, LoadSubmit):
                self._first_intended(rec.intended)
                self._tick("offered", rec.t)
                if rec.ok:
                    self._tick("accepted", rec.t)
                    self._submitted(rec.id, rec.intended)
            elif isinstance(rec, EspAccepted):
                self.last_delivery_ns = max(self.last_delivery_ns, rec.t)
                self._tick("delivered", rec.t)
                self.esp_accepted += 1
                self._delivered(rec.id, rec.t)
            elif isinstance(rec, LoadDropped):
                self._first_intended(rec.intended)
                self.dropped += rec.count
            elif isinstance(rec, LoadStarted) and rec.planned is not None:
                self._planned = (self._planned or 0) + rec.planned
            elif isinstance(rec, EspReplied):
                self.esp_refusals += 1
                self.esp_replies["cut" if rec.code is None else str(rec.code)] += 1
            elif isinstance(rec, SutQueue):
                self.sut_queue = rec.depth
            elif isinstance(rec, AlertFiring | AlertResolved):
                firing = self.alerts = self.alerts if self.alerts is not None else {}
                if isinstance(rec, AlertFiring):
                    firing[rec.fingerprint] = rec.name
                else:
                    firing.pop(rec.fingerprint, None)
        if self._forget_ns is not None and self.last_delivery_ns - self._pruned_ns > self._forget_ns // 10:
            self._pruned_ns = self.last_delivery_ns
            horizon = self.last_delivery_ns - self._forget_ns
            self._intended = {mid: t for mid, t in self._intended.items() if t >= horizon}
        return n

    @property
    def planned_by_load(self) -> int | None:
        """Arrivals the load processes said they planned (load.started), None until they say."""
        return self._planned

    @property
    def planned(self) -> int:
        """Arrivals the load planned: the load processes' sum when they said, else offered + dropped (as
        the reports' load check counts them)."""
        return self._planned if self._planned is not None else self.fates.submitted + self.dropped

    def _submitted(self, mid: str | None, intended: int) -> None:
        if mid is None:
            return
        early = self._early.pop(mid, None)
        if early is not None:
            self._latency(early, intended)
        elif mid not in self._intended:
            self._intended[mid] = intended

    def _delivered(self, mid: str | None, t_ns: int) -> None:
        if mid is None:
            return
        intended = self._intended.pop(mid, None)
        if intended is not None:
            self._latency(t_ns, intended)
        elif not self.fates.was_submitted(mid) and len(self._early) < EARLY_MAX:
            # Its submission is in a ledger file read later (a duplicate's is not: it is not kept). Bounded:
            # acceptances of ids the load never submitted must not grow it forever.
            self._early[mid] = t_ns

    def _latency(self, at_ns: int, intended: int) -> None:
        lat = self._latencies
        lat.append((at_ns / 1e9, (at_ns - intended) / 1e6))
        while lat and lat[0][0] < at_ns / 1e9 - LATENCY_WINDOW_S:
            lat.popleft()

    def p95_ms(self, now_s: float | None = None) -> float | None:
        """The 95th percentile end-to-end latency (intended send -> ESP acceptance, nearest rank) of the
        messages first delivered in the last ``LATENCY_WINDOW_S`` seconds; None when none was."""
        now = now_s if now_s is not None else time.time()
        recent = sorted(ms for at, ms in list(self._latencies) if at >= now - LATENCY_WINDOW_S)
        if not recent:
            return None
        return recent[max(0, -(-95 * len(recent) // 100) - 1)]

    def _first_intended(self, intended: int) -> None:
        if self.load_t0_ns is None or intended < self.load_t0_ns:
            self.load_t0_ns = intended

    def _tick(self, what: str, t_ns: int) -> None:
        self._per_second[what][t_ns // 1_000_000_000] += 1

    def rate(self, what: str, now_s: float | None = None) -> float:
        """Average per second over the last ``RATE_WINDOW_S`` whole seconds."""
        now = int(now_s if now_s is not None else time.time())
        counts = self._per_second[what]
        total = sum(counts.get(s, 0) for s in range(now - RATE_WINDOW_S, now))
        for s in [s for s in counts if s < now - 60]:  # keep the per-second table small
            del counts[s]
        return total / RATE_WINDOW_S

    # -- messages, as the fate module counts them -----------------------------------------------------
    @property
    def offered(self) -> int:
        return self.fates.submitted

    @property
    def rejected(self) -> int:
        return self.fates.count(REJECTED)

    @property
    def accepted(self) -> int:
        """Messages that got into the pipeline: every submitted one the SUT did not refuse."""
        return self.fates.submitted - self.fates.count(REJECTED)

    @property
    def delivered(self) -> int:
        """Messages at the ESP (once or more)."""
        return self.fates.count(DELIVERED) + self.fates.count(DUPLICATED)

    @property
    def duplicates(self) -> int:
        return self.fates.count(DUPLICATED)

    @property
    def bounced(self) -> int:
        return self.fates.count(BOUNCED)

    @property
    def backlog(self) -> int:
        """Messages the SUT took that are neither at the ESP nor refused (lost or pending if it ended now)."""
        return self.fates.unsettled


def outcome_table(stats: LiveStats) -> str:
    """The closing lines of a run on the console: report.md's outcome table (its columns, its numbers)
    as plain aligned text: planned and dropped arrivals, then every message's outcome (offered = submitted;
    uncorrelated only when there are any, as report.md shows it)."""
    counts = stats.fates.counts()
    columns = {"planned": stats.planned, "dropped": stats.dropped, "offered": counts["submitted"]}
    columns.update((n, counts[n]) for n in OUTCOMES if n != "uncorrelated" or counts[n])
    names = list(columns)
    cells = [f"{columns[n]:,}" for n in names]
    widths = [max(len(n), len(c)) for n, c in zip(names, cells, strict=True)]
    header = "  ".join(n.capitalize().rjust(w) for n, w in zip(names, widths, strict=True))
    row = "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))
    return f"  {header}\n  {row}"


class Progress:
    """Shows ``LiveStats`` while a run goes: a live panel on a terminal, plain lines otherwise."""

    def __init__(
        self,
        name: str,
        duration_s: float,
        *,
        enabled: bool = True,
        console: Console | None = None,
        every_s: float = 5.0,
        drain_s: float | None = None,
    ) -> None:
        self.name = name
        self.enabled = enabled
        self.duration_s = duration_s
        self.drain_s = drain_s  # the drain deadline: the longest the drain can take
        self._drain_from: float | None = None  # elapsed seconds when the drain began
        self.console = console or Console(file=sys.stderr)
        self._live: Live | None = None
        self._every_s = every_s
        self._last_line = 0.0

    def __enter__(self) -> Progress:
        if self.enabled and self.console.is_terminal:
            self._live = Live(console=self.console, auto_refresh=False, transient=False)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def update(self, stats: LiveStats, *, elapsed_s: float, phase: str, faults: list[str]) -> None:
        if phase == "drain" and self._drain_from is None:
            self._drain_from = elapsed_s
        if self._live is not None:
            self._live.update(self._table(stats, elapsed_s, phase, faults), refresh=True)
            return
        now = time.monotonic()
        if self.enabled and now - self._last_line >= self._every_s:
            self._last_line = now
            self.console.print(self._line(stats, elapsed_s, phase, faults), highlight=False, soft_wrap=True)

    def _line(self, stats: LiveStats, elapsed_s: float, phase: str, faults: list[str]) -> str:
        return (
            f"[{elapsed_s:6.1f}s {phase}] offered {stats.offered} ({stats.rate('offered'):.0f}/s) "
            f"accepted {stats.accepted} ({stats.rate('accepted'):.0f}/s) "
            f"delivered {stats.delivered} ({stats.rate('delivered'):.0f}/s) "
            f"backlog {stats.backlog} ETA {self.eta(stats, elapsed_s, phase)} "
            f"faults: {', '.join(faults) or '-'}"
            + (f" alerts: {_alerts(stats)}" if stats.alerts is not None else "")
        )

    def _table(self, stats: LiveStats, elapsed_s: float, phase: str, faults: list[str]) -> Table:
        table = Table(title=f"mailstorm run {self.name}", show_header=False, min_width=60)
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_column(justify="right")
        table.add_row("elapsed", f"{elapsed_s:.1f} s of {self.duration_s:g} s", phase)
        table.add_row("ETA", self.eta(stats, elapsed_s, phase), "")
        table.add_row("offered", f"{stats.offered}", f"{stats.rate('offered'):.0f}/s")
        table.add_row("accepted by SUT", f"{stats.accepted}", f"{stats.rate('accepted'):.0f}/s")
        table.add_row("delivered to ESP", f"{stats.delivered}", f"{stats.rate('delivered'):.0f}/s")
        table.add_row(
            "backlog", f"{stats.backlog}", f"queue {stats.sut_queue}" if stats.sut_queue is not None else ""
        )
        table.add_row("rejected / dropped", f"{stats.rejected} / {stats.dropped}", "")
        table.add_row("ESP refusals", f"{stats.esp_refusals}", f"dup {stats.duplicates}")
        table.add_row("active faults", ", ".join(faults) or "-", "")
        if stats.alerts is not None:
            table.add_row("alerts firing", _alerts(stats), "")
        return table

    def eta(self, stats: LiveStats, elapsed_s: float, phase: str) -> str:
        """When the run should end: the load's remaining seconds, then the drain's, estimated from the
        backlog and the delivery rate and never past the drain deadline."""
        drain_max = self.drain_s
        if phase == "drain" and self._drain_from is not None and drain_max is not None:
            drain_max = max(0.0, drain_max - (elapsed_s - self._drain_from))
        rate = stats.rate("delivered")
        drain = stats.backlog / rate if rate > 0 else drain_max
        if drain is not None and drain_max is not None:
            drain = min(drain, drain_max)
        if phase == "load":
            left = max(0.0, self.duration_s - elapsed_s)
            return f"{left:.0f} s of load" + (f" + drain ~{drain:.0f} s" if drain is not None else "")
        if phase == "drain":
            return f"drain ~{drain:.0f} s" if drain is not None else "drain: unknown"
        return "-"


def _alerts(stats: LiveStats) -> str:
    return ", ".join(sorted(set((stats.alerts or {}).values()))) or "-"
