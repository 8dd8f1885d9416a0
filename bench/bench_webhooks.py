"""Webhook posting: events the fake ESP posts per second, per ESP format, and what signing them costs.

    python bench/bench_webhooks.py                 # full run, prints Markdown tables
    python bench/bench_webhooks.py --smoke         # small counts, for CI: checks it all runs
    python bench/bench_webhooks.py --write-docs    # also writes the tables into docs/benchmarks.md

Posting rate: one fake ESP process per format (``python -m mailstorm.fake_esp --webhooks``, ledger on,
no profile) posting to a local receiver (aiohttp in its own process, answering 200 at once). The receiver
first holds every POST unanswered (its gate closed), the bench sends ``--messages`` messages over SMTP,
each getting a delivered, an open and a click event (``events: {open: 1, click: 1}``), so the poster's
first POSTs wait and the rest pile up in its queue; ``--hold`` seconds after the last send the gate
opens and the poster posts the backlog flat out: the rate is the events over the span from the gate's
opening to the last post record in the ESP's ledger (each checked answered 200). Batching formats
(SendGrid, SendPulse, Mandrill) carry up to their profile's ``batch_max`` events per POST. Each format is
measured ``--repeat`` times, interleaved; the best is kept and the median printed.

Signing, in one run: the formats that sign on main (Mailgun's HMAC of timestamp+token, MailerSend's HMAC
of the body, Resend's Svix HMAC, Postal's RSA PKCS#1 v1.5 SHA-1 and SHA-256) rendered in-process one
event per POST, with their signing step and with it replaced by a constant (the same body otherwise):
microseconds per POST and the ratio. And end to end for Postal, whose signing the key switches (an RSA
PEM signs, any other key signs nothing): events/s signed over unsigned, the two ESPs taking turns.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from email.message import EmailMessage
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from docs_section import DOC, write_section  # noqa: E402  (bench/, beside this file)

from mailstorm.errors import HarnessError  # noqa: E402
from mailstorm.fake_esp.launch import EspProcess  # noqa: E402
from mailstorm.fake_esp.webhooks.formats import WEBHOOK_FORMATS, Event, render  # noqa: E402
from mailstorm.ledger import Kind, LedgerReader  # noqa: E402
from mailstorm.ports import free_port, wait_for_port  # noqa: E402

SECTION = "## Webhooks: events posted per second, and signing"
RECEIVER = """
import asyncio, sys
from aiohttp import web
posts = 0
gate = None
async def ok(request):
    global posts
    await request.read()
    await gate.wait()
    posts += 1
    return web.Response(status=200)
async def count(request):
    return web.Response(text=str(posts))
async def close_(request):
    gate.clear()
    return web.Response(text="closed")
async def open_(request):
    gate.set()
    return web.Response(text="open")
async def start(app):
    global gate
    gate = asyncio.Event()
    gate.set()
app = web.Application()
app.on_startup.append(start)
app.router.add_post("/{tail:.*}", ok)
app.router.add_get("/count", count)
app.router.add_get("/close", close_)
app.router.add_get("/open", open_)
try:
    import uvloop; uvloop.install()
except ImportError:
    pass
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""
SIGNED = {
    "mailgun": ("mailstorm.fake_esp.esps.mailgun.webhook.hmac", "HMAC-SHA256 of timestamp+token"),
    "mailersend": ("mailstorm.fake_esp.esps.mailersend.webhook.sign", "HMAC-SHA256 of the body"),
    "resend": ("mailstorm.fake_esp.esps.resend.webhook.svix_headers", "Svix: HMAC-SHA256 of id.ts.body"),
    "postal": ("mailstorm.fake_esp.esps.postal.webhook.signatures", "RSA-2048 PKCS#1 v1.5, SHA-1 + SHA-256"),
}


def rsa_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def send(port: int, n: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        for i in range(n):
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "bench@example.test", f"r{i}@example.test", "bench"
            msg.set_content("x" * 200)
            s.send_message(msg)


def ask(url: str, what: str) -> str:
    """The receiver's ``/count`` (POSTs answered so far), ``/close`` (hold every POST unanswered) or
    ``/open`` (answer them)."""
    with urllib.request.urlopen(url.rsplit("/", 1)[0] + f"/{what}", timeout=10) as resp:
        return resp.read().decode()


def measure(fmt: str, url: str, args: argparse.Namespace, work: Path, key: str) -> tuple[float, int, int]:
    """(events/s, events, posts) of one ESP process posting format ``fmt`` signed with ``key``."""
    before = int(ask(url, "count"))
    ledger = Path(tempfile.mkdtemp(dir=work))
    hooks = ledger / "webhooks.yaml"
    spec = {"url": url, "format": fmt, "signing_key": key, "seed": 1, "events": {"open": 1.0, "click": 1.0},
            "timeout_s": 120}  # fmt: skip
    hooks.write_text(yaml.safe_dump(spec))
    want = args.messages * 3
    with EspProcess(ledger / "l", extra_args=["--webhooks", str(hooks)], log_path=ledger / "esp.log") as esp:
        ask(url, "close")  # the first POSTs wait unanswered: the rest pile up in the poster's queue
        send(esp.smtp_port, args.messages)
        time.sleep(args.hold)  # the last acceptances' events reach the queue
        opened = time.time_ns()
        ask(url, "open")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            recs = list(LedgerReader(ledger / "l").records([Kind.ESP_WEBHOOK]))
            if len(recs) >= want:
                break
            time.sleep(0.2)  # polling the ledger for the last post
    assert len(recs) == want and all(r["ok"] for r in recs), f"{fmt}: {len(recs)} of {want} posted, all 200?"
    span = max((max(r["t"] for r in recs) - opened) / 1e9, 1e-6)
    return want / span, want, int(ask(url, "count")) - before


def measure_again(
    fmt: str, url: str, args: argparse.Namespace, work: Path, key: str
) -> tuple[float, int, int]:
    """``measure``, once more if the fake ESP did not start: on a machine shared by many runs a free port
    picked for it can be taken before it binds."""
    try:
        return measure(fmt, url, args, work, key)
    except HarnessError as exc:
        print(f"{fmt}: {exc}; once more", file=sys.stderr)
        return measure(fmt, url, args, work, key)


def render_us(fmt: str, key: str, n: int, *, signed: bool) -> float:
    """Microseconds per render of one event in ``fmt``, with or without its signing step."""
    ev = Event(event="open", event_id="e" * 32, id="c1", esp_id="m1", rcpt="r@x.test", sender="s@x.test",
               ts=1_800_000_000.0, header="X-Mailstorm-Id")  # fmt: skip
    target, _ = SIGNED[fmt]
    with ExitStack() as stack:
        if not signed:
            if fmt == "mailgun":  # hmac.new(...).hexdigest() -> a constant of the same length
                stack.enter_context(mock.patch(target, _NoHmac))
            elif fmt == "mailersend":
                stack.enter_context(mock.patch(target, lambda body, k: "0" * 64))
            elif fmt == "resend":
                sig = {"svix-id": "m", "svix-timestamp": "1", "svix-signature": "v1," + "0" * 44}
                stack.enter_context(mock.patch(target, lambda *a: sig))
            else:
                stack.enter_context(mock.patch(target, lambda body, k: {}))
        render(fmt, [ev], signing_key=key)  # warm
        t = time.perf_counter()
        for _ in range(n):
            render(fmt, [ev], signing_key=key)
        return (time.perf_counter() - t) / n * 1e6


class _NoHmac:
    """``hmac`` for a render without its signing step: ``new(...).hexdigest()`` is a constant."""

    @staticmethod
    def new(*args: object) -> _Constant:
        return _Constant()


class _Constant:
    def hexdigest(self) -> str:
        return "0" * 64


def signing_costs(fmt: str, key: str, n: int, turns: int) -> tuple[float, float]:
    """(signed, unsigned) µs per POST, the two taking ``turns`` turns each, the best of each kept."""
    on, off = [], []
    for _ in range(turns):
        on.append(render_us(fmt, key, n, signed=True))
        off.append(render_us(fmt, key, n, signed=False))
    return min(on), min(off)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="few events per format, one repeat: checks it runs")
    p.add_argument("--messages", type=int, default=1500, help="messages per measurement, 3 events each")
    p.add_argument(
        "--hold", type=float, default=1.0, help="seconds after the last send before the gate opens"
    )
    p.add_argument("--repeat", type=int, default=3, help="measurements per format, best kept (default 3)")
    p.add_argument("--formats", default=",".join(WEBHOOK_FORMATS.names()))
    p.add_argument("--write-docs", action="store_true", help=f"write the tables into {DOC.relative_to(ROOT)}")
    args = p.parse_args(argv)
    if args.smoke:  # three formats (one batching, two signing), one turn each: checks it all runs
        args.messages, args.hold, args.repeat = 20, 0.3, 1
        args.formats = "sendgrid,mailgun,postal"
    formats = [f for f in args.formats.split(",") if f]
    pem = rsa_pem()
    port = free_port()
    rx = subprocess.Popen([sys.executable, "-c", RECEIVER, str(port)])
    rates: dict[str, list[float]] = {f: [] for f in [*formats, "postal (unsigned)"]}
    per_post: dict[str, float] = {}
    try:
        wait_for_port("127.0.0.1", port, 20, what="the receiver")
        url = f"http://127.0.0.1:{port}/hooks"
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeat):
                for fmt in formats:
                    key = pem if fmt == "postal" else "bench-signing-key"
                    rate, events, posts = measure_again(fmt, url, args, Path(tmp), key)
                    rates[fmt].append(rate)
                    per_post[fmt] = events / posts
                    if fmt == "postal":  # its turn unsigned right after: a key that is no PEM signs nothing
                        unsigned = measure_again(fmt, url, args, Path(tmp), "plain")[0]
                        rates["postal (unsigned)"].append(unsigned)
    finally:
        rx.terminate()
        rx.wait(10)
    n, turns = (100, 1) if args.smoke else (3000, 5)
    signing = []
    for fmt in SIGNED:
        key = pem if fmt == "postal" else "bench-signing-key"
        on, off = signing_costs(fmt, key, n // 10 if fmt == "postal" else n, turns)
        signing.append((fmt, SIGNED[fmt][1], on, off))

    load = os.getloadavg()[0]
    lines = [
        f"Measured {datetime.date.today()} on {platform.machine()} ({os.cpu_count()} cores, load {load:.1f}),"
        " "
        f"Python {platform.python_version()}; {args.messages:,} messages x 3 events per measurement, best of "
        f"{args.repeat} (median beside it). `python bench/bench_webhooks.py`"
        + (" --smoke: figures too small to mean anything." if args.smoke else "."),
        "",
        "| format | events/s (best) | median | events per POST |",
        "| --- | ---: | ---: | ---: |",
    ]
    for fmt, rs in rates.items():
        if rs:
            base = fmt.split()[0]
            lines.append(f"| {fmt} | {max(rs):,.0f} | {statistics.median(rs):,.0f} | {per_post[base]:.1f} |")
    if rates.get("postal") and rates["postal (unsigned)"]:
        ratio = max(rates["postal"]) / max(rates["postal (unsigned)"])
        lines += ["", f"Postal end to end, RSA-signed over unsigned: {ratio:.2f}x the events per second."]
    lines += [
        "",
        "Signing one POST of one event, in-process render (µs), and what the signing step adds to a POST's",
        "time end to end (1 / the format's best events/s above, one event per POST):",
        "",
        "| format | signature | signed | unsigned | signed/unsigned | share of a POST end to end |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for f, what, on, off in signing:
        post_us = 1e6 / max(rates[f]) if rates.get(f) else None
        share = f"{100 * (on - off) / post_us:.1f}%" if post_us else "—"
        lines.append(f"| {f} | {what} | {on:,.1f} | {off:,.1f} | {on / off:.2f}x | {share} |")
    print("\n".join([SECTION, "", *lines]))
    if args.write_docs:
        write_section(SECTION, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
