"""SparkPost: /api/v1/transmissions over HTTP (the sparkpost SDK, anymail), SparkPost's batched event
webhooks, SparkPost's limits. api.py is its HTTP API, webhook.py its event webhook format, profile.yaml
its published limits, replies and latency (every number cited).
"""
