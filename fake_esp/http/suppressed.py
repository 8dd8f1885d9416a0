"""What an ESP API does at send with recipients on its suppression list (mailstorm.fake_esp.webhooks.
suppression), for the ESPs that answer for them at send; the others accept the send and their webhook
poster posts the dropped events.

``at_send`` returns the submission to accept, or (the ESP refuses the whole send) why each recipient is
suppressed, for ``EspApi.suppressed`` to answer:

- ``EspApi.refuses_suppressed`` (Postmark, MailerSend): the suppressed recipients are taken out of each
  message (a message left with no one is not sent), SUPPRESSED names them for the success answer, and
  one esp.outcome (dropped, no events, no ESP id) is written per suppressed recipient; a one-message
  send whose every recipient is suppressed is refused;
- ``EspApi.answers_suppressed`` (Mandrill): SUPPRESSED names them; no one is taken out.
"""

from __future__ import annotations

from dataclasses import replace

from mailstorm.fake_esp.http.api import SUPPRESSED, EspApi, Submission
from mailstorm.fake_esp.webhooks.suppression import Suppressions
from mailstorm.ledger import EspOutcome, LedgerWriter


def at_send(
    api: EspApi, sub: Submission, lists: Suppressions, ledger: LedgerWriter
) -> Submission | dict[str, str]:
    """``sub`` as the ESP accepts it, or {recipient: why} when it refuses it whole (module docstring)."""
    if not (api.refuses_suppressed or api.answers_suppressed):
        return sub
    gone: list[dict[str, str]] = []
    for m in sub.messages:
        why = {r: lists.why(api.name, r) for r in m.rcpts}
        gone.append({r: w for r, w in why.items() if w is not None})
    if not any(gone):
        return sub
    named = replace(sub, extra={**sub.extra, SUPPRESSED: gone})
    if not api.refuses_suppressed:  # accepted as it is: the answer names them, the poster drops them
        return named
    for m, out in zip(sub.messages, gone, strict=True):
        for rcpt, why in out.items():
            ledger.write(
                EspOutcome(
                    api=api.name, id=m.id, esp_id=None, rcpt=rcpt, outcome="dropped", events=[], unposted=[],
                    source="suppressed", detail=why,
                )
            )  # fmt: skip
    if len(sub.messages) == 1 and len(gone[0]) == len(sub.messages[0].rcpts):
        return gone[0]
    messages = tuple(
        replace(m, rcpts=tuple(r for r in m.rcpts if r not in out))
        for m, out in zip(sub.messages, gone, strict=True)
    )
    return replace(named, messages=messages)
