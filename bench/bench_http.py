"""HTTP API throughput: accepted API requests/s for one fake ESP process, no fault active, per ESP API.

    python bench/bench_http.py                 # full run, prints a Markdown table
    python bench/bench_http.py --smoke         # small counts, for CI: checks it all runs
    python bench/bench_http.py --write-docs    # also writes the table into docs/benchmarks.md

The fake ESP runs as in production (``python -m mailstorm.fake_esp --http-port P``: ledger on, one process, no
profile, so no added latency). The client is aiohttp in its own process(es) (``--clients``), keeping
``--concurrency`` keep-alive connections each busy for ``--seconds``; each request is one message with a
correlation id. Every API is measured ``--repeat`` times, interleaved, and the best run is kept (the
machine is shared; the median is printed too). The accepted count is checked against the ESP's ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from docs_section import DOC, write_section  # noqa: E402  (bench/, beside this file)

from mailstorm.fake_esp.launch import EspProcess  # noqa: E402
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader  # noqa: E402
from mailstorm.ports import free_port  # noqa: E402

SECTION = "## HTTP APIs: accepted requests/s"
TEXT = "x" * 1800  # ~2 KB messages, as the SMTP benchmark sends
SES_AUTH = "AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/us-east-1/ses/aws4_request, SignedHeaders=host"


def request_for(api: str, cid: str) -> tuple[str, dict[str, str], dict | None, dict | None]:
    """(path, headers, json body, form body) of one send through ``api``."""
    h = CORRELATION_HEADER
    if api == "sendgrid":
        body = {
            "personalizations": [{"to": [{"email": "u@example.test"}], "headers": {h: cid}}],
            "from": {"email": "a@example.test"},
            "subject": "bench",
            "content": [{"type": "text/plain", "value": TEXT}],
        }
        return "/v3/mail/send", {"Authorization": "Bearer SG.bench"}, body, None
    if api == "ses":
        body = {
            "FromEmailAddress": "a@example.test",
            "Destination": {"ToAddresses": ["u@example.test"]},
            "Content": {
                "Simple": {
                    "Subject": {"Data": "bench"},
                    "Body": {"Text": {"Data": TEXT}},
                    "Headers": [{"Name": h, "Value": cid}],
                }
            },
        }
        return "/v2/email/outbound-emails", {"Authorization": SES_AUTH}, body, None
    if api == "mailgun":
        auth = {"Authorization": "Basic " + base64.b64encode(b"api:bench").decode()}
        form = {
            "from": "a@example.test",
            "to": "u@example.test",
            "subject": "bench",
            "text": TEXT,
            f"h:{h}": cid,
        }
        return "/v3/mg.example.test/messages", auth, None, form
    if api == "postmark":
        body = {"From": "a@example.test", "To": "u@example.test", "Subject": "bench", "TextBody": TEXT}
        return (
            "/email",
            {"X-Postmark-Server-Token": "bench"},
            {**body, "Headers": [{"Name": h, "Value": cid}]},
            None,
        )
    return _MORE[api](cid)


def _mailersend(cid: str) -> tuple[str, dict[str, str], dict, None]:
    body = {"from": {"email": "a@example.test"}, "to": [{"email": "u@example.test"}], "subject": "bench",
            "text": TEXT, "headers": [{"name": CORRELATION_HEADER, "value": cid}]}  # fmt: skip
    return "/v1/email", {"Authorization": "Bearer bench"}, body, None


def _resend(cid: str) -> tuple[str, dict[str, str], dict, None]:
    body = {"from": "a@example.test", "to": ["u@example.test"], "subject": "bench", "text": TEXT,
            "headers": {CORRELATION_HEADER: cid}}  # fmt: skip
    return "/emails", {"Authorization": "Bearer re_bench"}, body, None


def _sparkpost(cid: str) -> tuple[str, dict[str, str], dict, None]:
    body = {"recipients": [{"address": {"email": "u@example.test"}}],
            "content": {"from": "a@example.test", "subject": "bench", "text": TEXT,
                        "headers": {CORRELATION_HEADER: cid}}}  # fmt: skip
    return "/api/v1/transmissions", {"Authorization": "bench"}, body, None


def _postal(cid: str) -> tuple[str, dict[str, str], dict, None]:
    body = {"to": ["u@example.test"], "from": "a@example.test", "subject": "bench", "plain_body": TEXT,
            "headers": {CORRELATION_HEADER: cid}}  # fmt: skip
    return "/api/v1/send/message", {"X-Server-API-Key": "bench"}, body, None


def _hubspot(cid: str) -> tuple[str, dict[str, str], dict, None]:
    body = {"emailId": 1, "message": {"to": "u@example.test", "sendId": cid}}
    return "/marketing/v3/transactional/single-email/send", {"Authorization": "Bearer bench"}, body, None


def _klaviyo(cid: str) -> tuple[str, dict[str, str], dict, None]:
    attrs = {"properties": {CORRELATION_HEADER: cid, "text": TEXT},
             "metric": {"data": {"type": "metric", "attributes": {"name": "bench"}}},
             "profile": {"data": {"type": "profile", "attributes": {"email": "u@example.test"}}}}  # fmt: skip
    headers = {"Authorization": "Klaviyo-API-Key bench", "revision": "2024-10-15"}
    return "/api/events", headers, {"data": {"type": "event", "attributes": attrs}}, None


_MORE = {"mailersend": _mailersend, "resend": _resend, "sparkpost": _sparkpost, "postal": _postal,
         "hubspot": _hubspot, "klaviyo": _klaviyo}  # fmt: skip


# -- the client (its own process: `bench_http.py --client URL API SECONDS CONCURRENCY TAG`) ---------------
async def client(url: str, api: str, seconds: float, concurrency: int, tag: str) -> dict:
    import aiohttp

    ok = failed = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(w: int) -> None:
            nonlocal ok, failed
            seq = 0
            while time.monotonic() < deadline:  # bounded in time (and so in count)
                seq += 1
                path, headers, body, form = request_for(api, f"{tag}-{w}-{seq}")
                async with session.post(url + path, json=body, data=form, headers=headers) as resp:
                    await resp.read()
                    if resp.status < 300:
                        ok += 1
                    else:
                        failed += 1

        t0 = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        elapsed = time.monotonic() - t0
    return {"ok": ok, "failed": failed, "elapsed": elapsed}


def run_clients(url: str, api: str, seconds: float, concurrency: int, clients: int) -> dict:
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--client", url, api, str(seconds), str(concurrency), f"c{i}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(clients)
    ]
    outs = [json.loads(p.communicate(timeout=seconds + 60)[0]) for p in procs]
    return {
        "ok": sum(o["ok"] for o in outs),
        "failed": sum(o["failed"] for o in outs),
        "elapsed": max(o["elapsed"] for o in outs),
    }


def measure(api: str, args: argparse.Namespace) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "ledger"
        with EspProcess(ledger, http_port=free_port(), log_path=Path(tmp) / "esp.log") as esp:
            out = run_clients(esp.http_url, api, args.seconds, args.concurrency, args.clients)
        kept = LedgerReader(ledger).count(Kind.ESP_ACCEPTED)
    if kept != out["ok"] or out["failed"]:
        raise SystemExit(f"{api}: client saw {out['ok']} accepted, {out['failed']} failed; ledger {kept}")
    return out["ok"] / out["elapsed"], kept


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="1 s per API, one repeat: checks it runs")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement (default 5)")
    p.add_argument("--repeat", type=int, default=3, help="measurements per API, best kept (default 3)")
    p.add_argument("--concurrency", type=int, default=32, help="connections per client process (default 32)")
    p.add_argument("--clients", type=int, default=1, help="client processes (default 1)")
    p.add_argument("--apis", default="sendgrid,ses,mailgun,postmark," + ",".join(_MORE))
    p.add_argument("--write-docs", action="store_true", help=f"write the table into {DOC.relative_to(ROOT)}")
    p.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client is not None:
        url, api, seconds, conc, tag = args.client
        print(json.dumps(asyncio.run(client(url, api, float(seconds), int(conc), tag))))
        return 0
    if args.smoke:
        args.seconds, args.repeat = 1.0, 1
    apis = args.apis.split(",")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())  # a shared machine: say how busy it was
    runs: dict[str, list[float]] = {a: [] for a in apis}
    for _ in range(args.repeat):
        for api in apis:  # interleaved, so a noisy neighbour hurts every API alike
            rate, _kept = measure(api, args)
            runs[api].append(rate)
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    lines = [
        f"`python bench/bench_http.py` ({when}, {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load avg {load} at start): one fake ESP process (ledger on, no "
        "fault, no profile), "
        f"{args.clients} aiohttp client process(es) x {args.concurrency} keep-alive connections, "
        f"{args.seconds:g} s per run, best of {args.repeat} (median in brackets); ~2 KB messages; every "
        "accepted request checked against the ledger. Client and ESP share the machine's cores, so these "
        "are lower bounds of what one ESP process serves.",
        "",
        "| API | route | accepted requests/s |",
        "|---|---|---:|",
    ]
    for api in apis:
        route = request_for(api, "x")[0]
        best, med = max(runs[api]), statistics.median(runs[api])
        lines.append(f"| {api} | POST {route} | {best:,.0f} ({med:,.0f}) |")
    print("\n".join(lines))
    if args.write_docs and not args.smoke:
        write_section(SECTION, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
