"""What the runner holds for a run's campaigns: the lists written and served, each trigger fired at its
time on the timeline, its answer recorded, and, while the run drains, whether every subscribed recipient
has reached the ESP yet.

The runner calls ``check`` before anything starts (a bad list file is the user's error, exit 2),
``start`` once the target runs, ``tick`` from its main loop, ``feed`` with the ledger records it tails,
``settled`` in the drain and ``stop`` at the end. A trigger runs on its own thread, so a slow SUT does
not stall the main loop; the ledger writer is thread-safe.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from mailstorm.endpoint import Endpoint
from mailstorm.errors import FieldError
from mailstorm.harness.campaign import lists
from mailstorm.harness.campaign.serve import ListServer
from mailstorm.harness.campaign.spec import CampaignSpec, HttpTrigger, SmtpTrigger
from mailstorm.harness.campaign.trigger import describe, fire
from mailstorm.harness.targets.base import Monitored
from mailstorm.ledger import CampaignAnswer, CampaignList, CampaignTrigger, EspAccepted, LedgerWriter, Record

LIST_DIR = "campaign"  # <run>/campaign/<id>.csv


class Campaigns:
    """The run's campaigns, from their lists to the drain (see the module docstring)."""

    def __init__(self, specs: tuple[CampaignSpec, ...], seed: int) -> None:
        self.specs = specs
        self.seed = seed
        self._server: ListServer | None = None
        self._writer: LedgerWriter | None = None
        self._values: dict[str, dict[str, str]] = {}
        self._fired: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._answers: dict[str, bool] = {}
        self._owed: dict[str, set[str]] = {}  # per campaign: subscribed addresses not yet at the ESP

    def check(self, target: object, kind: str) -> None:
        """Read every list file now: a bad one stops the run before anything starts. A trigger that
        needs what the target does not have (``{target_http}`` of a target without monitoring pages)
        is a ``FieldError`` on its field."""
        for i, spec in enumerate(self.specs):
            trigger = spec.trigger
            if (
                isinstance(trigger, HttpTrigger)
                and "{target_http}" in trigger.url
                and not isinstance(target, Monitored)
            ):
                raise FieldError(
                    ("campaign", i, "trigger", "url"),
                    f"{{target_http}}: target kind {kind!r} serves no HTTP pages of its own; give the URL",
                )
            if spec.list is not None:
                lists.read(spec.list, spec.unsubscribed, self.seed)

    def start(self, run_dir: Path, writer: LedgerWriter, target: object, endpoints: list[Endpoint]) -> None:
        if not self.specs:
            return
        out = run_dir / LIST_DIR
        out.mkdir(exist_ok=True)
        self._server = ListServer(out).start()
        self._writer = writer
        smtp = next((e for e in endpoints if e.kind == "smtp"), None)
        health = getattr(target, "health_urls", None) or [""]
        for spec in self.specs:
            made = lists.prepare(spec, out, self.seed)
            url = self._server.url(spec.id)
            emails, gone = lists.load(made.path)
            self._owed[spec.id] = {e for e, g in zip(emails, gone, strict=True) if not g}
            writer.write(
                CampaignList(
                    id=spec.id, path=str(made.path), url=url, recipients=made.recipients,
                    unsubscribed=made.unsubscribed,
                )
            )  # fmt: skip
            values = {
                "campaign_id": spec.id,
                "list_path": str(made.path.resolve()),
                "list_url": url,
                "target_http": health[0].rsplit("/health", 1)[0],
                "target_host": smtp.host if smtp else "",
                "target_port": str(smtp.port) if smtp else "",
            }
            if isinstance(spec.trigger, SmtpTrigger):
                values["target_host"] = spec.trigger.host or values["target_host"]
                values["target_port"] = str(spec.trigger.port or values["target_port"])
            self._values[spec.id] = values

    def tick(self, elapsed_s: float) -> None:
        """Fire every trigger whose time has come."""
        for spec in self.specs:
            if spec.id not in self._fired and spec.id in self._values and elapsed_s >= spec.at:
                self._fired.add(spec.id)
                t = threading.Thread(target=self._fire, args=(spec,), name=f"campaign-{spec.id}", daemon=True)
                self._threads.append(t)
                t.start()

    def _fire(self, spec: CampaignSpec) -> None:
        values = self._values[spec.id]
        via = spec.trigger.via
        request = describe(spec.trigger, values)
        self._writer.write(CampaignTrigger(id=spec.id, via=via, request=request, at_s=spec.at))
        started = time.time_ns()
        answer = fire(spec.trigger, values, spec.fields(values))
        self._writer.write(
            CampaignAnswer(
                id=spec.id, via=via, ok=answer.ok, code=answer.code, answer=answer.text, started=started
            )
        )
        self._answers[spec.id] = answer.ok
        if not answer.ok:
            sys.stderr.write(
                f"mailstorm: campaign {spec.id} never started: the SUT refused its trigger "
                f"({request}: {answer.code} {answer.text[:200]})\n"
            )

    def feed(self, records: list[Record]) -> None:
        """Cross off the subscribed recipients the ESP accepted mail for."""
        owed = [s for s in self._owed.values() if s]
        if not owed:
            return
        for rec in records:
            if isinstance(rec, EspAccepted) and rec.to:
                for address in rec.to:
                    for left in owed:
                        left.discard(address.lower())

    def settled(self) -> bool:
        """Every trigger answered, and every campaign that started has reached all its subscribers (the
        drain has nothing more to wait for on its account)."""
        if len(self._answers) < len(self._fired) or len(self._fired) < len(self.specs):
            return False
        return not any(self._owed[cid] for cid, ok in self._answers.items() if ok)

    def stop(self) -> None:
        for t in self._threads:
            t.join(5.0)
        if self._server is not None:
            self._server.stop()
