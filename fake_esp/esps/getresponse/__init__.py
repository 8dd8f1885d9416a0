"""GetResponse (API v3): a sizing profile only. A pipeline calls it to add a contact (``POST /v3/contacts``,
starting an autoresponder or workflow) or, with the transactional add-on, to send one message
(``POST /v3/transactional-emails``); the fake serves neither. profile.yaml holds the published limits
for ``mailstorm sizing --esp-profile getresponse`` (every number cited).
"""
