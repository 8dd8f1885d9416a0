"""Constant Contact (V3 API): a sizing profile only. A pipeline calls it to add or update a contact
(``POST /v3/contacts/sign_up_form``), whose list membership starts an automation that sends; it has no
per-message send API, so the fake serves none. profile.yaml holds the published limits for
``mailstorm sizing --esp-profile constantcontact`` (every number cited).
"""
