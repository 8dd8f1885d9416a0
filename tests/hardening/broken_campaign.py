"""A known-broken campaign sender, run as a campaign's ``command`` trigger: it reads the list and sends
each subscriber one message over SMTP (with ``X-Mailstorm-Campaign``), in batches, with three bugs real
senders have, each switched on by a flag:

- ``--crash-after K``: after batch K it "crashes" and restarts from the top of the list (no checkpoint):
  every subscriber of batches 0..K gets a second copy;
- ``--forget-unsubscribes J``: batch J is sent without the unsubscribed filter;
- ``--skip-batch M``: batch M is never sent (an off-by-one in the resume);
- ``--extra ADDRESS``: one more message, to an address not on the list (a seed list left in).

It writes its truth, the number of messages it sent to each address, to ``--truth`` (JSON), so a test can
hold the report to it recipient by recipient.

    python -m tests.hardening.broken_campaign --list L.csv --campaign ID --smtp HOST:PORT --truth T.json
"""

from __future__ import annotations

import argparse
import csv
import json
import smtplib
from collections import Counter
from email.message import EmailMessage

from mailstorm.ledger import CAMPAIGN_HEADER


def batches(rows: list[dict[str, str]], size: int) -> list[list[dict[str, str]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--list", required=True)
    p.add_argument("--campaign", required=True)
    p.add_argument("--smtp", required=True)
    p.add_argument("--truth", required=True)
    p.add_argument("--batch", type=int, default=25)
    p.add_argument("--crash-after", type=int, default=None)
    p.add_argument("--forget-unsubscribes", type=int, default=None)
    p.add_argument("--skip-batch", type=int, default=None)
    p.add_argument("--extra", action="append", default=[], help="also send to this address (not on the list)")
    args = p.parse_args(argv)
    with open(args.list, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    sent: Counter[str] = Counter()
    host, port = args.smtp.rsplit(":", 1)
    with smtplib.SMTP(host, int(port), timeout=30) as smtp:

        def send(address: str) -> None:
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "news@broken.test", address, f"campaign {args.campaign}"
            msg[CAMPAIGN_HEADER] = args.campaign
            msg.set_content("hello\n")
            smtp.send_message(msg, to_addrs=[address])
            sent[address.lower()] += 1

        def run(until: int | None) -> None:
            for n, batch in enumerate(batches(rows, args.batch)):
                if n == args.skip_batch:
                    continue
                for row in batch:
                    if row["status"] == "unsubscribed" and n != args.forget_unsubscribes:
                        continue
                    send(row["email"])
                if until is not None and n == until:
                    return  # the crash: the process died here

        if args.crash_after is not None:
            run(args.crash_after)
        run(None)  # the restart, from the top of the list
        for address in args.extra:
            send(address)
    with open(args.truth, "w", encoding="utf-8") as fh:
        json.dump(sent, fh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
