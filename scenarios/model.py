"""The load spec: what the load side sends, how fast, over what, from how many processes.

``LoadSpec`` is the ``load:`` section of a scenario file, parsed once at the edge (pydantic v2, frozen,
extra fields rejected). It is also what the launcher hands to every Locust process (as JSON), so a
remote worker gets the same spec as the local ones. Shapes live in ``mailstorm.scenarios.shapes``.

This module must stay free of gevent/locust imports: the runner imports it.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import jinja2
from jinja2 import meta as jinja2meta
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from mailstorm.correlation import Correlation
from mailstorm.scenarios.shapes import Closed, Shape, Steady


class _Frozen(BaseModel):
    # No NaN or infinity in a load (a size, a wait, a lag of 1e999 is a mistake, not a setting).
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class MessageClass(_Frozen):
    """One kind of message in the mix, picked with probability proportional to ``weight``."""

    name: str = "text"
    weight: PositiveFloat = 1.0
    # Approximate size of the whole message as sent (headers + MIME body), e.g. 2KB, 30KB, 500KB.
    size: ByteSize = ByteSize(2048)
    html: bool = False  # multipart/alternative with an HTML part (else text/plain only)
    attachment: bool = False  # a base64 attachment that makes up most of ``size``
    # Recipients per message: a fixed number, or [min, max] drawn uniformly.
    recipients: PositiveInt | tuple[PositiveInt, PositiveInt] = 1

    @model_validator(mode="after")
    def _check(self) -> MessageClass:
        if isinstance(self.recipients, tuple) and self.recipients[0] > self.recipients[1]:
            raise ValueError(f"recipients: min {self.recipients[0]} is above max {self.recipients[1]}")
        if self.size < 256:
            raise ValueError(f"size: {int(self.size)} bytes is too small for a message with headers (>= 256)")
        return self


class SmtpAuth(_Frozen):
    user: str
    password: str
    # AUTH PLAIN/LOGIN over a plain connection is refused by smtplib-minded servers; say so explicitly.
    allow_plaintext: bool = False


class SmtpOptions(_Frozen):
    """How the SMTP user talks to the SUT."""

    helo: str = "loadgen.mailstorm.test"
    starttls: bool = False
    auth: SmtpAuth | None = None


class HttpOptions(_Frozen):
    """How the HTTP user talks to the SUT (or, with ``api`` set, to the fake ESP's API directly).

    ``api`` picks a ready request shape (path, auth header, body) of that ESP; ``custom`` uses
    ``path`` + ``headers`` + ``body_template`` (a Jinja2 template; variables: id, message_id, sender,
    recipients, subject, text, html, raw, raw_b64).
    """

    api: Literal["custom", "sendgrid", "ses", "mailgun", "postmark"] = "custom"
    path: str = ""  # appended to the endpoint URL; the api presets bring their own
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body_template: str | None = None
    content_type: str = "application/json"
    api_key: str = "mailstorm-test-key"  # sent the way ``api`` expects (Bearer, token header, basic)
    domain: str = "mg.example.com"  # Mailgun's URL carries the sending domain

    TEMPLATE_VARIABLES: ClassVar[frozenset[str]] = frozenset(
        {"id", "message_id", "sender", "recipients", "subject", "text", "html", "raw", "raw_b64"}
    )

    @model_validator(mode="after")
    def _check(self) -> HttpOptions:
        if self.api == "custom" and self.body_template is None:
            raise ValueError("http.body_template is required when http.api is 'custom'")
        if self.body_template is not None:
            # Compile once here so a template error names itself at validation, not per message.
            env = jinja2.Environment(autoescape=False)
            try:
                unknown = jinja2meta.find_undeclared_variables(env.parse(self.body_template))
            except jinja2.TemplateSyntaxError as exc:
                raise ValueError(f"http.body_template line {exc.lineno}: {exc.message}") from None
            unknown -= self.TEMPLATE_VARIABLES
            if unknown:
                raise ValueError(
                    f"http.body_template uses unknown variable(s) {sorted(unknown)}; "
                    f"known: {sorted(self.TEMPLATE_VARIABLES)}"
                )
        return self


class LoadSpec(_Frozen):
    """The ``load:`` section of a scenario."""

    protocol: Literal["smtp", "http"] = "smtp"
    shape: Shape = Steady(rate=10)
    duration_s: PositiveFloat = 60.0
    # Uniform: evenly spaced arrivals (exact rate). Poisson: random gaps with the same mean (seeded).
    arrivals: Literal["uniform", "poisson"] = "uniform"
    messages: tuple[MessageClass, ...] = Field(default=(MessageClass(),), min_length=1)
    sender_domain: str = "shop.example.com"
    recipient_domain: str = "example.net"
    msgs_per_connection: PositiveInt = 100
    # Open model: the most connections (SMTP sessions / HTTP requests in flight) the whole run may hold;
    # shared out between the load processes. Arrivals wait for a free one, up to max_lag_s.
    max_connections: PositiveInt = 100
    # An arrival that cannot start within this many seconds of its intended time is dropped and counted
    # (load.dropped), like k6's dropped_iterations, instead of silently sliding the schedule.
    max_lag_s: PositiveFloat = 1.0
    # Per SMTP command / HTTP request; also how long in-flight submissions may finish after the end.
    timeout_s: PositiveFloat = 30.0
    # Load processes on this machine: 1 = one standalone Locust process; N > 1 = master + N workers.
    workers: PositiveInt = 1
    # Extra workers the master waits for, started elsewhere with `mailstorm worker --master HOST`.
    remote_workers: NonNegativeInt = 0
    master_bind: str = "127.0.0.1"  # where the master listens for workers (non-loopback: allow_remote)
    master_port: int | None = Field(default=None, ge=1, le=65535)  # None: a free port
    smtp: SmtpOptions = SmtpOptions()
    http: HttpOptions | None = None
    # Where each message carries its id besides the X-Mailstorm-Id header (mailstorm.correlation):
    # "recipient" (local+<id>@domain) or "body" (a [mailstorm:<id>] token) survive pipelines that
    # rebuild headers; the fake ESP reads the carrier named here.
    correlation: Correlation = "header"

    @model_validator(mode="after")
    def _check(self) -> LoadSpec:
        if self.protocol == "http" and self.http is None:
            raise ValueError("load.http is required when load.protocol is 'http'")
        if self.protocol == "smtp" and self.http is not None:
            raise ValueError("load.http is set but load.protocol is 'smtp'")
        if self.smtp.auth is not None and not (self.smtp.starttls or self.smtp.auth.allow_plaintext):
            raise ValueError("load.smtp.auth needs load.smtp.starttls (or auth.allow_plaintext: true)")
        return self

    @property
    def processes(self) -> int:
        """Locust processes that generate load (local workers plus remote ones)."""
        return self.workers + self.remote_workers

    @property
    def distributed(self) -> bool:
        return self.workers > 1 or self.remote_workers > 0

    @property
    def closed(self) -> bool:
        return isinstance(self.shape, Closed)
