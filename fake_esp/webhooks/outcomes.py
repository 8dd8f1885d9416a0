"""What happens to each recipient of an accepted message: its canonical events, drawn once per recipient.

In this order (the first that applies):

1. the recipient is on its ESP's suppression list (mailstorm.fake_esp.webhooks.suppression): dropped
   (the ESP's dropped event: SendGrid ``dropped``, Mailgun ``failed`` suppress-bounce, SES's Bounce
   OnAccountSuppressionList...), source ``suppressed``;
2. an outcome address (``ADDRESSES``, docs/profiles.md "Outcomes"): SES's mailbox simulator
   ``<outcome>@simulator.amazonses.com`` (with or without a ``+label``), for every ESP, and on any domain
   a local part ``<outcome>+<anything>`` (``bounce+u1@example.test``), source ``address``;
3. the webhook events rates (WebhookSpec.events, ``EventMix``), source ``mix``: deferred first (then the
   outcome), then bounce, else soft_bounce, else delivered followed by open (then click), complaint and
   unsubscribe, each drawn on its own.

The draws are seeded per recipient: uniform numbers cut from one BLAKE2b digest of the spec's seed, the
message (its correlation id, else its Message-ID, else the ESP's id) and the recipient (one hash per
recipient: a ``random.Random`` seeded per recipient cost several times more), so a recipient's fate does
not depend on the order messages arrive in nor on which worker took them, and a resend of the same
message to it draws the same. A pattern address suppresses as a real recipient does (a second send to
``bounce+x@...`` is dropped); SES's simulator addresses never do (SES keeps them off the account's list).
"""

from __future__ import annotations

import hashlib
import struct
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
_UNIT = 2.0**-53


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


def uniforms(seed: int, key: str, rcpt: str) -> tuple[float, ...]:
    """Eight uniform numbers in [0, 1) for one recipient of one message: 53 bits each of a 64-byte
    BLAKE2b digest (a double's precision, as ``random.random``)."""
    digest = hashlib.blake2b(f"{seed}|{key}|{rcpt.lower()}".encode()).digest()
    return tuple((n >> 11) * _UNIT for n in struct.unpack("<8Q", digest))


def draw_mix(mix: EventMix, u: tuple[float, ...]) -> tuple[str, ...]:
    """The events of a recipient whose own uniform numbers are ``u`` (one per decision, in order)."""
    out = ["deferred"] if u[0] < mix.deferred else []
    if u[1] < mix.bounce:
        return (*out, "bounce")
    if u[2] < mix.soft_bounce:
        return (*out, "soft_bounce")
    out.append("delivered")
    if u[3] < mix.open:
        out.append("open")
        if u[4] < mix.click:
            out.append("click")
    if u[5] < mix.complaint:
        out.append("complaint")
    if u[6] < mix.unsubscribe:
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
            events = draw_mix(self.mix, uniforms(self.seed, key, rcpt))
            simulator, source, detail = False, "mix", ""
        hit = next((e for e in events if suppresses(esp, e)), None)
        if hit is not None and not simulator:
            self.suppressions.add(esp, rcpt, hit)
        return Outcome(events, source, detail, None if simulator else hit)
