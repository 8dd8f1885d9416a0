"""Event webhooks the fake ESP posts back to the sender's pipeline, in each ESP's own format.

``formats`` (the canonical ``Event``, ``WebhookFormat`` and the ``WEBHOOK_FORMATS`` registry; each ESP's
format is the ``webhook.py`` of its home in mailstorm.fake_esp.esps; ``read_events`` for receivers),
``spec`` (WebhookSpec, light: imported by mailstorm.fake_esp.spec), ``poster`` (WebhookPoster, the
aiohttp client side: import it from ``mailstorm.fake_esp.webhooks.poster``, so the CLI and the spec do
not pull in the network stack).
"""

from mailstorm.fake_esp.webhooks.formats import EVENTS, WEBHOOK_FORMATS, Event, read_events, render

__all__ = ["EVENTS", "WEBHOOK_FORMATS", "Event", "read_events", "render"]
