"""``run.json``: what the runner says about a run, typed once for its writer and its readers.

The runner (``mailstorm.harness.run``) writes it at the start of a run and again as the run goes (so a
reader, or a person, can follow a run in progress: ``status`` is ``running`` until the end), always
whole (written to a temporary file and renamed). The reports (``mailstorm.reports.analysis``) read it
back with ``load_run_info``. Every field has a default, so a run.json from an older mailstorm (or one a
person wrote for a run directory put together by hand) loads; keys this model does not know are ignored.
Fields not known yet are left out of the file, not written as null.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from mailstorm.errors import ConfigError

RUN_INFO = "run.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EspLimits(BaseModel):
    """The ESP profile's limits the run had (``mailstorm.fake_esp.profiles.Limits``, the scenario's
    ``esp.rate`` overriding the profile's), which the sizing report compares a target against. The
    profile's other limits (burst, connections...) are kept as they are, for a person reading run.json."""

    model_config = ConfigDict(extra="allow")

    rate: float | None = None
    """Messages per second the ESP accepts."""
    daily_quota: int | None = None
    """Messages per day."""
    source: str | None = None
    """Where the limits come from, when not the run's own profile (``ESP profile ses``)."""


class EspInfo(_Model):
    """Where the run's fake ESP listened, and its process."""

    name: str | None = None
    """Its name, in a run with several ESPs (``esps:``)."""
    smtp: str | None = None
    """``host:port`` of its SMTP listener."""
    http: str | None = None
    """Base URL of its HTTP APIs, when it had them."""
    control: str | None = None
    """Base URL of its control API."""
    pid: int | None = None
    """Its (first) process id; a restarted ESP's new one."""
    tls: str | None = None
    """Its TLS mode: ``off``, ``starttls`` or ``implicit`` (the HTTP APIs are https unless off)."""
    clock_offset_ms: float | None = None
    """A host of ``esp.hosts``: its clock minus the runner's, measured when it joined (the round trip of
    least time of several); known within half ``rtt_ms``."""
    rtt_ms: float | None = None
    """A host of ``esp.hosts``: the round trip of that measurement."""
    clock_shift_ms: float | None = None
    """A host of ``esp.hosts``: what the runner subtracted from its records' times (0 when the offset
    was within the measurement's uncertainty)."""
    clock_offset_end_ms: float | None = None
    """A host of ``esp.hosts``: its offset as last measured during the run (drift since the join)."""


class WebhookKeysInfo(_Model):
    """The keys the run's fake ESPs sign their webhooks with (mailstorm.fake_esp.webhooks.signing)."""

    keys_file: str | None = None
    """Where they are kept (``<run>/esp/webhook-keys.json``, mode 0600; private keys inside)."""
    sendgrid_public_key: str | None = None
    """SendGrid's Signed Event Webhook verification key, base64 DER as SendGrid shows it: what a
    receiver verifies ``X-Twilio-Email-Event-Webhook-Signature`` with."""


class RunInfo(_Model):
    """One run, as ``run.json`` says."""

    run_id: str | None = None
    """The run directory's name."""
    name: str | None = None
    """The scenario's name."""
    seed: int | None = None
    """The scenario's seed."""
    started_ns: int | None = None
    """When the runner started (ns since the epoch): the reports' zero when the ledger has no
    run.started."""
    duration_s: float | None = None
    """The load's planned duration."""
    drain_deadline_s: float | None = None
    """How long the drain could wait for the SUT to empty."""
    target: str | None = None
    """The target's kind (``reference``, ``smtp``, ``postfix``...)."""
    report: dict[str, Any] | None = None
    """The scenario's ``reports`` section (a ``mailstorm.reports.spec.ReportSpec``, validated there)."""
    esp_limits: EspLimits | None = None
    """The ESP's limits, for sizing; absent when the scenario named no profile and no rate. With several
    ESPs, the first's (the SUT's primary relay)."""
    esps_limits: dict[str, EspLimits | None] | None = None
    """Every ESP's limits by name, in the scenario's order, in a run with several (``esps:``); an ESP
    with no profile and no rate has none."""
    esp_ca: str | None = None
    """The CA certificate the fake ESP's TLS certificates are signed by (``<run>/esp/ca.pem``), the one
    file a SUT must trust; absent when the ESP's TLS is off."""
    webhook_keys: WebhookKeysInfo | None = None
    """The webhook signing keys, when an ESP posts webhooks."""
    status: str | None = None
    """``running`` until the run is over, then ``done``."""
    argv: list[str] = []
    """The command line."""
    host: str | None = None
    """The machine's name."""
    user: str | None = None
    """Who ran it."""
    python: str | None = None
    """The Python version."""
    pid: int | None = None
    """The runner's process id."""
    esp: EspInfo | None = None
    """The fake ESP, once started (the first, the SUT's primary relay, when there are several)."""
    esps: list[EspInfo] | None = None
    """Every ESP, in a run with several (``esps:``)."""
    join: dict[str, str] | None = None
    """A run whose ESP is served by ``esp.hosts``: ``url`` the hosts join (``mailstorm esp --join URL``)
    and ``token`` the run token every join request carries."""
    esp_hosts: list[EspInfo] | None = None
    """The fake ESPs that joined from ``esp.hosts``, in its order."""
    proxy: dict[str, str] | None = None
    """The chaos proxy's ``host:port`` per path it fronts (``smtp``, ``http``, ``webhooks``), when the
    scenario had network faults."""
    endpoints: list[str] | int | None = None
    """The SUT's endpoints the load was sent to (a count in a run directory put together by hand): how
    many instances shared the load, for sizing."""
    metrics: str | None = None
    """``host:port`` of the runner's live ``GET /metrics`` (Prometheus text), served while the run goes
    (mailstorm.harness.metrics)."""
    alerts: dict[str, str] | None = None
    """The scenario's ``alerts:``: the URL of mailstorm's webhook receiver (``receiver``), and of the
    Prometheus and Alertmanager it started (``prometheus``, ``alertmanager``)."""
    load_t0_ns: int | None = None
    """The load's zero (the intended time of its first arrival), once the load began."""
    ended_ns: int | None = None
    """When the run ended."""
    reason: str | None = None
    """How it ended (as run.ended says)."""
    outcomes: dict[str, int] = {}
    """The live count of every outcome at the end (the fate module's incremental form: the same rules as
    the reports, so these equal report.md's outcome table)."""
    action_failures: list[str] = []
    """Timeline actions that failed."""
    verdict: str | None = None
    """``pass`` or ``fail``; absent when the run did not complete."""
    exit_code: int | None = None
    """The runner's exit code."""

    @property
    def endpoint_count(self) -> int:
        """How many SUT instances shared the load (1 when not said)."""
        if isinstance(self.endpoints, list):
            return len(self.endpoints) or 1
        return self.endpoints or 1

    def write(self, run_dir: Path) -> None:
        """Write ``run_dir/run.json`` whole: a reader never sees half of one."""
        path = run_dir / RUN_INFO
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.model_dump_json(indent=2, exclude_none=True) + "\n")
        tmp.replace(path)


def load_run_info(run_dir: Path) -> RunInfo:
    """``run_dir/run.json`` (``RunInfo()`` when there is none); a broken one is a one-line ``ConfigError``."""
    path = run_dir / RUN_INFO
    if not path.exists():
        return RunInfo()
    try:
        return RunInfo.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            raise ConfigError(f"{path}: not valid JSON ({err['msg']})") from None
        if err["type"] == "model_type":
            raise ConfigError(f"{path}: expected a JSON object") from None
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: {where}: {err['msg']}") from None
