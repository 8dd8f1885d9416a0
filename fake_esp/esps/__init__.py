"""One home per ESP: ``esps/<name>/`` holds everything the fake ESP knows about that ESP.

    api.py        its HTTP API: an ``EspApi`` with ``@register`` (ESP_APIS, mailstorm.fake_esp.http.api)
    webhook.py    its event webhook format: a ``WebhookFormat`` with ``@register`` (WEBHOOK_FORMATS,
                  mailstorm.fake_esp.webhooks.formats)
    profile.yaml  its published limits, replies and latency, every number cited (PROFILES,
                  mailstorm.fake_esp.profiles)
    __init__.py   which ESP this is

The folder's name is the ESP's name everywhere: ``--profile sendgrid``, ``api: sendgrid`` in the
ledger, webhook format ``sendgrid`` (a profile writes ``_`` as ``-``: ``generic_smtp/`` is the
``generic-smtp`` profile, a plain SMTP relay with no HTTP API and no webhooks). The registries list the
homes of this package (every folder of its ``__path__``), so adding an ESP is adding a folder; each of
the three files is optional.
"""
