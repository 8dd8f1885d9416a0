"""The ESPs' HTTP APIs (SendGrid, SES v2, Mailgun, Postmark; Mailjet, Brevo, Elastic Email, SendPulse,
Mandrill), registered by name in ``API_REGISTRY``."""

from mailstorm.fake_esp.apis import (
    brevo,
    elasticemail,
    mailgun,
    mailjet,
    mandrill,
    postmark,
    sendgrid,
    sendpulse,
    ses,
)
from mailstorm.fake_esp.apis.base import API_REGISTRY, ApiMessage, BadRequest, EspApi, RateInfo, Submission

__all__ = [
    "API_REGISTRY",
    "ApiMessage",
    "BadRequest",
    "EspApi",
    "RateInfo",
    "Submission",
    "brevo",
    "elasticemail",
    "mailgun",
    "mailjet",
    "mandrill",
    "postmark",
    "sendgrid",
    "sendpulse",
    "ses",
]
