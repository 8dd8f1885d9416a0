"""Mailchimp Transactional (Mandrill): messages/send over HTTP (mailchimp-transactional), message event
webhooks, Mandrill's limits. api.py is its HTTP API, webhook.py its event webhook format, profile.yaml
its published limits, replies and latency (every number cited).
"""
