"""generic-smtp: a plain SMTP relay, the base when no ESP is named (``--rate`` alone). Only a profile
(profile.yaml: RFC 5321 replies, no published limits): no HTTP API and no webhook format.
"""
