"""Resend: /emails and /emails/batch over HTTP (the resend SDK, anymail), Resend's Svix-signed webhooks,
Resend's limits. api.py is its HTTP API, webhook.py its event webhook format, profile.yaml its published
limits, replies and latency (every number cited).
"""
