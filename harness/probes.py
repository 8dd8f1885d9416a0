"""Probes: the SUT's own health and metrics URLs, polled during a run and written on the timeline.

A report can then show when the SUT's monitoring noticed a fault, beside when the fault began. One
thread polls every probe at its own interval (urllib: no event loop, nothing shared with the runner's
main loop); each poll is one ``mailstorm.ledger.Probe`` record (status, latency, the value asked for, why
it failed).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

from mailstorm.errors import UserError
from mailstorm.harness.scenario import ProbeSpec
from mailstorm.harness.targets.base import Monitored
from mailstorm.ledger import LedgerWriter, Probe
from mailstorm.netguard import check_address

MAX_BODY = 4 * 1024 * 1024  # a metrics page bigger than this is not read whole


def resolve_probes(
    probes: tuple[ProbeSpec, ...], target: object, kind: str, *, allow_remote: bool = False
) -> tuple[ProbeSpec, ...]:
    """Probes with a ``url`` each: ``target: health`` becomes one probe per URL in the target's
    ``health_urls`` (``metrics``: ``metrics_urls``), the ``Monitored`` ability of a target. Those URLs
    pass the loopback guard here (the scenario's own were checked before the run started)."""
    out: list[ProbeSpec] = []
    for i, probe in enumerate(probes):
        if probe.url is not None:
            out.append(probe)
            continue
        urls: list[str] = []
        if isinstance(target, Monitored):
            urls = list(target.health_urls if probe.target == "health" else target.metrics_urls)
        if not urls:
            raise UserError(f"probes[{i}].target: target kind {kind!r} has no {probe.target} URL to probe")
        for n, url in enumerate(urls):
            host = urlsplit(url).hostname or ""
            check_address(
                host, allow_remote=allow_remote, what=f"probes[{i}]: the target's {probe.target} URL"
            )
            name = probe.name or f"{kind}-{probe.target}"
            name = name if len(urls) == 1 else f"{name}-{n}"
            out.append(probe.model_copy(update={"url": url, "target": None, "name": name}))
    return tuple(out)


def poll_once(probe: ProbeSpec) -> Probe:
    """One request to ``probe.url``: its ``probe`` record."""
    assert probe.url is not None  # resolve_probes gave every probe its URL
    status: int | None = None
    error: str | None = None
    value = None
    start = time.perf_counter()
    body = b""
    try:
        with urllib.request.urlopen(probe.url, timeout=probe.timeout) as resp:
            status = resp.status
            body = resp.read(MAX_BODY)
    except urllib.error.HTTPError as exc:
        # A failing health check often says why in its body (a 503 with the queue depth): keep reading.
        status = exc.code
        error = f"HTTP {exc.code}"
        with exc:
            body = exc.read(MAX_BODY)
    except (urllib.error.URLError, OSError) as exc:
        error = str(getattr(exc, "reason", exc))
    latency_s = round(time.perf_counter() - start, 6)
    if body and (probe.metric or probe.json_path):
        try:
            value = extract(probe, body)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            error = f"value not found: {exc}"
    ok = status is not None and 200 <= status < 300
    name = probe.name or probe.url
    return Probe(
        url=probe.url, name=name, status=status, latency_s=latency_s, ok=ok, value=value, error=error
    )


def extract(probe: ProbeSpec, body: bytes) -> float | str | bool | None:
    """The value ``probe`` asks for: a Prometheus metric (summed over its samples) or a JSON field."""
    if probe.metric:
        total = None
        for family in text_string_to_metric_families(body.decode("utf-8", "replace")):
            for sample in family.samples:
                # A counter family "x" has samples "x_total" (and "x_created"): match either spelling.
                if sample.name in (probe.metric, f"{probe.metric}_total"):
                    total = (total or 0.0) + sample.value
        if total is None:
            raise KeyError(probe.metric)
        return total
    value: Any = json.loads(body)
    for part in probe.json_path.split("."):  # type: ignore[union-attr]
        value = value[int(part)] if isinstance(value, list) else value[part]
    if isinstance(value, dict | list):
        raise TypeError(f"{probe.json_path} is not a single value")
    return value


class Prober:
    """Polls ``probes`` on a thread until ``stop``; every poll goes into ``writer`` as a probe record."""

    def __init__(self, probes: tuple[ProbeSpec, ...], writer: LedgerWriter) -> None:
        self.probes = probes
        self._writer = writer
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.probes:
            return
        self._thread = threading.Thread(target=self._run, name="probes", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        due = [time.monotonic()] * len(self.probes)
        while not self._stop.is_set():
            i = min(range(len(due)), key=due.__getitem__)
            if self._stop.wait(max(0.0, due[i] - time.monotonic())):
                return
            self._writer.write(poll_once(self.probes[i]))
            # Keep the cadence: the next poll is due one interval after this one was, not after it ended.
            due[i] = max(due[i] + self.probes[i].every, time.monotonic())
