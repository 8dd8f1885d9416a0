"""The fake ESP: SMTP server (aiosmtpd), HTTP APIs, fault engine, profiles, control API."""
