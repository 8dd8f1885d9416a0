"""Counters of what the fake ESP did (sessions, accepted messages, replies per code, faults fired, cuts)
and their Prometheus exposition. Plain ints on the hot path; summed over workers on demand."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry


class Counters:
    """One worker's counts. ``replies`` is keyed by the reply code's bytes on the hot path (b"250");
    ``as_dict`` gives strings."""

    __slots__ = ("accepted", "cut", "open_sessions", "replies", "sessions")

    def __init__(self) -> None:
        self.sessions = 0
        self.open_sessions = 0
        self.accepted = 0
        self.cut = 0
        self.replies: Counter[bytes] = Counter()

    def as_dict(self, fired: Counter[str]) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "open_sessions": self.open_sessions,
            "accepted": self.accepted,
            "cut": self.cut,
            "replies": {k.decode() if isinstance(k, bytes) else k: v for k, v in self.replies.items()},
            "faults": dict(fired),
        }


def merge(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum the ``as_dict`` of several workers (and any extra numeric or per-key counts they carry)."""
    total: dict[str, Any] = {"workers": 0}
    for part in parts:
        total["workers"] += 1
        for key, value in part.items():
            if isinstance(value, dict):
                bucket = total.setdefault(key, Counter())
                bucket.update(value)
            elif isinstance(value, int | float):
                total[key] = total.get(key, 0) + value
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in total.items()}


class _Collector:
    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot

    def collect(self):
        s = self.snapshot
        yield CounterMetricFamily("fake_esp_sessions", "SMTP sessions opened", value=s.get("sessions", 0))
        yield GaugeMetricFamily(
            "fake_esp_open_sessions", "SMTP sessions open", value=s.get("open_sessions", 0)
        )
        yield CounterMetricFamily("fake_esp_accepted", "messages kept", value=s.get("accepted", 0))
        yield CounterMetricFamily("fake_esp_cut", "connections cut without a reply", value=s.get("cut", 0))
        replies = CounterMetricFamily("fake_esp_replies", "replies sent, by code", labels=["code"])
        for code, n in sorted(s.get("replies", {}).items()):
            replies.add_metric([str(code)], n)
        yield replies
        faults = CounterMetricFamily(
            "fake_esp_faults_fired", "fault decisions, by fault id", labels=["fault"]
        )
        for fid, n in sorted(s.get("faults", {}).items()):
            faults.add_metric([fid], n)
        yield faults
        yield GaugeMetricFamily("fake_esp_workers", "worker processes", value=s.get("workers", 1))


def prometheus_text(snapshot: dict[str, Any]) -> bytes:
    from prometheus_client import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshot))
    return generate_latest(registry)
