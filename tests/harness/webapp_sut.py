"""A small web app that sends mail through an ESP's SendGrid API: the HTTP-API system under test of the
end-to-end tests, run by ``mailstorm run`` as a ``process`` target.

    python tests/harness/webapp_sut.py --port PORT --esp ESP_URL [--timeout S]

POST /send (JSON ``{"from", "to": [...], "subject", "text"}``, the ``X-Mailstorm-Id`` header): one message
sent at once through the official ``sendgrid`` SDK to ``ESP_URL`` (the run's ``{esp_http}``), the id
passed on as a custom arg, which the fake ESP's SendGrid API correlates. Answers 202 when the ESP
accepted it, 502 when the ESP refused it or the connection failed, 504 when the ESP did not answer within
``--timeout``: like most web apps it keeps no queue, so the ESP's trouble is its caller's. POST /events
takes the ESP's event webhooks (200). GET /health answers 200. Stdlib HTTP server, one thread per request.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, Mail

CORRELATION_HEADER = "X-Mailstorm-Id"
API_KEY = "SG.webapp-sut"


def send(esp: str, timeout: float, body: dict, cid: str) -> tuple[int, str]:
    """One message through the SendGrid SDK: (status for our caller, why)."""
    mail = Mail(
        from_email=body["from"],
        to_emails=body["to"],
        subject=body.get("subject") or "(no subject)",
        plain_text_content=body.get("text") or " ",
    )
    mail.custom_arg = CustomArg(CORRELATION_HEADER, cid)
    try:
        resp = SendGridAPIClient(API_KEY, host=esp).client.mail.send.post(
            request_body=mail.get(), timeout=timeout
        )
    except HTTPError as exc:
        return 502, f"ESP answered {exc.status_code}"
    except TimeoutError:
        return 504, "ESP did not answer in time"
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            return 504, "ESP did not answer in time"
        return 502, f"ESP unreachable: {exc.reason}"
    except (OSError, ValueError) as exc:  # reset mid-response, a broken status line
        return 502, f"ESP connection failed: {type(exc).__name__}: {exc}"
    return 202, resp.headers.get("X-Message-Id", "")


class Handler(BaseHTTPRequestHandler):
    server: App

    def do_GET(self) -> None:
        self._answer(200 if self.path == "/health" else 404, "ok")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path == "/events":
            self._answer(200, "ok")
            return
        if self.path != "/send":
            self._answer(404, "no such path")
            return
        try:
            body = json.loads(raw)
            cid = self.headers[CORRELATION_HEADER] or ""
        except (ValueError, TypeError):
            self._answer(400, "body must be JSON")
            return
        status, why = send(self.server.esp, self.server.timeout_s, body, cid)
        self._answer(status, why)

    def _answer(self, status: int, text: str) -> None:
        data = json.dumps({"status": status, "detail": text}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        if not str(args[1] if len(args) > 1 else "").startswith("2"):
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


class App(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, port: int, esp: str, timeout_s: float) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.esp = esp
        self.timeout_s = timeout_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--esp", required=True, help="the ESP's base URL (SendGrid API)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the ESP")
    args = parser.parse_args()
    if not args.esp:
        parser.error("--esp: the run's ESP serves no HTTP API (set esp.http_port)")
    with App(args.port, args.esp.rstrip("/"), args.timeout) as app:
        app.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
