"""Who may send through the fake ESP: the credentials of ``--auth USER:PASSWORD`` (repeatable; scenario
``esp.auth``), checked at SMTP AUTH and on every HTTP API request, and the names the ledger records in
place of secrets.

Without credentials the ESP is open, as before: any AUTH succeeds, any API key is accepted. With them,
SMTP needs AUTH (PLAIN or LOGIN) before MAIL, and an HTTP request needs a known key:

    SMTP AUTH              login and password equal one credential's
    HTTP, a token          the token equals one credential's password: SendGrid (Bearer), Mailgun (Basic
                           api:KEY), Postmark (server token), Brevo (api-key), Elastic Email, Mandrill,
                           MailerSend, Resend, SparkPost, Postal (X-Server-API-Key), HubSpot, Klaviyo
    HTTP, an id + secret   id and secret equal one credential's user and password: Mailjet (Basic
                           public:private), SendPulse's /oauth/access_token (client_id, client_secret)
    HTTP, an id alone      the id equals one credential's user: SES (the SigV4 access key id; the fake
                           cannot check the signature, since the SES SMTP password is not the secret key
                           it was made from), SendPulse sends (the client id in a token the fake issued)

So one credential serves an ESP's SMTP and HTTP sides as the real ones pair them: SendGrid
``apikey:SG.xxx`` (the user is the literal string ``apikey``), SES ``AKIA...:<SMTP password>``, Mailjet
``<API key>:<secret key>``; an ESP whose API key differs from its SMTP password (Brevo) gets two.
Comparisons are constant-time (hmac.compare_digest).

The ledger never holds a password or a key: it records a credential's *name* -- its user, or, when
the user is itself the secret (Postmark's SMTP: the token is user and password), a fingerprint
``sha256:<12 hex>``. An open ESP records a fingerprint for a key that is a secret and the key id itself
for an id (SES access key id, Mailjet public key, SendPulse client id).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"  # one line of text: no CR, LF, NUL or other control characters


class Credential(BaseModel):
    """One ``USER:PASSWORD`` (a string, split at the first colon, or ``{user, password}``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str = Field(min_length=1, max_length=512, pattern=_PRINTABLE)
    password: str = Field(min_length=1, max_length=4096, pattern=_PRINTABLE, repr=False)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            user, sep, password = data.partition(":")
            if not sep:
                raise ValueError("expected USER:PASSWORD (a colon between them)")
            return {"user": user, "password": password}
        return data

    @property
    def name(self) -> str:
        """What the ledger records for this credential (never the password)."""
        return fingerprint(self.user) if self.user == self.password else self.user


def fingerprint(secret: str) -> str:
    """A name for a secret that does not reveal it: ``sha256:`` and 12 hex digits of its digest."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


class Credentials:
    """The ESP's credentials; ``required`` when there is at least one."""

    def __init__(self, creds: Iterable[Credential] = ()) -> None:
        self._creds = tuple(creds)

    @property
    def required(self) -> bool:
        return bool(self._creds)

    def smtp(self, login: str, password: str) -> tuple[bool, str]:
        """(accepted, the name to record) for an SMTP AUTH with ``login`` and ``password``."""
        if not self._creds:
            return True, fingerprint(login) if login == password else login
        for c in self._creds:
            # Every credential is compared (no early exit): the time taken does not tell which user exists.
            if _same(c.user, login) & _same(c.password, password):
                return True, c.name
        return False, fingerprint(login) if login == password else login

    def http(self, key: str | None, secret: str | None, *, key_is_secret: bool) -> tuple[bool, str | None]:
        """(accepted, the name to record) for an API request that presented ``key`` (and ``secret``: the
        second half of an id + secret pair); ``key_is_secret``: the key is itself the secret (a token)."""
        if key is None:
            return not self._creds, None
        if not self._creds:
            return True, fingerprint(key) if key_is_secret and secret is None else key
        for c in self._creds:
            if secret is not None:
                ok = _same(c.user, key) & _same(c.password, secret)
            elif key_is_secret:
                ok = _same(c.password, key)
            else:
                ok = _same(c.user, key)
            if ok:
                return True, c.name
        return False, fingerprint(key) if key_is_secret and secret is None else key


def parse_credential_text(text: str) -> Credential:
    """``USER:PASSWORD`` from a command line or the environment; ValueError (one line) otherwise."""
    from pydantic import ValidationError

    try:
        return Credential.model_validate(text)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise ValueError(f"{where}: {msg}" if where else msg) from None
