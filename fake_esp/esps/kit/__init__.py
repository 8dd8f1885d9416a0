"""Kit (formerly ConvertKit, API v4): a sizing profile only. A pipeline calls it to add a subscriber and
tag it (``POST /v4/subscribers``, ``POST /v4/tags/{id}/subscribers``), the tag starting a sequence or
automation that sends; it has no per-message send API, so the fake serves none. profile.yaml holds the
published limits for ``mailstorm sizing --esp-profile kit`` (every number cited).
"""
