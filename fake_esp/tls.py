"""TLS for the fake ESP: the certificates made at start, the server contexts served with them, and the
TLS alert a failing handshake answers.

``make_material`` runs once per ESP, in the parent process before any worker is forked (so N workers
serve one certificate, as one ESP's hosts do): it makes a CA and, signed by it, three server
certificates -- the good one (the ESP's hostname, ``localhost``, ``127.0.0.1``, ``::1``), an expired one
(same names, valid for one day in 2020) and one for another host (``wrong-host.invalid``) -- so a client
that trusts the CA sees exactly the fault it is given ("certificate has expired", "hostname mismatch"),
never "unknown CA". The CA is written to ``--tls-ca`` (one setting for a client: ``cafile=``,
``REQUESTS_CA_BUNDLE``, ``smtp_tls_CAfile``). ``--tls-cert FILE`` (with ``--tls-key``) serves a
certificate of the user's own instead of the good one; the fault certificates still come from the CA.

trustme does the X.509 work (python-trio's library for exactly this: a CA and leaf certificates for
tests, on top of cryptography); keys are ECDSA P-256: the four certificates take ~10 ms, and an ECDSA
handshake costs the server less than an RSA one.

The material persists beside the CA (``.<ca name>.keys.json``, mode 0600): an ESP started again with
the same ``--tls-ca`` (a crash and restart on the timeline, a second ``mailstorm esp`` on one ledger)
serves the same certificates, so a SUT that loaded the CA file once still trusts it.

``contexts(material)`` builds a worker's ``ssl.SSLContext`` per certificate (TLS 1.2 at least, as the
ESPs require). The key touches the disk only inside ``load_cert_chain``: a 0700 temporary directory,
removed at once.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mailstorm.errors import UserError

WRONG_HOST = "wrong-host.invalid"  # RFC 2606: a name that is no one's
_EXPIRED_FROM = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)

# A TLS record (content type 21: alert; version 3.3) holding one fatal alert (level 2), description 40:
# handshake_failure (RFC 8446 6). What a server that shares no cipher or version with the client sends.
HANDSHAKE_FAILURE_ALERT = bytes((21, 3, 3, 0, 2, 2, 40))


@dataclass(frozen=True)
class KeyPair:
    """A certificate chain and its private key, PEM."""

    chain: bytes
    key: bytes


@dataclass(frozen=True)
class TlsMaterial:
    """What a fake ESP serves TLS with: the CA (PEM, and where it was written) and the three server
    certificates; ``own`` is the user's certificate file (and key file) when one was given."""

    ca_pem: bytes
    ca_path: Path
    good: KeyPair
    expired: KeyPair
    wrong_host: KeyPair
    own: tuple[Path, Path | None] | None = None


@dataclass(frozen=True)
class Contexts:
    """One worker's server contexts, one per certificate; ``https`` serves the good certificate to the
    HTTP APIs (a context of its own: its SNI callback carries the https handshake faults)."""

    good: ssl.SSLContext
    expired: ssl.SSLContext
    wrong_host: ssl.SSLContext
    https: ssl.SSLContext


def make_material(
    hostname: str, ca_path: Path, *, cert: Path | None = None, key: Path | None = None
) -> TlsMaterial:
    """Make the CA and the server certificates and write the CA to ``ca_path``; a path that cannot be
    written, or a ``cert``/``key`` file that cannot be loaded, is the user's to fix (UserError)."""
    if cert is not None:
        _load_own(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH), cert, key)  # fail now, in one line
    own = (cert, key) if cert is not None else None
    kept = _load_kept(Path(ca_path), hostname)
    if kept is not None:
        return TlsMaterial(kept[0], Path(ca_path), *kept[1:], own=own)

    import trustme  # only an ESP with TLS on pays for the import (~60 ms)

    ca = trustme.CA(organization_name="mailstorm fake ESP")
    names = [hostname, "localhost", "127.0.0.1", "::1"]
    good = ca.issue_cert(*names, common_name=hostname)
    expired = ca.issue_cert(
        *names,
        common_name=hostname,
        not_before=_EXPIRED_FROM,
        not_after=_EXPIRED_FROM + datetime.timedelta(days=1),
    )
    wrong = ca.issue_cert(WRONG_HOST, common_name=WRONG_HOST)
    material = TlsMaterial(
        ca_pem=ca.cert_pem.bytes(),
        ca_path=Path(ca_path),
        good=_pair(good),
        expired=_pair(expired),
        wrong_host=_pair(wrong),
        own=own,
    )
    write_ca(material)
    _keep(material, hostname)
    return material


def _kept_path(ca_path: Path) -> Path:
    return ca_path.with_name(f".{ca_path.name}.keys.json")


def _keep(material: TlsMaterial, hostname: str) -> None:
    """Save the server certificates and keys beside the CA (0600), for the next start on this CA."""
    named = {"good": material.good, "expired": material.expired, "wrong_host": material.wrong_host}
    pairs = {n: [_b64(p.chain), _b64(p.key)] for n, p in named.items()}
    path = _kept_path(material.ca_path)
    data = json.dumps({"hostname": hostname, "ca": material.ca_pem.decode(), **pairs}).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError:
        pass  # only a restart's continuity is lost: the next start makes a new CA


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _load_kept(ca_path: Path, hostname: str) -> tuple[bytes, KeyPair, KeyPair, KeyPair] | None:
    """The material kept beside ``ca_path`` when it is for this hostname and that CA file; else None."""
    try:
        data = json.loads(_kept_path(ca_path).read_bytes())
        ca_pem = ca_path.read_bytes()
        if data["hostname"] != hostname or data["ca"].encode() != ca_pem:
            return None
        pairs = [KeyPair(*(base64.b64decode(v) for v in data[n])) for n in ("good", "expired", "wrong_host")]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (ca_pem, *pairs)


def _pair(leaf) -> KeyPair:
    return KeyPair(b"".join(blob.bytes() for blob in leaf.cert_chain_pems), leaf.private_key_pem.bytes())


def write_ca(material: TlsMaterial) -> None:
    path = material.ca_path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(material.ca_pem)
        os.replace(tmp, path)  # a client reading it never sees half a certificate
    except OSError as exc:
        raise UserError(f"--tls-ca {path}: cannot write the CA certificate: {exc.strerror or exc}") from None


def contexts(material: TlsMaterial) -> Contexts:
    good, https = _server_context(), _server_context()
    for ctx in (good, https):
        if material.own is not None:
            _load_own(ctx, *material.own)
        else:
            _load(ctx, material.good)
    expired, wrong = _server_context(), _server_context()
    _load(expired, material.expired)
    _load(wrong, material.wrong_host)
    return Contexts(good, expired, wrong, https)


def _server_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _load(ctx: ssl.SSLContext, pair: KeyPair) -> None:
    with tempfile.TemporaryDirectory(prefix="mailstorm-tls-") as tmp:  # 0700: the key is ours alone
        chain, key = Path(tmp, "chain.pem"), Path(tmp, "key.pem")
        chain.write_bytes(pair.chain)
        key.write_bytes(pair.key)
        ctx.load_cert_chain(chain, key)


def _load_own(ctx: ssl.SSLContext, cert: Path, key: Path | None) -> None:
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path is not None and not Path(path).is_file():
            why = "no such file" if not Path(path).exists() else "not a file"
            raise UserError(f"{flag} {path}: {why}")
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        which = "--tls-cert" if key is None else "--tls-cert/--tls-key"
        raise UserError(f"{which} {cert}: not a PEM certificate with its private key ({exc})") from None


def describe(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The protocol version a session negotiated ("TLSv1.3"), for the ledger; None without TLS."""
    return ssl_object.version() if ssl_object is not None else None
