"""What happens to each recipient of an accepted message: its canonical events, drawn once per recipient.

In this order (the first that applies):

1. the recipient is on its ESP's suppression list (mailstorm.fake_esp.webhooks.suppression): dropped
   (the ESP's dropped event: SendGrid ``dropped``, Mailgun ``failed`` suppress-bounce, SES's Bounce
   OnAccountSuppressionList...), source ``suppressed``;
2. an outcome address (``ADDRESSES``, docs/profiles.md "Outcome addresses"): SES's mailbox simulator
   ``<outcome>@simulator.amazonses.com`` (with or without a ``+label``), for every ESP, and on any domain
   a local part ``<outcome>+<anything>`` (``bounce+u1@example.test``), source ``address``;
3. the webhook events rates (WebhookSpec.events, ``EventMix``), source ``mix``: deferred first (then the
   outcome), then bounce, else soft_bounce, else delivered followed by open (then click), complaint and
   unsubscribe, each drawn on its own.

The draws are seeded per recipient: a ``random.Random`` keyed on the spec's seed, the message (its
correlation id, else its Message-ID, else the ESP's id) and the recipient, so a recipient's fate does not
depend on the order messages arrive in nor on which worker took them, and a resend of the same message
to it draws the same. A pattern address suppresses as a real recipient does (a second send to
``bounce+x@...`` is dropped); SES's simulator addresses never do (SES keeps them off the account's list).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from mailstorm.fake_esp.webhooks.formats import suppresses
from mailstorm.fake_esp.webhooks.spec import EventMix
from mailstorm.fake_esp.webhooks.suppression import Suppressions

SIMULATOR_DOMAIN = "simulator.amazonses.com"
# Local part (before any "+label") -> the recipient's events. ``ooto``: SES delivers and the recipient's
# server auto-replies to the sender, which no ESP reports as an event; ``suppressionlist``: on a global
# suppression list (SES: Bounce Permanent/Suppressed; the others: their dropped event).
ADDRESSES: dict[str, tuple[str, ...]] = {
    "success": ("delivered",),
    "bounce": ("bounce",),
    "softbounce": ("soft_bounce",),
    "defer": ("deferred", "delivered"),
    "ooto": ("delivered",),
    "complaint": ("delivered", "complaint"),
    "unsubscribe": ("delivered", "unsubscribe"),
    "open": ("delivered", "open"),
    "click": ("delivered", "open", "click"),
    "suppressionlist": ("dropped",),
}
FINAL = ("delivered", "bounce", "soft_bounce", "dropped")  # the outcome is the recipient's one of these


@dataclass(frozen=True, slots=True)
class Outcome:
    events: tuple[str, ...]
    source: str  # mix | address | suppressed
    detail: str = ""  # for dropped: what suppressed the recipient (or "global")
    suppresses: str | None = None  # the event that puts the recipient on the ESP's list, if one does

    @property
    def final(self) -> str:
        return next(e for e in reversed(self.events) if e in FINAL)


def address_events(rcpt: str) -> tuple[tuple[str, ...], bool] | None:
    """(events, is SES's simulator) for an outcome address, else None."""
    local, _, domain = rcpt.rpartition("@")
    word, plus, _ = local.lower().partition("+")
    simulator = domain.lower() == SIMULATOR_DOMAIN
    if word in ADDRESSES and (plus or simulator):
        return ADDRESSES[word], simulator
    return None


def draw_mix(mix: EventMix, rng: random.Random) -> tuple[str, ...]:
    out = ["deferred"] if rng.random() < mix.deferred else []
    if rng.random() < mix.bounce:
        return (*out, "bounce")
    if rng.random() < mix.soft_bounce:
        return (*out, "soft_bounce")
    out.append("delivered")
    if rng.random() < mix.open:
        out.append("open")
        if rng.random() < mix.click:
            out.append("click")
    if rng.random() < mix.complaint:
        out.append("complaint")
    if rng.random() < mix.unsubscribe:
        out.append("unsubscribe")
    return tuple(out)


class Outcomes:
    """Decides each recipient's outcome for one ESP process (``decide``) and keeps the suppression lists
    up to date with it."""

    def __init__(self, mix: EventMix, seed: int, suppressions: Suppressions) -> None:
        self.mix = mix
        self.seed = seed
        self.suppressions = suppressions

    def decide(self, esp: str, accepted: dict[str, Any], rcpt: str) -> Outcome:
        why = self.suppressions.why(esp, rcpt)
        if why is not None:
            return Outcome(("dropped",), "suppressed", why)
        known = address_events(rcpt)
        if known is not None:
            events, simulator = known
            source = "address"
            detail = "global" if events == ("dropped",) else ""
        else:
            key = accepted.get("id") or accepted.get("mid") or accepted.get("esp_id") or ""
            events = draw_mix(self.mix, random.Random(f"{self.seed}|{key}|{rcpt.lower()}"))
            simulator, source, detail = False, "mix", ""
        hit = next((e for e in events if suppresses(esp, e)), None)
        if hit is not None and not simulator:
            self.suppressions.add(esp, rcpt, hit)
        return Outcome(events, source, detail, None if simulator else hit)
