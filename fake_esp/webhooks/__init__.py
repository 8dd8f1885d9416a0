"""Event webhooks the fake ESP posts back to the sender's pipeline, in each ESP's own format.

``spec`` (WebhookSpec, light: imported by mailstorm.fake_esp.spec), ``formats`` (bodies per ESP, and
``read_events`` for receivers), ``poster`` (WebhookPoster, the aiohttp client side: import it from
``mailstorm.fake_esp.webhooks.poster``, so the CLI and the spec do not pull in the network stack).
"""

from mailstorm.fake_esp.webhooks.formats import EVENTS, FORMATS, Event, read_events, render
from mailstorm.fake_esp.webhooks.spec import WebhookSpec, parse_webhook_spec

__all__ = ["EVENTS", "FORMATS", "Event", "WebhookSpec", "parse_webhook_spec", "read_events", "render"]
