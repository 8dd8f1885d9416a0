"""Postmark: /email and /email/batch over HTTP (postmarker), Postmark webhooks, Postmark's limits and retry
schedule. api.py is its HTTP API, webhook.py its event webhook format, profile.yaml its published limits,
replies and latency (every number cited).
"""
