"""HubSpot: the marketing platform's transactional single-send API, faked for its rate limits (a
pipeline calls it to send; under a spike it fails by its 10-second window). api.py is its HTTP API,
profile.yaml its published limits; it posts no webhooks (HubSpot reports sends through its own event
APIs, not per-message webhooks to the sender).
"""
