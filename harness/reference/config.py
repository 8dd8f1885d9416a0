"""The reference pipeline's settings: parsed once from the command line into one frozen object."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailstorm.errors import TargetNotAllowed, UserError
from mailstorm.netguard import check_address, is_loopback

RELAY_AUTH_ENV = "MAILSTORM_RELAY_AUTH"  # USER:PASSWORD for the relay's AUTH, kept off the command line
WEBHOOK_KEY_ENV = "MAILSTORM_WEBHOOK_KEY"  # the webhooks' signing key, kept off the command line
# Peers allowed to relay through the pipeline unless told otherwise (Postfix's mynetworks idea).
DEFAULT_RELAY_NETWORKS = ("127.0.0.0/8", "::1/128")


def split_hostport(value: str, what: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` too); raise UserError naming ``what`` otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"{what} must be HOST:PORT, got {value!r}")
    return host, int(port)


class RelayTarget(BaseModel):
    """Where the pipeline relays to: the ESP's SMTP listener or its HTTP API base URL (http or https)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scheme: Literal["smtp", "http"]
    host: str
    port: int
    base_url: str | None = None  # http only: scheme://host:port[/prefix], no trailing slash

    @classmethod
    def parse(cls, url: str) -> RelayTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "http", "https") or not parts.hostname:
            raise UserError(f"--relay must be smtp://HOST:PORT or http(s)://HOST:PORT[/PATH], got {url!r}")
        try:
            port = parts.port or {"smtp": 25, "http": 80, "https": 443}[parts.scheme]
        except ValueError:
            raise UserError(f"--relay has a bad port: {url!r}") from None
        kind = "smtp" if parts.scheme == "smtp" else "http"
        base = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}" if kind == "http" else None
        return cls(scheme=kind, host=parts.hostname, port=port, base_url=base)

    def __str__(self) -> str:
        return self.base_url or f"smtp://{self.host}:{self.port}"


class PipelineConfig(BaseModel):
    """Everything one reference pipeline process needs; see ``python -m mailstorm.harness.reference
    --help``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    listen_host: str = "127.0.0.1"
    listen_port: int = Field(ge=0, le=65535)
    queue_path: Path
    relays: tuple[RelayTarget, ...] = Field(min_length=1)  # in failover order: the primary first
    ledger_dir: Path
    source: str = "sut"
    concurrency: int = Field(default=20, ge=1, le=2000)
    max_attempts: int = Field(default=25, ge=1)
    backoff_base_s: float = Field(default=0.2, gt=0)
    backoff_max_s: float = Field(default=5.0, gt=0)
    relay_timeout_s: float = Field(default=10.0, gt=0)
    http_port: int | None = Field(default=None, ge=0, le=65535)
    queue_interval_s: float = Field(default=1.0, gt=0)
    seed: int = 0
    allow_remote: bool = False
    relay_networks: tuple[str, ...] = DEFAULT_RELAY_NETWORKS
    api_key: str = "mailstorm-reference"
    max_message_size: int = Field(default=10 * 1024 * 1024, ge=1024)
    fsync: bool = False
    grace_s: float = Field(default=5.0, ge=0)
    # Failover (mailstorm.harness.reference.failover): to the next relay after this many consecutive
    # failed attempts through the active one; a trial message to the primary this often while failed over.
    failover_after: int = Field(default=3, ge=1)
    failback_probe_s: float = Field(default=2.0, gt=0)
    # Relaying to an ESP that requires TLS and AUTH, as production relays do: STARTTLS or implicit TLS
    # (https for the HTTP relay) trusting ``relay_ca`` (the system's CAs when None), and the login.
    relay_tls: Literal["off", "starttls", "implicit"] = "off"
    relay_ca: Path | None = None
    relay_auth: tuple[str, str] | None = Field(default=None, repr=False)
    # The ESP's webhook signing key: the receiver refuses a post whose signature it does not make
    # (mailstorm.harness.reference.signatures); None: signatures are not checked.
    webhook_key: str | None = Field(default=None, repr=False)

    @field_validator("relay_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"--relay-networks: {net!r} is not a network (CIDR)") from None
        return value

    @model_validator(mode="after")
    def _guard(self) -> PipelineConfig:
        # Never an open relay by accident: a non-loopback listener or relay host needs --allow-remote.
        if not is_loopback(self.listen_host) and not self.allow_remote:
            raise TargetNotAllowed(
                f"--listen {self.listen_host!r} is not a loopback address; the reference pipeline binds "
                "off loopback only with --allow-remote (and relays only for --relay-networks peers)"
            )
        for relay in self.relays:
            check_address(relay.host, allow_remote=self.allow_remote, what="--relay host")
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("--backoff-max must be >= --backoff-base")
        return self

    @property
    def relay(self) -> RelayTarget:
        """The primary relay."""
        return self.relays[0]

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.relay_networks]
