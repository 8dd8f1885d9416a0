"""Suppressions: each ESP's suppression list of one fake ESP (all its worker processes together).

A recipient whose outcome is an event its ESP suppresses after (``WebhookFormat.suppresses``: a hard
bounce and a spam complaint everywhere, an unsubscribe where the ESP suppresses on it) is added to that
ESP's list, with the event that put it there; a later send to it gets the ESP's dropped answer
(mailstorm.fake_esp.webhooks.outcomes; the HTTP API's refusal where the ESP refuses at send:
``EspApi.suppressed``). The lists are per ESP (a bounce at SendGrid does not suppress at Mailgun) and,
with ``--processes N``, held in the workers' shared memory (mailstorm.fake_esp.shared): a recipient
suppressed by one worker is suppressed for all. That table is bounded (``SLOTS``): past it, the oldest
entries of a probe run are forgotten, as a fault's state is. One process keeps a plain dict.
"""

from __future__ import annotations

from mailstorm.fake_esp.shared import SharedState
from mailstorm.fake_esp.webhooks.formats import SUPPRESSED_FOR


class Suppressions:
    """``add(esp, rcpt, why)`` and ``why(esp, rcpt)`` (None when not suppressed); addresses compare
    without case."""

    def __init__(self, shared: SharedState | None = None) -> None:
        self._shared = shared
        self._map = shared.view(("mailstorm.suppressions",)) if shared is not None else None
        self._local: dict[tuple[str, str], str] = {}

    def add(self, esp: str, rcpt: str, why: str) -> None:
        key = (esp, rcpt.lower())
        if self._shared is None or self._map is None:
            self._local.setdefault(key, why)
            return
        with self._shared.lock:
            if self._map.get(key) is None:
                self._map[key] = SUPPRESSED_FOR.index(why) + 1

    def why(self, esp: str, rcpt: str) -> str | None:
        key = (esp, rcpt.lower())
        if self._shared is None or self._map is None:
            return self._local.get(key)
        with self._shared.lock:
            code = self._map.get(key)
        return SUPPRESSED_FOR[int(code) - 1] if code else None
