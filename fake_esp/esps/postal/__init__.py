"""Postal (self-hosted): /api/v1/send/message and /api/v1/send/raw over HTTP (anymail), Postal's
RSA-signed webhooks. api.py is its HTTP API, webhook.py its event webhook format, profile.yaml its
limits, replies and latency (every number cited).
"""
