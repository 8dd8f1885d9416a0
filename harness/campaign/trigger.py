"""Asking the SUT to send a campaign: an HTTP request, a command, or one SMTP message to a list address.
Each returns an ``Answer``; a refusal (HTTP 4xx/5xx, exit != 0, SMTP 5xx, no answer at all) is an
answer too, never an exception: the runner records it and the run says the campaign never started."""

from __future__ import annotations

import json
import smtplib
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage

from mailstorm.harness.campaign.spec import CommandTrigger, HttpTrigger, SmtpTrigger, fill
from mailstorm.ledger import CAMPAIGN_HEADER

ANSWER_CHARS = 500  # what the ledger keeps of a body or an output


@dataclass(frozen=True)
class Answer:
    ok: bool
    code: int | None
    text: str


def describe(trigger: HttpTrigger | CommandTrigger | SmtpTrigger, values: dict[str, str]) -> str:
    """The request as the ledger records it."""
    if isinstance(trigger, HttpTrigger):
        return f"{trigger.method} {fill(trigger.url, values)}"
    if isinstance(trigger, CommandTrigger):
        return " ".join(fill(a, values) for a in trigger.argv)
    return f"SMTP {values.get('target_host')}:{values.get('target_port')} RCPT TO:<{trigger.to}>"


def fire(
    trigger: HttpTrigger | CommandTrigger | SmtpTrigger, values: dict[str, str], fields: dict[str, str]
) -> Answer:
    """Send the trigger; ``values`` fill the placeholders, ``fields`` are the campaign's (subject, from)."""
    if isinstance(trigger, HttpTrigger):
        return _http(trigger, values, fields)
    if isinstance(trigger, CommandTrigger):
        return _command(trigger, values)
    return _smtp(trigger, values, fields)


def _http(trigger: HttpTrigger, values: dict[str, str], fields: dict[str, str]) -> Answer:
    body = {
        "campaign_id": values["campaign_id"],
        "list_path": values["list_path"],
        "list_url": values["list_url"],
        **fields,
        **{k: fill(v, values) if isinstance(v, str) else v for k, v in trigger.body.items()},
    }
    data = None if trigger.method == "GET" else json.dumps(body).encode()
    req = urllib.request.Request(fill(trigger.url, values), data=data, method=trigger.method)
    req.add_header("Content-Type", "application/json")
    for name, value in trigger.headers.items():
        req.add_header(name, fill(value, values))
    try:
        with urllib.request.urlopen(req, timeout=trigger.timeout) as resp:
            return Answer(True, resp.status, _cut(resp.read()))
    except urllib.error.HTTPError as exc:
        with exc:  # its response holds the connection
            return Answer(False, exc.code, _cut(exc.read()))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return Answer(False, None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")


def _command(trigger: CommandTrigger, values: dict[str, str]) -> Answer:
    argv = [fill(a, values) for a in trigger.argv]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=trigger.timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Answer(False, None, f"{type(exc).__name__}: {exc}")
    return Answer(done.returncode == 0, done.returncode, _cut(done.stdout + done.stderr))


def _smtp(trigger: SmtpTrigger, values: dict[str, str], fields: dict[str, str]) -> Answer:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = fields["from"], trigger.to, fields["subject"]
    msg[CAMPAIGN_HEADER] = values["campaign_id"]
    msg.set_content(f"campaign {values['campaign_id']}\nlist: {values['list_url']}\n")
    try:
        with smtplib.SMTP(values["target_host"], int(values["target_port"]), timeout=trigger.timeout) as smtp:
            smtp.send_message(msg)
    except smtplib.SMTPResponseException as exc:
        return Answer(False, exc.smtp_code, _cut(exc.smtp_error))
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return Answer(False, code, _cut(text))
    except (smtplib.SMTPException, OSError) as exc:
        return Answer(False, None, f"{type(exc).__name__}: {exc}")
    return Answer(True, 250, "queued")


def _cut(data: bytes) -> str:
    return data.decode("utf-8", "replace").strip()[:ANSWER_CHARS]
