"""Every ledger record kind, declared once: its fields, their types, and what each one means.

This is the contract between the processes that act (the fake ESP, the load generator, the SUT or what
follows it, the runner) and the analysis that judges: each writer constructs one of these classes and
hands it to ``LedgerWriter.write``, and the readers (the reports' ingest, the live progress, the tests)
name fields through them. As Locust's ``Events`` catalogue documents each event where it is declared,
each field here carries its documentation under its declaration.

On disk (JSON Lines, one object a line) a record is its fields under the names declared here, with three
envelope keys that every record has: ``k`` (the kind, ``Kind``), ``t`` (UTC nanoseconds since the epoch,
stamped by the writer) and ``src`` (the source, i.e. the ledger file's name, stamped by the writer). A field
with a default is *optional*: it is left out of the line while it has its default value (as the writers
always did: an SMTP acceptance has no ``esp_id`` key at all), and a reader meets it absent in older lines.
A field without a default is always written, ``null`` included. Readers ignore keys they do not know, so a
newer writer never breaks an older report; ``Kind`` lists every kind, and a line of another kind is skipped.

The class name gives the kind (``EspAccepted`` is ``esp.accepted``); ``RECORDS`` maps each ``Kind`` to its
class, and an import-time check keeps the two complete. Records are ``msgspec.Struct`` classes: frozen,
keyword-only, encoded and decoded in C (measured in docs/benchmarks.md against dataclasses + orjson).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, ClassVar

import msgspec

CORRELATION_HEADER = "X-Mailstorm-Id"
"""The header that follows a message end to end (configurable); the Message-ID is the fallback, because
pipelines may rewrite the Message-ID."""
CAMPAIGN_HEADER = "X-Mailstorm-Campaign"
"""The header a campaign's messages carry (its id), when the SUT can add one: docs/campaigns.md."""
SHA_HEX_DIGITS = 32
"""How many hex digits of a body's sha256 an ``esp.accepted`` keeps (``EspAccepted.sha``): 128 bits. The
whole digest was a third of a message's compressed ledger bytes (32 random bytes that no compressor
shrinks: docs/benchmarks.md), and 128 bits tell bodies apart as well for any run's size."""


class Kind(StrEnum):
    """Every record kind; each is declared by the record class of the same name below."""

    ESP_ACCEPTED = "esp.accepted"
    ESP_REPLIED = "esp.replied"
    ESP_FAULT = "esp.fault"
    ESP_FAULT_ENDED = "esp.fault.ended"
    ESP_DELIVERED = "esp.delivered"
    ESP_WEBHOOK = "esp.webhook"
    ESP_OUTCOME = "esp.outcome"
    ESP_SUBSCRIPTION = "esp.subscription"
    LOAD_SUBMIT = "load.submit"
    LOAD_DROPPED = "load.dropped"
    LOAD_STARTED = "load.started"
    LOAD_FINISHED = "load.finished"
    SUT_ACCEPTED = "sut.accepted"
    SUT_RELAYED = "sut.relayed"
    SUT_DEFERRED = "sut.deferred"
    SUT_BOUNCED = "sut.bounced"
    SUT_QUEUE = "sut.queue"
    SUT_HELD = "sut.held"
    SUT_LISTED = "sut.listed"
    SUT_EVENT = "sut.event"
    PROXY_ACTED = "proxy.acted"
    PROXY_UPSTREAM_FAILED = "proxy.upstream.failed"
    RUN_STARTED = "run.started"
    RUN_PHASE = "run.phase"
    RUN_ENDED = "run.ended"
    RUN_ABORTED = "run.aborted"
    CHAOS_BEGIN = "chaos.begin"
    CHAOS_END = "chaos.end"
    PROBE = "probe"
    ANALYTICS_PROBE = "analytics.probe"
    ACTION = "action"
    POOL_MEMBER = "pool.member"
    POOL_SERVER = "pool.server"
    ALERT_FIRING = "alert.firing"
    ALERT_RESOLVED = "alert.resolved"
    CAMPAIGN_LIST = "campaign.list"
    CAMPAIGN_TRIGGER = "campaign.trigger"
    CAMPAIGN_ANSWER = "campaign.answer"


def _kind_of(class_name: str) -> str:
    """``EspAccepted`` -> ``esp.accepted``: the kind a record class declares, from its name."""
    return ".".join(word.lower() for word in re.findall(r"[A-Z][a-z0-9]*", class_name))


class Record(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, tag_field="k", tag=_kind_of):
    """What every record has. ``t`` and ``src`` are the writer's to stamp: a record a process constructs
    leaves them at their defaults, and ``LedgerWriter.write`` sets them on the line it writes."""

    kind: ClassVar[Kind]
    """The record's kind (the ``k`` key on disk)."""

    t: int = 0
    """When the record was made: UTC nanoseconds since the epoch (``time.time_ns()``)."""
    src: str = ""
    """The source that wrote it, which is also its ledger file's name: ``esp-smtp-0``, ``load-1``,
    ``sut``, ``postfix``, ``timeline``..."""


def key(field: Any) -> str:
    """The on-disk key of a declared field, named through its class (``key(LoadSubmit.intended)`` is
    ``"intended"``), so that a reader of a renamed field fails at import instead of reading nothing."""
    return field.__name__


def field_types(cls: type[Record]) -> dict[str, Any]:
    """Each declared field of ``cls`` (the envelope's ``t`` and ``src`` included) and its type."""
    return {f.name: f.type for f in msgspec.structs.fields(cls)}


# -- fake ESP --------------------------------------------------------------------------------------------


class EspAccepted(Record, kw_only=True):
    """A message the ESP kept, written before the acceptance leaves (SMTP: the 250 after the final ".";
    HTTP: the API's 2xx, one record per message of the request)."""

    id: str | None
    """The correlation id (``X-Mailstorm-Id``, else the Message-ID); null when the message had neither."""
    mid: str | None
    """The Message-ID, without angle brackets."""
    size: int
    """Bytes: of the message as received (HTTP: of the raw MIME when the API carries one, SES Raw or
    Mailgun ``messages.mime``, else of the request body)."""
    rcpts: int
    """How many recipients."""
    sha: str
    """The sha256 of the bytes ``size`` counts, hex, its first ``SHA_HEX_DIGITS`` (32) digits: compare
    with ``hashlib.sha256(body).hexdigest().startswith(sha)`` (lines written before 2026-11-30 carry all
    64 digits, which the same test reads). A ``--store-bodies`` ESP names the body's file by the whole
    digest, ``<sha256>.eml``: the one whose name starts with ``sha``. Two different bodies share these
    128 bits with a probability of about n^2 / 2^129 for n messages: 1e-23 for a day at 1,000 msg/s
    (86 M messages)."""
    proto: str
    """``smtp`` or ``http``."""
    api: str | None
    """The HTTP API it came through (``sendgrid``, ``ses``...); null for SMTP."""
    peer: str
    """The client's address."""
    session: str
    """The SMTP session or HTTP request it came in (unique within the ESP's run)."""
    key: str | None
    """The AUTH user or API key *name*, never a secret: the AUTH user or credential name, or
    ``sha256:<12 hex>`` of a key that is a secret (mailstorm.fake_esp.auth); the key per-sender faults
    (throttling) count by; null without one."""
    acked: bool
    """False when the client was cut off (or left hanging) after the ESP kept the message: the client
    never saw the acceptance and will send it again, the classic duplicate maker."""
    esp_id: str | None = None
    """HTTP only: the message id the API answered with (SendGrid ``X-Message-Id``, SES ``MessageId``...)."""
    held: bool = False
    """Accepted into the ESP's backlog (past a quota that queues, a delivery delay): delivered when its
    ``esp.delivered`` comes, and until then pending, not delivered."""
    tls: str | None = None
    """SMTP only: the TLS version of an encrypted session (``TLSv1.3``); null (absent) in plain text."""
    to: list[str] | None = None
    """The envelope recipients (SMTP RCPT TO, an API message's to/cc/bcc): a campaign's recipients are
    followed by address (mailstorm.reports.campaign)."""
    campaign: str | None = None
    """The ``X-Mailstorm-Campaign`` header's value: the message is one of that campaign's (SMTP and the
    SendGrid API; through the other HTTP APIs a campaign is followed by recipient alone). Such a message
    is the campaign's, not the load's: the fate of load messages leaves it out."""


class EspReplied(Record, kw_only=True):
    """A reply other than an acceptance, or a cut connection, given to a client (written before it is
    sent): a fault's answer, a 552 for a message over the size limit, a 452 past ``max_recipients``."""

    proto: str
    """``smtp`` or ``http``."""
    phase: str
    """Where: ``connect``, ``ehlo``, ``tls`` (a failed handshake or STARTTLS: code null, text the reason),
    ``auth``, ``mail`` (a 530 before STARTTLS or AUTH), ``rcpt``, ``data``, ``eod`` (after the final
    "."); ``http``."""
    code: int | None
    """The SMTP reply code (HTTP: the status); null for a cut connection (no reply at all)."""
    text: str | None
    """The reply as sent (HTTP: why); null for an SMTP cut."""
    fault: str | None
    """The name of the fault that caused it; null for the ESP's own limits."""
    session: str
    """The SMTP session or HTTP request."""
    id: str | None
    """The message's correlation id, when known at that phase (at ``eod`` and for HTTP)."""
    peer: str
    """The client's address."""
    api: str | None = None
    """HTTP only: the API that answered."""
    user: str | None = None
    """At ``auth``: the name of the login tried (never the password); absent elsewhere."""
    key: str | None = None
    """HTTP only: the name of the API key that was refused (as ``EspAccepted.key``), never the key."""


class EspFault(Record, kw_only=True):
    """A fault decision that changed something (a delay, a reply, a cut, a tarpit, a hang); the start and
    end of an outage on a listener (``phase`` ``listener``: a state change, not an action on traffic); or
    a webhook POST an outage held (``phase`` ``webhook``, ``action`` ``hold``)."""

    fault: str
    """The fault's name."""
    ftype: str
    """Its type (``latency``, ``reply``, ``throttle``, ``outage``...)."""
    phase: str
    """The SMTP phase it acted at, ``http``, ``listener`` for an outage's start and end, or ``webhook``."""
    action: str
    """``delay``, ``reply``, ``disconnect``, ``tarpit`` or ``hang``; for the listener: ``refuse`` or
    ``hang`` (the outage's mode); ``hold`` for a webhook POST."""
    delay_s: float
    """Seconds it delayed the step (0 when it did not); for a held POST, how long the outage had left."""
    session: str | None
    """The SMTP session or HTTP request; null for the listener."""
    state: str | None = None
    """Listener records only: ``begin`` or ``end`` of the outage."""
    proto: str | None = None
    """``http`` for HTTP records; for listener records the listener (``smtp`` | ``http``); ``webhooks``
    for a held POST."""
    api: str | None = None
    """HTTP records only: the API."""
    events: int | None = None
    """A held webhook POST: how many events it carries."""


class EspDelivered(Record, kw_only=True):
    """A message the ESP accepted into its backlog (past a quota it queues at, or a delivery delay)
    leaving it, ``held_s`` after its ``esp.accepted``: the ESP's delivery time. A message without one
    was delivered when it was accepted."""

    id: str | None
    """The correlation id."""
    esp_id: str | None
    """The id the API answered with (HTTP only)."""
    proto: str
    """``smtp`` or ``http``."""
    api: str | None
    """HTTP only: the API."""
    fault: str
    """The fault that held it (a quota with ``over: queue``, a backlog)."""
    held_s: float
    """How long it was held."""


class EspFaultEnded(Record, kw_only=True):
    """A fault that ended itself: a ``count`` scope used up (mailstorm.fake_esp.faults.aim)."""

    fault: str
    """The fault's name."""
    ftype: str
    """Its type."""
    reason: str
    """Why it ended: ``count``."""
    acted: int
    """How many steps it acted on (its ``count``)."""
    phase: str
    """The phase of its last action."""
    session: str | None
    """The SMTP session or HTTP request of its last action."""


class EspWebhook(Record, kw_only=True):
    """One webhook event for one recipient of an accepted message, per posting attempt; a dropped event
    (a webhook fault) is one record with ``attempt`` 0 and ``fault`` ``drop``, never posted."""

    api: str
    """The webhook format (an ESP's name: ``sendgrid``, ``mailgun``...)."""
    event: str
    """The canonical event: ``delivered``, ``bounce``, ``open``..."""
    id: str | None
    """The message's correlation id."""
    esp_id: str | None
    """The ESP's message id the event names."""
    rcpt: str
    """The recipient it is about."""
    event_id: str
    """The event's own id (the same across retries and duplicate copies: what a receiver dedupes on)."""
    url: str
    """Where it was posted."""
    status: int | None
    """The receiver's HTTP status; null when nothing answered (``error`` says why) or never posted."""
    attempt: int
    """1 for the first post, then each retry; 0 when the event was dropped and never posted."""
    fault: str | None
    """The webhook fault that shaped it (``drop``, ``duplicate``, ``delay``...); null for none."""
    copy: int
    """1 for the second post of a duplicated event, else 0."""
    final: bool
    """No more attempts follow (delivered, out of retries, or a status the format gives up on)."""
    ok: bool
    """The receiver answered 2xx."""
    error: str | None
    """Why the post failed without a status (connection refused, timeout)."""


class EspOutcome(Record, kw_only=True):
    """What happened to one recipient of a message at the ESP (the truth its webhooks report): written
    once per recipient when the fake ESP draws its events (mailstorm.fake_esp.webhooks.outcomes), and
    once per recipient of a send the ESP refused at once because every recipient was suppressed."""

    api: str
    """The ESP (its webhook format's name) whose events and suppression list these are."""
    id: str | None
    """The message's correlation id."""
    esp_id: str | None
    """The ESP's message id; null for a send refused at once (no message)."""
    rcpt: str
    """The recipient."""
    outcome: str
    """``delivered``, ``bounce``, ``soft_bounce`` or ``dropped`` (not sent: on the suppression list)."""
    events: list[str]
    """The canonical events the ESP has for the recipient, in order (``deferred``, ``delivered``,
    ``open``, ``click``, ``complaint``, ``unsubscribe``...); empty for a send refused at once."""
    unposted: list[str]
    """Those of ``events`` the ESP has no webhook event for (not posted: Postal's complaints...)."""
    source: str
    """Why: ``mix`` (drawn from the webhook events rates), ``address`` (a simulator or pattern address:
    docs/profiles.md), ``suppressed`` (the recipient is on the ESP's suppression list)."""
    detail: str | None = None
    """For ``dropped``: the event that suppressed the recipient (bounce, complaint, unsubscribe), or
    ``global`` (SES's simulator suppressionlist@)."""
    suppresses: bool = False
    """This outcome put the recipient on the ESP's suppression list."""


class EspSubscription(Record, kw_only=True):
    """A step of a webhook subscription handshake (SES through SNS): the SubscriptionConfirmation the ESP
    posted to a new endpoint (``request``), or the endpoint's confirmation (``confirm``, on the SNS URL
    the ESP serves)."""

    api: str
    """The webhook format (``ses``)."""
    action: str
    """``request`` (the ESP posted a SubscriptionConfirmation) or ``confirm`` (the endpoint confirmed)."""
    topic: str
    """The SNS topic ARN."""
    url: str
    """The endpoint (its password, if any, redacted)."""
    ok: bool
    """request: the endpoint answered 2xx; confirm: the token was right."""
    status: int | None = None
    """request: the endpoint's HTTP status; null when nothing answered."""
    error: str | None = None
    """request: why nothing answered."""


# -- load generator --------------------------------------------------------------------------------------


class LoadSubmit(Record, kw_only=True):
    """One submission attempt at the SUT, written when it ended (so ``t`` is about ``end``)."""

    id: str
    """The message's correlation id (the ``X-Mailstorm-Id`` it carries)."""
    intended: int
    """When the open model meant to send it (ns): latency counts from here (no coordinated omission)."""
    start: int
    """When the submission actually started (ns)."""
    end: int
    """When it ended (ns): the SUT's final reply, the failure, or the stop."""
    ok: bool
    """The SUT accepted the message."""
    code: int | None
    """The SUT's last reply code (HTTP: the status); null when none came (a timeout or a cut)."""
    text: str | None
    """The SUT's reply, or what went wrong."""
    phase: str
    """Where it failed (``connect``, ``mail``, ``rcpt``, ``data``...), ``done`` when it did not, ``stop``
    when the generator was stopped in the middle of it."""
    target: str
    """The endpoint it was sent to (``host:port`` or a URL)."""
    worker: int
    """The load process (its index)."""
    cls: str
    """The message class (the scenario's ``messages`` entry) it was made from."""
    size: int
    """Bytes of the message."""
    rcpts: int
    """How many recipients."""


class LoadDropped(Record, kw_only=True):
    """Arrivals the generator could not start in time and did not send (as k6's dropped_iterations)."""

    intended: int
    """When the first of them was due (ns)."""
    count: int
    """How many arrivals."""
    worker: int
    """The load process."""
    loop_lag_ms: float | None = None
    """The load process's event-loop lateness over the second before the drop: high when the generator
    itself was short of CPU, near 0 when its senders waited on the SUT."""


class LoadStarted(Record, kw_only=True):
    """A load process began its schedule (once, before its first submission)."""

    worker: int
    """The load process."""
    t0: int
    """The schedule's zero (ns), from which the shape's times count; the first arrival is a little after."""
    planned: int | None
    """Arrivals this process will offer: exact for uniform arrivals, the mean for Poisson; null for the
    closed model."""
    shape: str
    """The load shape's kind (``steady``, ``step``, ``ramp``...)."""


class LoadFinished(Record, kw_only=True):
    """An open-model load process finished its schedule (once, after its last submission), with how busy
    the generator itself was, so the reports can tell a generator that could not keep up from a SUT whose
    slow answers held the senders."""

    worker: int
    """The load process."""
    submitted: int
    """Submissions it made."""
    dropped: int
    """Arrivals it dropped."""
    cpu_s: float
    """CPU seconds the process used over the schedule."""
    wall_s: float
    """The schedule's wall-clock seconds."""
    loop_lag_ms: float
    """Mean lateness of a periodic timer on the process's event loop (CPU-bound or starved of CPU, it
    grows; waiting on sockets, it stays near 0)."""
    loop_lag_max_ms: float
    """The largest such lateness."""
    connections: int
    """The most connections it may hold."""


# -- system under test (the reference pipeline, or what follows a real one) -----------------------------


class SutAccepted(Record, kw_only=True):
    """The SUT took a message into its queue (written before its 250)."""

    id: str | None
    """The correlation id."""
    queue_id: int | str
    """The SUT's own id for it (the reference pipeline's row id, Postfix's queue id)."""


class SutRelayed(Record, kw_only=True):
    """The SUT handed a message on to the ESP."""

    id: str | None
    """The correlation id."""
    attempt: int
    """Which relay attempt (1 for the first)."""
    code: int | None
    """The ESP's reply code."""
    queue_id: int | str | None = None
    """The SUT's queue id, when it has one to give (Postfix)."""


class SutDeferred(Record, kw_only=True):
    """A relay attempt failed for now; the SUT keeps the message for a later retry."""

    id: str | None
    """The correlation id."""
    attempt: int
    """Which relay attempt failed."""
    code: int | None
    """The ESP's reply code; null for a connection failure or a timeout (no reply)."""
    text: str | None
    """The reply or the failure."""
    retry_in_s: float | None
    """Seconds until the next attempt; null when the SUT does not say (Postfix)."""
    queue_id: int | str | None = None
    """The SUT's queue id, when it has one to give (Postfix)."""


class SutBounced(Record, kw_only=True):
    """The SUT gave up on a message (or, for a partial bounce, on some of its recipients)."""

    id: str | None
    """The correlation id."""
    code: int | None
    """The reply that made it give up; null for a connection failure or a timeout."""
    text: str | None
    """Why."""
    attempt: int | None = None
    """The attempt that bounced, when the SUT counts them."""
    rcpts: list[str] | None = None
    """A partial bounce: the recipients refused for good (the message still went to the others)."""
    partial: bool = False
    """True for a partial bounce."""
    queue_id: int | str | None = None
    """The SUT's queue id, when it has one to give (Postfix)."""


class SutQueue(Record, kw_only=True):
    """A sample of the SUT's queue depth."""

    depth: int
    """Messages in the SUT's queue."""


class SutHeld(Record, kw_only=True):
    """A message the SUT still held at the end of the drain, written by the runner (source ``timeline``)
    from a target that can list its queue (Postfix's ``postqueue -j``, the reference pipeline's SQLite
    queue). Such a message is pending, not lost."""

    id: str
    """The correlation id."""
    queue_id: int | str | None = None
    """The SUT's own name for it (a Postfix queue id, a queue row); null when it has none."""
    target: str = ""
    """The target kind that listed it."""


class SutListed(Record, kw_only=True):
    """The runner listed the SUT's queue at the end of the drain (source ``timeline``), after the
    ``sut.held`` records of what it holds. A complete listing is the truth about the SUT's queue: a
    message the SUT deferred, never relayed and no longer holds (a wiped disk, a restore from an older
    backup) is lost, not pending."""

    target: str
    """The target kind that listed its queue."""
    held: int
    """Messages of the run it listed (the ``sut.held`` records written)."""
    complete: bool
    """False when some queued message could not be named (a Postfix queue file renamed by a restore,
    whose correlation id the maillog does not map; a pool member that cannot list its queue): then a
    deferral still counts as held, as without a listing."""


class SutEvent(Record, kw_only=True):
    """The SUT counted one webhook event in its analytics: one record per count it made (an event it
    counted twice is two records), written by a SUT that reports its counts in the ledger (the reference
    pipeline writes one after its commit, before its 2xx). mailstorm.reports.analytics compares them
    with the ESP's ``esp.webhook`` records, event id by event id."""

    event: str
    """The canonical event it counted (``delivered``, ``open``, ``click``...)."""
    event_id: str
    """The ESP's event id (``esp.webhook``'s ``event_id``)."""
    api: str | None = None
    """The webhook format it came in (``mailgun``, ``sendgrid``...), when the SUT says."""


# -- the chaos proxy (in the runner's process; source "proxy") ------------------------------------------


class ProxyActed(Record, kw_only=True):
    """A toxic acted on a proxied connection: once per connection and toxic, the first time it did (a
    latency, bandwidth or slicer toxic only when it held bytes back)."""

    toxic: str
    """Its name: the timeline step's label unless named."""
    type: str
    """The toxic's type (``latency``, ``bandwidth``, ``reset``, ``blackhole``, ``slicer``)."""
    path: str
    """Which route the connection took: ``smtp``, ``http`` or ``webhooks``."""
    conn: int
    """The proxy's connection number."""
    direction: str
    """``upstream`` or ``downstream``."""
    action: str
    """``delay``, ``throttle``, ``reset``, ``blackhole`` or ``slice``."""


class ProxyUpstreamFailed(Record, kw_only=True):
    """The proxy accepted a client but could not reach the upstream (refused, timed out) and reset the
    client. Through the proxy, a refusing ESP looks like this to the SUT."""

    path: str
    """The route: ``smtp``, ``http`` or ``webhooks``."""
    conn: int
    """The proxy's connection number."""
    error: str
    """Why the upstream could not be reached."""


# -- the run's timeline (the runner) ---------------------------------------------------------------------


class RunStarted(Record, kw_only=True):
    """The run's zero: ``t`` is the intended time of the load's first arrival (written when the runner
    sees it, so dated slightly before it is written); absent when the run failed before the load began."""

    run_id: str
    """The run directory's name."""
    name: str
    """The scenario's name."""
    seed: int
    """The scenario's seed."""
    duration_s: float
    """The load's planned duration."""
    prepared: int | None = None
    """When the runner began starting the parts (ns)."""


class RunPhase(Record, kw_only=True):
    """The run entered a phase."""

    phase: str
    """``load``, ``drain`` or ``stop``."""
    t0: int | None = None
    """Phase ``load``: the load's zero (ns), the same as run.started's ``t``; chaos steps' ``at_s`` count
    from it."""


class RunEnded(Record, kw_only=True):
    """The run ended."""

    reason: str
    """How: ``drained``, ``drain deadline``, ``interrupted (...)``, ``failed: ...``."""


class RunAborted(Record, kw_only=True):
    """An SLO marked ``abort: true`` was breached beyond recovery while the run went: the runner stopped
    the load here (``t``), drained briefly and ended the run (mailstorm.harness.abort)."""

    slo: str
    """The SLO's name (``max_lost``, ``p95_e2e_ms``, ``min_throughput``...)."""
    limit: float
    """Its limit (``max_dropped`` as a percentage: in messages, for the plan the load said)."""
    actual: float
    """The live figure that breached it (messages, ms, or 0 msg/s for no delivery)."""
    after_s: float | None
    """The grace the breach outlasted (None for counts, which only grow)."""
    at_s: float
    """When: seconds from the load's zero."""
    detail: str
    """Why, in a sentence (the reports show it)."""


class _ChaosWindow(Record, kw_only=True):
    """The fields of ``chaos.begin`` and ``chaos.end`` (not a kind itself)."""

    name: str
    """The chaos step's name (its label): a begin and an end pair by it."""
    what: str
    """``esp_fault``, ``esp_outage``, ``target`` or ``network``."""
    params: dict[str, Any]
    """The step's own settings, as the scenario gave them."""
    at_s: float | None = None
    """When it was scheduled: seconds from the load's zero."""
    esp: str | None = None
    """The ESP an ``esp_fault`` or ``esp_outage`` acted on, in a run with several; null: the first."""


class ChaosBegin(_ChaosWindow, kw_only=True):
    """A chaos step began (written as it is applied)."""


class ChaosEnd(_ChaosWindow, kw_only=True):
    """A chaos step ended (a bare target action ends as soon as it finished)."""


class Probe(Record, kw_only=True):
    """One poll of a SUT health or metrics URL."""

    url: str
    """What was polled."""
    name: str | None = None
    """The probe's name (the URL when it has none; absent in some older ledgers)."""
    status: int | None
    """The HTTP status; null when nothing answered."""
    latency_s: float
    """How long the poll took."""
    ok: bool
    """A 2xx answer."""
    value: float | str | bool | None = None
    """The metric or JSON field asked for, when found."""
    error: str | None = None
    """Why the poll failed, or why the value was not found."""


class AnalyticsProbe(Record, kw_only=True):
    """One poll of the SUT's analytics counts (a scenario's ``analytics.probe``: JSON or Prometheus),
    written by the runner (source ``timeline``), during the run and once more at its end."""

    url: str
    """What was polled."""
    status: int | None
    """The HTTP status; null when nothing answered."""
    ok: bool
    """A 2xx answer whose counts were read."""
    counts: dict[str, float] | None = None
    """The SUT's count per canonical event (``open``: 12...); null when the poll failed."""
    error: str | None = None
    """Why the poll failed, or why the counts were not found."""
    final: bool = False
    """The poll made after the drain: the SUT's last word on its counts."""


class Action(Record, kw_only=True):
    """An action the timeline took on the target or the ESP (kill, pause, restart, an ESP crash...)."""

    what: str
    """The action (``kill``, ``restart``, ``esp-crash``...)."""
    target: str
    """The target's kind, or ``esp``."""
    ok: bool
    """It succeeded."""
    detail: str
    """What the action said, or why it failed."""
    started: int
    """When it was issued (ns); ``t`` is when it finished."""


class PoolMember(Record, kw_only=True):
    """A member of a ``pool`` target (written when the pool has started it): who it is in the ledgers."""

    member: int
    """Its index in the pool (what ``params: {member: N}`` names)."""
    target: str
    """Its target kind."""
    source: str
    """The ledger source its SUT writes under: its ``sut.*`` records' ``src`` (or their prefix)."""
    address: str
    """``host:port`` the balancer sends its traffic to."""


class PoolServer(Record, kw_only=True):
    """The balancer's view of a pool member changed (HAProxy's stats socket, polled): written at the first
    poll and at every change of ``status``."""

    member: int
    """The member's index."""
    status: str
    """HAProxy's status: ``UP``, ``DOWN``, ``MAINT``, ``UP 1/2`` (going down), ``DOWN 1/2`` (coming up)..."""
    check: str | None = None
    """The last health check's result (``L4OK``, ``L4CON``: connection refused, ``L7STS``...)."""
    sessions: int = 0
    """Connections the balancer had sent to it so far (``stot``)."""


# -- alerts (the runner's webhook receiver, mailstorm.harness.alerts; source "alerts") ---------------------


class _AlertNotice(Record, kw_only=True):
    """The fields of ``alert.firing`` and ``alert.resolved`` (not a kind itself): one alert of an
    Alertmanager webhook notification, recorded when the receiver got it (``t``)."""

    name: str
    """The alert's name (its ``alertname`` label: the rule's ``alert``)."""
    fingerprint: str
    """Alertmanager's fingerprint of its labels: a firing and its resolution share it."""
    labels: dict[str, str]
    """All its labels."""
    starts_at: str | None = None
    """When Prometheus says it began firing (RFC 3339, as Alertmanager sends it)."""
    ends_at: str | None = None
    """When it resolved (RFC 3339); absent while it fires."""
    summary: str | None = None
    """Its ``summary`` (else ``description``) annotation, when it has one."""


class AlertFiring(_AlertNotice, kw_only=True):
    """Alertmanager notified that an alert fires."""


class AlertResolved(_AlertNotice, kw_only=True):
    """Alertmanager notified that an alert resolved."""


# -- campaigns (the runner: mailstorm.harness.campaign) ----------------------------------------------


class CampaignList(Record, kw_only=True):
    """A campaign's list, written to ``<run>/campaign/<id>.csv`` before the run starts."""

    id: str
    """The campaign id."""
    path: str
    """The list file (``email,name,status``)."""
    url: str
    """Where the run serves it read-only on loopback (``list_url``)."""
    recipients: int
    """Rows on the list."""
    unsubscribed: int
    """Rows with ``status`` unsubscribed: the SUT must not send to them."""


class CampaignTrigger(Record, kw_only=True):
    """The runner asked the SUT to send a campaign (written before the request leaves)."""

    id: str
    """The campaign id."""
    via: str
    """``http``, ``command`` or ``smtp``."""
    request: str
    """What was sent: ``POST http://...``, the argv, ``RCPT TO:<list address>``."""
    at_s: float
    """Its time on the timeline (s from the load's zero)."""


class CampaignAnswer(Record, kw_only=True):
    """The SUT's answer to a trigger: accepted (the campaign started) or refused (it never did)."""

    id: str
    """The campaign id."""
    via: str
    """As the trigger's."""
    ok: bool
    """The SUT took the trigger (HTTP 2xx, exit 0, SMTP 250)."""
    code: int | None
    """HTTP status, exit code or SMTP reply code; null when no answer came (refused connection...)."""
    answer: str
    """The answer's text (body or output, cut to 500 characters), or the error."""
    started: int
    """When the trigger was sent (ns); ``t`` is when the answer came."""


RECORDS: dict[Kind, type[Record]] = {
    Kind(cls.__struct_config__.tag): cls
    for cls in (
        EspAccepted, EspReplied, EspFault, EspFaultEnded, EspDelivered, EspWebhook, EspOutcome,
        EspSubscription,
        LoadSubmit, LoadDropped, LoadStarted, LoadFinished,
        SutAccepted, SutRelayed, SutDeferred, SutBounced, SutQueue, SutHeld, SutListed, SutEvent,
        ProxyActed, ProxyUpstreamFailed,
        RunStarted, RunPhase, RunEnded, RunAborted, ChaosBegin, ChaosEnd, Probe, AnalyticsProbe, Action,
        PoolMember, PoolServer, AlertFiring, AlertResolved, CampaignList, CampaignTrigger, CampaignAnswer,
    )
}  # fmt: skip
"""Every kind's record class."""

for _kind, _cls in RECORDS.items():
    _cls.kind = _kind
if missing := set(Kind) - set(RECORDS):  # a kind added without its class: refuse to start
    raise ImportError(f"ledger kinds without a record class: {sorted(missing)}")
