"""Django settings for the tests that use Django's mail backends (its SMTP backend, django-anymail's):
configured once per process, as a project's settings.py would, with nothing but mail in it."""

from __future__ import annotations


def configure() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["anymail"],
            DEFAULT_FROM_EMAIL="app@example.test",
            USE_TZ=True,
        )
        django.setup()
