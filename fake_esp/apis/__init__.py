"""The ESPs' HTTP APIs (SendGrid, SES v2, Mailgun, Postmark), registered by name in ``API_REGISTRY``."""

from fake_esp.apis import mailgun, postmark, sendgrid, ses
from fake_esp.apis.base import API_REGISTRY, ApiMessage, BadRequest, EspApi, RateInfo, Submission

__all__ = [
    "API_REGISTRY",
    "ApiMessage",
    "BadRequest",
    "EspApi",
    "RateInfo",
    "Submission",
    "mailgun",
    "postmark",
    "sendgrid",
    "ses",
]
