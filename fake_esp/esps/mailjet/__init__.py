"""Mailjet: Send API v3.1 over HTTP (mailjet-rest), the Event API, Mailjet's limits. api.py is its HTTP API,
webhook.py its event webhook format, profile.yaml its published limits, replies and latency (every number
cited).
"""
