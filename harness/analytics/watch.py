"""What the runner holds for a scenario's ``analytics:`` section (AnalyticsWatch).

Before the ESP starts, ``wire`` gives it the target's receiver URL (``receiver: target``; the target's
``WebhookReceiving`` ability) and ``target_env`` the signing key for the target to check posts with. While
the run goes, a thread polls ``probe`` (one ``analytics.probe`` record per poll, with the counts per event
kind it read). ``feed`` follows the ESP's ``esp.webhook`` records from the runner's ledger tail: an event
is settled once a record of it is final (acknowledged, given up, out of retries). After the drain, the
runner waits (within the drain deadline) until every event is settled and no new post came for
``QUIET_S``, then ``final_poll`` asks the SUT for its last count (``final: true``): the retries the ESP
makes after the mail has drained are part of the truth, and their counts must be in.
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
from mailstorm.fake_esp.webhooks.spec import WebhookSpec
from mailstorm.harness.analytics.spec import AnalyticsProbeSpec, AnalyticsSpec
from mailstorm.harness.reference.config import WEBHOOK_KEY_ENV
from mailstorm.harness.targets.base import WebhookReceiving
from mailstorm.ledger import AnalyticsProbe, EspWebhook, LedgerWriter, Record
from mailstorm.netguard import check_address
from mailstorm.runinfo import WebhookKeysInfo

MAX_BODY = 4 * 1024 * 1024
QUIET_S = 1.0  # after the last event settled, this long without a new post: the ESP has nothing more
REORDER_HOLD_S = 1.0  # the poster holds a reordered event back this long at most (its REORDER_HOLD_S)


def read_counts(spec: AnalyticsProbeSpec, body: bytes) -> dict[str, float]:
    """The counts per event kind in a probe's answer; ValueError/KeyError/TypeError naming what is not."""
    if spec.format == "prometheus":
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(body.decode("utf-8", "replace")):
            for sample in family.samples:
                if sample.name in (spec.metric, f"{spec.metric}_total") and spec.label in sample.labels:
                    kind = sample.labels[spec.label]
                    counts[kind] = counts.get(kind, 0.0) + sample.value
        return counts
    value: Any = json.loads(body)
    for part in (spec.json_path or "").split(".") if spec.json_path else ():
        value = value[int(part)] if isinstance(value, list) else value[part]
    if not isinstance(value, dict) or not all(isinstance(v, int | float) for v in value.values()):
        raise TypeError(f"{spec.json_path or 'the body'} is not an object of counts per event")
    return {str(k): float(v) for k, v in value.items()}


def poll(spec: AnalyticsProbeSpec, url: str, *, final: bool = False) -> AnalyticsProbe:
    status: int | None = None
    counts = error = None
    try:
        with urllib.request.urlopen(url, timeout=spec.timeout) as resp:
            status = resp.status
            counts = read_counts(spec, resp.read(MAX_BODY))
    except urllib.error.HTTPError as exc:
        status, error = exc.code, f"HTTP {exc.code}"
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        error = str(getattr(exc, "reason", exc))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        error = f"counts not found: {exc}"[:200]
    ok = counts is not None
    return AnalyticsProbe(url=url, status=status, ok=ok, counts=counts, error=error, final=final)


class AnalyticsWatch:
    """Inert without an ``analytics:`` section; see the module docstring."""

    def __init__(self, spec: AnalyticsSpec | None, hooks: WebhookSpec | None) -> None:
        self.spec = spec
        self._key = hooks.signing_key if hooks is not None else None
        self._format = hooks.format if hooks is not None else None
        faults = hooks.faults if hooks is not None else None
        held_s = (faults.delay_ms + faults.jitter_ms) / 1000 if faults is not None else 0.0
        self._quiet_s = QUIET_S + held_s + (REORDER_HOLD_S if faults is not None and faults.reorder else 0.0)
        self._url: str | None = None
        self._writer: LedgerWriter | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._open: set[str] = set()  # events posted, none of whose records is final yet
        self._last_post = 0.0  # monotonic time of the last esp.webhook record seen

    # -- before the ESP and the target start -------------------------------------------------------
    def wire(self, target: object, fmt: str | None) -> str | None:
        """The URL the first ESP posts its webhooks to (None: as the scenario says)."""
        if self.spec is None or self.spec.receiver != "target":
            return None
        if not isinstance(target, WebhookReceiving) or fmt is None:
            raise UserError("analytics.receiver: target: this target kind receives no webhooks")
        return target.webhook_url(fmt)

    def target_env(self, keys: WebhookKeysInfo | None) -> dict[str, str]:
        """What the target's SUT needs in its environment: the key it checks the posts' signatures with
        (SendGrid's: the run's verification key, from ``keys``; the others': the webhooks' signing key)."""
        if self.spec is None or self.spec.receiver != "target":
            return {}
        key = keys.sendgrid_public_key if self._format == "sendgrid" and keys is not None else self._key
        return {WEBHOOK_KEY_ENV: key} if key else {}

    # -- while the run goes ------------------------------------------------------------------------
    def start(self, target: object, writer: LedgerWriter, *, allow_remote: bool) -> None:
        probe = self.spec.probe if self.spec is not None else None
        if probe is None:
            return
        url = probe.url
        if url == "target":
            urls = target.analytics_urls if isinstance(target, WebhookReceiving) else []
            if not urls:
                raise UserError("analytics.probe.url: target: this target kind serves no analytics URL")
            url = urls[0]
        check_address(urlsplit(url).hostname or "", allow_remote=allow_remote, what="analytics.probe.url")
        self._url, self._writer = url, writer
        self._thread = threading.Thread(target=self._run, args=(probe,), name="analytics-probe", daemon=True)
        self._thread.start()

    def _run(self, probe: AnalyticsProbeSpec) -> None:
        while not self._stop.wait(probe.every):
            self._writer.write(poll(probe, self._url))

    def feed(self, records: list[Record]) -> None:
        for rec in records:
            if isinstance(rec, EspWebhook) and rec.attempt:
                self._last_post = time.monotonic()
                if rec.final:
                    self._open.discard(rec.event_id)
                else:
                    self._open.add(rec.event_id)

    def settled(self) -> bool:
        """Every event posted has its final answer, and no post came for the quiet time."""
        return not self._open and time.monotonic() - self._last_post >= self._quiet_s

    @property
    def active(self) -> bool:
        return self.spec is not None

    # -- after the drain -----------------------------------------------------------------------------
    def final_poll(self) -> None:
        """The SUT's last word on its counts (stops the polling thread first)."""
        self.stop()
        probe = self.spec.probe if self.spec is not None else None
        if probe is not None and self._url is not None and self._writer is not None:
            self._writer.write(poll(probe, self._url, final=True))
            self._url = None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
