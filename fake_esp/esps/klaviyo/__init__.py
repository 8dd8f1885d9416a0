"""Klaviyo: the marketing platform's Create Event API, faked for its rate limits (a pipeline calls it to
trigger a flow that sends; under a spike it fails by its burst and steady windows). api.py is its HTTP
API, profile.yaml its published limits; it posts no webhooks.
"""
