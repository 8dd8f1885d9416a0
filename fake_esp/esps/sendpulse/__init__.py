"""SendPulse: the SMTP service API over HTTP with OAuth client credentials (pysendpulse), SMTP webhooks,
SendPulse's limits. api.py is its HTTP API, webhook.py its event webhook format, profile.yaml its
published limits, replies and latency (every number cited).
"""
