"""The ``smtp`` and ``http`` targets: a system under test that already runs somewhere mailstorm does not
manage, given as one or more endpoints (the load round-robins over them, so a run can measure 1, 2 or N
instances behind it).

``start`` starts nothing: it checks that every address is loopback (unless the run allows remote hosts)
and that every endpoint answers, and fails with one line naming the endpoint that does not. For SMTP
"answers" means a 220 greeting and an EHLO, plus STARTTLS and AUTH when the spec asks for them, so a
wrong port or wrong credentials fail before the load starts instead of as a run full of rejections.
``stop`` has nothing to leave behind.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mailstorm.errors import UserError
from mailstorm.harness.targets.base import Address, Endpoint, TargetContext, register
from mailstorm.netguard import check_address


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SmtpAuthSpec(_Frozen):
    user: str = Field(min_length=1)
    password: str


def _split_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (port 1-65535)")
    return host, int(port)


class SmtpTargetSpec(_Frozen):
    """An SMTP service under test: ``endpoints`` are ``host:port`` strings."""

    kind: Literal["smtp"] = "smtp"
    endpoints: tuple[str, ...] = Field(min_length=1, description="HOST:PORT of each instance")
    starttls: bool = Field(
        False, description="the SUT must offer STARTTLS (checked at start; the load uses it)"
    )
    auth: SmtpAuthSpec | None = Field(
        None, description="credentials the SUT must accept (checked at start; the load logs in with them)"
    )
    connect_timeout_s: float = Field(5.0, gt=0)

    @field_validator("endpoints")
    @classmethod
    def _parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            _split_hostport(item)
        return value

    def addresses(self) -> list[tuple[str, int]]:
        return [_split_hostport(e) for e in self.endpoints]


class HttpTargetSpec(_Frozen):
    """An HTTP service under test: ``endpoints`` are full URLs (the load posts to each in turn).

    The request itself (body template, headers, API shape) is the load's: ``load.http``."""

    kind: Literal["http"] = "http"
    endpoints: tuple[str, ...] = Field(min_length=1, description="http(s)://HOST:PORT/PATH of each instance")
    connect_timeout_s: float = Field(5.0, gt=0)

    @field_validator("endpoints")
    @classmethod
    def _parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{url!r} is not an http(s)://HOST[:PORT]/PATH URL")
            try:
                parts.port  # noqa: B018  (raises on a bad port)
            except ValueError:
                raise ValueError(f"{url!r} has a bad port") from None
        return value


def _unreachable(index: int, where: str, why: object) -> UserError:
    return UserError(f"target.endpoints[{index}] {where} is not reachable: {why}")


@register
class SmtpTarget:
    """Endpoints of an SMTP SUT that runs on its own."""

    spec_model = SmtpTargetSpec

    def __init__(self, spec: SmtpTargetSpec) -> None:
        self.spec = spec

    def addresses(self) -> list[Address]:
        return [Address(host, ("endpoints", i)) for i, (host, _) in enumerate(self.spec.addresses())]

    def start(self, ctx: TargetContext) -> list[Endpoint]:
        addresses = self.spec.addresses()
        for i, (host, _) in enumerate(addresses):
            check_address(host, allow_remote=ctx.allow_remote, what=f"target.endpoints[{i}]")
        for i, (host, port) in enumerate(addresses):
            self._check(i, host, port)
        return [Endpoint("smtp", host, port) for host, port in addresses]

    def _check(self, index: int, host: str, port: int) -> None:
        where = f"{host}:{port}"
        try:
            with smtplib.SMTP(host, port, timeout=self.spec.connect_timeout_s) as smtp:
                code, text = smtp.ehlo("mailstorm.check")
                if code != 250:
                    raise _unreachable(index, where, f"EHLO answered {code} {text.decode(errors='replace')}")
                if self.spec.starttls:
                    if not smtp.has_extn("starttls"):
                        raise UserError(f"target.endpoints[{index}] {where} does not offer STARTTLS")
                    # A SUT under test on loopback usually has a self-signed certificate: check the
                    # handshake works, not who signed it.
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    smtp.starttls(context=context)
                    smtp.ehlo("mailstorm.check")
                if self.spec.auth is not None:
                    smtp.login(self.spec.auth.user, self.spec.auth.password)
        except smtplib.SMTPAuthenticationError as exc:
            raise UserError(
                f"target.endpoints[{index}] {where} refused the credentials of user "
                f"{self.spec.auth.user!r}: {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise UserError(f"target.endpoints[{index}] {where} does not offer AUTH") from None
        except smtplib.SMTPConnectError as exc:
            raise _unreachable(index, where, f"greeting {exc.smtp_code} {exc.smtp_error!r}") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise _unreachable(
                index, where, exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            ) from None

    def stop(self) -> None:
        """Nothing was started."""


@register
class HttpTarget:
    """Endpoints of an HTTP SUT that runs on its own."""

    spec_model = HttpTargetSpec

    def __init__(self, spec: HttpTargetSpec) -> None:
        self.spec = spec

    def addresses(self) -> list[Address]:
        hosts = [urlsplit(url).hostname or "" for url in self.spec.endpoints]
        return [Address(host, ("endpoints", i)) for i, host in enumerate(hosts)]

    def start(self, ctx: TargetContext) -> list[Endpoint]:
        endpoints = []
        for i, url in enumerate(self.spec.endpoints):
            parts = urlsplit(url)
            check_address(parts.hostname, allow_remote=ctx.allow_remote, what=f"target.endpoints[{i}]")
            endpoints.append(
                Endpoint(
                    "http", parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), url=url
                )
            )
        for i, e in enumerate(endpoints):
            # A TCP connect only: a request would submit something, and the SUT's answer to an empty one
            # says nothing about its answer to a real one.
            try:
                socket.create_connection((e.host, e.port), timeout=self.spec.connect_timeout_s).close()
            except OSError as exc:
                raise _unreachable(i, e.url, exc.strerror or exc) from None
        return endpoints

    def stop(self) -> None:
        """Nothing was started."""
