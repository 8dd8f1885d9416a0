"""Brevo (formerly Sendinblue): transactional email over HTTP (brevo-python), transactional webhooks,
Brevo's limits and rate-limit headers. api.py is its HTTP API, webhook.py its event webhook format,
profile.yaml its published limits, replies and latency (every number cited).
"""

CUSTOM_HEADER = "X-Mailin-custom"  # brevo transactional-webhooks: "custom added header", echoed in events
