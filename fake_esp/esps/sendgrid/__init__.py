"""Twilio SendGrid: v3 Mail Send over HTTP (the sendgrid SDK), the Event Webhook (batched JSON arrays),
SendGrid's limits. api.py is its HTTP API, webhook.py its event webhook format, profile.yaml its
published limits, replies and latency (every number cited).
"""
