"""MailerLite (the marketing API at connect.mailerlite.com): a sizing profile only. A pipeline calls it to
upsert a subscriber into a group (``POST /api/subscribers``), the group starting an automation that
sends; its transactional sending is MailerSend (faked: ``esps/mailersend``). profile.yaml holds the
published limits for ``mailstorm sizing --esp-profile mailerlite`` (every number cited).
"""
