"""The scenario's ``analytics:`` section: the receiver's URL and format filled in (the profile's format
when none is given), every misfit one error naming its field, and the probe's reading of JSON and
Prometheus counts, and the wait for the ESP's retries to settle."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mailstorm.errors import ConfigError, UserError
from mailstorm.fake_esp.webhooks.spec import WebhookSpec
from mailstorm.harness.analytics.spec import RECEIVER_PLACEHOLDER, AnalyticsProbeSpec, AnalyticsSpec
from mailstorm.harness.analytics.watch import AnalyticsWatch, read_counts
from mailstorm.harness.reference.config import WEBHOOK_KEY_ENV
from mailstorm.harness.scenario import load_scenario_text
from mailstorm.ledger import EspWebhook
from mailstorm.runinfo import WebhookKeysInfo

BASE = """\
name: t
duration: 5s
load: {shape: {kind: steady, rate: 5}}
"""


def test_receiver_target_fills_the_url_and_the_profiles_format():
    """The ESP posts to the target in its profile's format; the placeholder is replaced at start."""
    sc = load_scenario_text(BASE + "esp: {profile: mailgun, webhooks: {}}\nanalytics: {receiver: target}\n")
    hooks = sc.esp.webhooks
    assert hooks.url == RECEIVER_PLACEHOLDER and hooks.format == "mailgun"
    assert load_scenario_text(BASE + "esp: {webhooks: {format: sendgrid}}\nanalytics: {receiver: target}\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("esp: {profile: mailgun}\nanalytics: {receiver: target}\n", r"esp\.webhooks: analytics\.receiver"),
        ("esp: {profile: ses, webhooks: {url: 'http://127.0.0.1:9/x'}}\nanalytics: {receiver: target}\n",
         r"esp\.webhooks\.url: leave it out"),
        ("esp: {webhooks: {}}\nanalytics: {receiver: target}\n", r"esp\.webhooks\.format: set it"),
        ("analytics: {probe: {format: prometheus}}\n", r"analytics\.probe.*needs metric"),
        ("analytics: {probe: {url: 'ftp://x'}}\n", r"analytics\.probe\.url"),
        ("esp: {profile: mailgun, webhooks: {}}\nanalytics: {receiver: target}\n"
         "chaos: [{at: 1s, for: 1s, network: {type: latency, ms: 10}}]\n", r"receiver: target cannot"),
    ],
)  # fmt: skip
def test_misfits_are_one_error_naming_the_field(text, message):
    with pytest.raises(ConfigError, match=message):
        load_scenario_text(BASE + text)


def test_the_probe_reads_json_and_prometheus_counts():
    """JSON: an object of counts (at a dotted path); Prometheus: a counter's samples summed per label."""
    assert read_counts(AnalyticsProbeSpec(), b'{"open": 3, "click": 1}') == {"open": 3.0, "click": 1.0}
    nested = AnalyticsProbeSpec.model_validate({"json": "stats.events"})
    assert read_counts(nested, b'{"stats": {"events": {"open": 2}}}') == {"open": 2.0}
    with pytest.raises(TypeError):
        read_counts(AnalyticsProbeSpec(), b'{"open": "many"}')
    prom = AnalyticsProbeSpec(format="prometheus", metric="hooks", label="kind")
    text = (
        b'# TYPE hooks counter\nhooks_total{kind="open",shard="a"} 2\nhooks_total{kind="open",shard="b"} 3\n'
    )
    assert read_counts(prom, text + b'hooks_total{kind="click",shard="a"} 1\nother_total 9\n') == {
        "open": 5.0,
        "click": 1.0,
    }


def _hook(eid: str, *, final: bool, attempt: int = 1) -> EspWebhook:
    return EspWebhook(
        api="mailgun", event="open", id=None, esp_id="e", rcpt="a@x.test", event_id=eid, url="http://x/",
        status=200 if final else None, attempt=attempt, fault=None, copy=0, final=final, ok=final, error=None,
    )  # fmt: skip


def test_the_watch_settles_once_every_event_is_final_and_the_quiet_time_passed():
    """An event with a failed post keeps the run waiting until its final answer; then the quiet time
    (one second plus what the webhook faults hold an event back) must pass without a post."""
    hooks = WebhookSpec(url="http://127.0.0.1:9/", faults={"delay_ms": 200, "jitter_ms": 300})
    watch = AnalyticsWatch(AnalyticsSpec(receiver="target"), hooks)
    assert watch.target_env(None) == {WEBHOOK_KEY_ENV: hooks.signing_key}
    # SendGrid's posts are checked with the run's verification key (run.json webhook_keys), not a secret.
    sendgrid = AnalyticsWatch(
        AnalyticsSpec(receiver="target"), hooks.model_copy(update={"format": "sendgrid"})
    )
    keys = WebhookKeysInfo(keys_file="k.json", sendgrid_public_key="PUBLIC")
    assert sendgrid.target_env(keys) == {WEBHOOK_KEY_ENV: "PUBLIC"}
    watch.feed([_hook("a", final=False), _hook("b", final=True)])
    assert not watch.settled()
    watch.feed([_hook("a", final=True, attempt=2)])
    assert not watch.settled()  # the quiet time (1.5 s here) has not passed
    watch._last_post -= 1.6
    assert watch.settled()
    assert AnalyticsWatch(None, None).wire(object(), "mailgun") is None
    with pytest.raises(UserError, match="receives no webhooks"):
        watch.wire(object(), "mailgun")


def test_a_remote_probe_url_is_refused_before_anything_starts(tmp_path):
    """The loopback guard names the analytics probe's field and line (mailstorm validate: exit 2)."""
    path = tmp_path / "remote.yaml"
    path.write_text(BASE + 'analytics: {probe: {url: "http://10.1.2.3:9/analytics"}}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "mailstorm.cli", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and f"{path}:4: analytics.probe.url:" in proc.stderr
