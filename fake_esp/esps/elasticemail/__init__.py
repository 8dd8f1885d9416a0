"""Elastic Email: API v4 transactional send over HTTP (ElasticEmail), HTTP web notifications, Elastic
Email's limits. api.py is its HTTP API, webhook.py its event webhook format, profile.yaml its published
limits, replies and latency (every number cited).
"""
