"""MailerSend: /v1/email and /v1/bulk-email over HTTP (the mailersend SDK, anymail), MailerSend's signed
activity webhooks, MailerSend's limits. api.py is its HTTP API, webhook.py its event webhook format,
profile.yaml its published limits, replies and latency (every number cited).
"""
