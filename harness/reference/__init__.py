"""The reference pipeline: mailstorm's embedded default system under test, a small but honest relay.

SMTP in (aiosmtpd, loopback only by default), a durable SQLite queue (each message committed before the
250 that acknowledges it), relay workers to the ESP over SMTP (aiosmtplib) or the SendGrid-shaped HTTP
API (aiohttp) with retry, exponential backoff and seeded jitter on 4xx and connection failures, a bounce
record on 5xx, a concurrency limit, and a restart that resumes the queue. Delivery is at-least-once: a
crash between the ESP's 250 and the row's deletion relays that message again, and the ledger shows it.

It runs as its own process (``python -m mailstorm.harness.reference --help``) so that a SIGKILL is a real
crash;
the ``reference`` target (mailstorm.harness.targets.reference) starts and acts on it.
"""
