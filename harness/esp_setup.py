"""How a run's ``esp:`` section becomes a fake ESP process, the paths the chaos proxy fronts, and the ESP
limits the sizing report reads.

Pure translation from the scenario to ``mailstorm.fake_esp.launch.EspProcess`` arguments (the run starts,
crashes and restarts the process itself) and to the chaos proxy's paths; kept apart so the run lifecycle
holds no ESP option plumbing.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.fake_esp.profiles import load_profile
from mailstorm.harness.analytics.spec import RECEIVER_PLACEHOLDER
from mailstorm.harness.scenario import EspSection
from mailstorm.harness.targets.base import EspSecurity
from mailstorm.runinfo import EspLimits, WebhookKeysInfo


def ca_path(run_dir: Path, name: str | None = None) -> Path:
    """Where a run's fake ESP writes its CA certificate (``<run>/esp/ca.pem``), or the ESP named ``name``
    of several (``<run>/esp/<name>/ca.pem``; ``<run>/esp/ca.pem`` is then their bundle)."""
    return run_dir / "esp" / (name or "") / "ca.pem"


def esp_security(esp: EspSection, run_dir: Path) -> EspSecurity:
    """What the run's ESP requires of the SUT (its targets configure the SUT with it)."""
    return EspSecurity(
        tls=esp.tls,
        ca=ca_path(run_dir) if esp.tls_on else None,
        require_tls=esp.require_tls,
        hostname=esp.hostname,
        credentials=tuple((c.user, c.password) for c in esp.auth),
    )


def esp_process(
    esp: EspSection,
    *,
    seed: int,
    run_dir: Path,
    ledger_dir: Path,
    log_path: Path,
    ports: tuple[int | None, int | None, int | None],
    webhook_url: str | None = None,
    ca: Path | None = None,
    host: str = "127.0.0.1",
) -> EspProcess:
    """A (not yet started) fake ESP for ``esp`` on ``ports`` (smtp, http, control; None: free), seeded
    with ``seed`` (the run derives it for the ESP); ``webhook_url`` is where the webhooks are posted
    instead of their URL (the chaos proxy's, when it fronts the webhook path: ``via``); ``ca`` is where
    it writes its CA (default ``ca_path(run_dir)``); ``host``: where it is reached (a fleet host's own
    address)."""
    smtp_port, http_port, control_port = ports
    return EspProcess(
        ledger_dir,
        seed=seed,
        smtp_port=smtp_port,
        http_port=http_port,
        control_port=control_port,
        faults=[f.model_dump(mode="json", exclude_none=True) for f in esp.faults],
        profile=esp.profile,
        processes=esp.processes,
        log_path=log_path,
        token=esp.token,
        max_message_size=esp.max_message_size,
        store_bodies=esp.store_bodies,
        extra_args=_extra_args(esp, run_dir, webhook_url),
        tls=esp.tls,
        require_tls=esp.require_tls,
        tls_ca=ca or ca_path(run_dir),
        auth=[f"{c.user}:{c.password}" for c in esp.auth],
        host=host,
    )


def proxy_paths(esp: EspSection, smtp_port: int, http_port: int | None) -> dict[str, tuple[str, int]]:
    """What the chaos proxy fronts: every path between the SUT and the ESP, both ways. ``smtp`` and
    ``http`` (when served) lead to the ESP's listeners; ``webhooks`` (when configured) to the SUT's
    receiver, the ESP posting to the proxy instead (``proxied_url``)."""
    paths = {"smtp": ("127.0.0.1", smtp_port)}
    if http_port is not None:
        paths["http"] = ("127.0.0.1", http_port)
    if esp.webhooks is not None:
        parts = urlsplit(esp.webhooks.url)
        paths["webhooks"] = (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    return paths


def proxied_url(url: str, address: tuple[str, int]) -> str:
    """``url`` with its host and port replaced by ``address`` (the proxy's listener for it)."""
    return urlunsplit(urlsplit(url)._replace(netloc=f"{address[0]}:{address[1]}"))


def _extra_args(esp: EspSection, run_dir: Path, webhook_url: str | None) -> list[str]:
    """The ESP options EspProcess has no keyword for, as its command line takes them."""
    args = ["--bind", esp.bind, "--correlation-header", esp.correlation_header, "--hostname", esp.hostname]
    args += ["--correlation", esp.correlation, "--keep-messages", str(esp.keep_messages)]
    if esp.name:
        args += ["--name", esp.name]
    if esp.rate is not None:
        args += ["--rate", f"{esp.rate:g}"]
    for flag, path in (("--tls-cert", esp.tls_cert), ("--tls-key", esp.tls_key)):
        if path is not None:
            args += [flag, str(path)]
    if esp.webhooks is not None:
        path = run_dir / "esp-webhooks.yaml"
        hooks = esp.webhooks.model_dump(mode="json")
        if webhook_url and hooks["url"] == RECEIVER_PLACEHOLDER:  # analytics.receiver: target
            hooks["url"] = webhook_url
        elif webhook_url:  # posted through the proxy; signed and recorded as the URL the scenario gave
            hooks["via"] = webhook_url
        hooks["keys_file"] = str(esp.webhooks.keys_file or webhook_keys_path(run_dir))
        path.write_text(yaml.safe_dump(hooks, sort_keys=False))
        args += ["--webhooks", str(path)]
    return args


def webhook_keys_path(run_dir: Path) -> Path:
    """Where a run keeps its webhook keys (``<run>/esp/webhook-keys.json``), shared by its ESPs."""
    return run_dir / "esp" / "webhook-keys.json"


def webhook_keys(fleet: tuple[EspSection, ...], run_dir: Path) -> WebhookKeysInfo | None:
    """The run's webhook keys, made before any ESP starts (each loads the file), for run.json; None when
    no ESP posts webhooks. A configured SendGrid key (the first ESP's that has one) is the run's."""
    hooks = [e.webhooks for e in fleet if e.webhooks is not None]
    if not hooks:
        return None
    from mailstorm.fake_esp.webhooks.signing import load_or_make

    path = hooks[0].keys_file or webhook_keys_path(run_dir)
    keys = load_or_make(path, next((h.sendgrid_key for h in hooks if h.sendgrid_key), None))
    return WebhookKeysInfo(keys_file=str(path), sendgrid_public_key=keys.sendgrid_public)


def esp_limits(esp: EspSection) -> EspLimits | None:
    """The ESP profile's limits (with the scenario's rate), for the sizing report; None without either."""
    if esp.profile is None and esp.rate is None:
        return None
    limits = load_profile(esp.profile or "generic-smtp").limits.model_dump(mode="json")
    if esp.rate is not None:
        limits["rate"] = esp.rate
    return EspLimits.model_validate(limits)
