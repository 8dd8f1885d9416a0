"""Mailgun: the messages API over HTTP (form fields or MIME; the mailgun SDK), signed webhooks, Mailgun's
limits and retry schedule. api.py is its HTTP API, webhook.py its event webhook format, profile.yaml its
published limits, replies and latency (every number cited).
"""
