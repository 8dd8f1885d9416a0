"""The ``postfix`` target's main.cf: the settings that make a copy of the system's Postfix a throwaway
instance relaying everything to the fake ESP (no DNS, no chroot, one loopback listener, the spec's retry
timing), its relays (``relayhost``, and ``smtp_fallback_relay`` for the run's other ESPs) and the TLS and
SASL client settings towards them (see mailstorm.harness.targets.postfix's docstring for what each does)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mailstorm.errors import ConfigError
from mailstorm.harness.targets.base import TargetContext
from mailstorm.netguard import check_address

if TYPE_CHECKING:
    from mailstorm.harness.targets.postfix import PostfixSpec

LISTEN_HOST = "127.0.0.1"  # the instance's only listener (inet_interfaces)
# Settings of the throwaway instance that make it one (the rest comes from the spec).
_FIXED = {
    "myhostname": "sut.test",
    "mydestination": "",
    "inet_interfaces": LISTEN_HOST,
    "inet_protocols": "ipv4",
    "mynetworks": "127.0.0.0/8",
    "default_transport": "smtp",
    "relay_transport": "relay",
    "smtp_host_lookup": "native",
    "smtp_dns_support_level": "disabled",
    "disable_dns_lookups": "yes",
    "smtpd_relay_restrictions": "permit_mynetworks reject_unauth_destination",
    "alias_maps": "",
    "alias_database": "",
    "smtp_tls_security_level": "none",
    "smtpd_tls_security_level": "none",
}


def main_cf(
    spec: PostfixSpec,
    *,
    conf: Path,
    queue_dir: Path,
    data_dir: Path,
    maillog: Path,
    relayhost: tuple[str, int],
    ctx: TargetContext,
) -> dict[str, str]:
    """Every main.cf setting of the instance (the spec's ``main_cf`` last: the user's word wins)."""
    first = f"[{relayhost[0]}]:{relayhost[1]}"
    return {
        **_FIXED,
        # Logs each message's correlation id with its queue id (postfix_maillog reads it back).
        "header_checks": f"regexp:{conf / 'mailstorm_header_checks'}",
        "queue_directory": str(queue_dir),
        "data_directory": str(data_dir),
        "relayhost": first,
        "maillog_file": str(maillog),
        # maillog_file must start with one of these prefixes.
        "maillog_file_prefixes": f"/var, /dev/stdout, {maillog.parent}",
        "minimal_backoff_time": f"{spec.minimal_backoff_s}s",
        "maximal_backoff_time": f"{spec.maximal_backoff_s}s",
        "queue_run_delay": f"{spec.queue_run_delay_s}s",
        "smtp_connect_timeout": f"{spec.smtp_connect_timeout_s}s",
        "smtp_destination_concurrency_limit": str(spec.destination_concurrency),
        **_fallback(ctx),
        **_relay_security(spec, conf, [first, *_fallbacks(ctx)], ctx),
        **spec.main_cf,
    }


def _fallback(ctx: TargetContext) -> dict[str, str]:
    """Several ESPs: the others are ``smtp_fallback_relay``, tried in order within the same delivery
    when the relayhost fails with a non-permanent error (see the module docstring)."""
    fallbacks = _fallbacks(ctx)
    for host, _ in ctx.esp_relays[1:]:
        check_address(host, allow_remote=ctx.allow_remote, what="postfix smtp_fallback_relay")
    return {"smtp_fallback_relay": ", ".join(fallbacks)} if fallbacks else {}


def _relay_security(
    spec: PostfixSpec, conf: Path, relayhosts: list[str], ctx: TargetContext
) -> dict[str, str]:
    """main.cf settings for TLS and SASL towards the ESP (see mailstorm.harness.targets.postfix)."""
    esp = ctx.esp_security
    out: dict[str, str] = {}
    if spec.relay_tls != "none":
        out["smtp_tls_security_level"] = spec.relay_tls
        out["smtp_tls_loglevel"] = "1"  # "Trusted/Verified TLS connection established" in the maillog
        if esp.ca is not None:
            out["smtp_tls_CAfile"] = str(esp.ca)
        if spec.relay_tls in ("verify", "secure"):
            out["smtp_tls_verify_cert_match"] = esp.hostname  # [127.0.0.1] is no name to match
            out["smtp_tls_secure_cert_match"] = esp.hostname
        if esp.tls == "implicit" and spec.relay_tls != "may":
            out["smtp_tls_wrappermode"] = "yes"  # TLS from the first byte (port 465's "TLS wrapper")
    if spec.relay_auth is False:
        return out
    if spec.relay_auth is True:
        if esp.login is None:
            raise ConfigError("target postfix: relay_auth: true needs esp.auth (the ESP's credentials)")
        user, password = esp.login
    else:
        user, _, password = spec.relay_auth.partition(":")
    passwords = conf / "sasl_passwd"
    passwords.touch(mode=0o600)
    passwords.chmod(0o600)
    passwords.write_text("".join(f"{relayhost} {user}:{password}\n" for relayhost in relayhosts))
    out |= {
        "smtp_sasl_auth_enable": "yes",
        "smtp_sasl_password_maps": f"texthash:{passwords}",  # texthash: no postmap, read at start
        "smtp_sasl_security_options": "noanonymous",
        "smtp_sasl_tls_security_options": "noanonymous",
    }
    return out


def _fallbacks(ctx: TargetContext) -> list[str]:
    """The run's other ESPs, in order, as Postfix names a next hop (``[host]:port``: no MX lookup)."""
    return [f"[{host}]:{port}" for host, port in ctx.esp_relays[1:]]
