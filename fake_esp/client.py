"""ControlClient: the synchronous client of the fake ESP's control API.

urllib only, so it works in any process (the runner, the pytest process, a gevent-patched Locust
worker) without an event loop. Errors map to the project's hierarchy: a spec the ESP refused (400) is a
``ConfigError`` carrying the ESP's one-line message naming the field; a missing or wrong token (401) a
``UserError``; an ESP that cannot be reached or answers nonsense a ``HarnessError``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from mailstorm.errors import ConfigError, HarnessError, UserError

TOKEN_HEADER = "Authorization"


class ControlClient:
    """Talks to one fake ESP's control API at ``base_url`` (``http://127.0.0.1:8025``)."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None, wait: float = 0.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header(TOKEN_HEADER, f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout + wait) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = _error_text(exc)
            if exc.code == 400:
                raise ConfigError(detail) from None
            if exc.code == 401:
                raise UserError(f"fake ESP control API at {self.base_url}: {detail}") from None
            if exc.code == 404:
                raise UserError(f"fake ESP control API: {detail}") from None
            raise HarnessError(f"fake ESP control API {method} {path}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HarnessError(f"fake ESP control API at {self.base_url} unreachable: {reason}") from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise HarnessError(f"fake ESP control API {method} {path}: answer is not JSON") from None

    def add_fault(self, spec: dict[str, Any]) -> str:
        """Add a fault; returns its id (its ``name`` when given)."""
        return self._call("POST", "/faults", spec)["id"]

    def replace_fault(self, fault_id: str, spec: dict[str, Any]) -> str:
        """Replace fault ``fault_id`` (its per-key state starts afresh); returns the id."""
        return self._call("PUT", f"/faults/{fault_id}", spec)["id"]

    def remove_fault(self, fault_id: str) -> None:
        self._call("DELETE", f"/faults/{fault_id}")

    def faults(self) -> list[dict[str, Any]]:
        """Every active or pending fault: {id, spec, added_at, active_from, expires_at}."""
        return self._call("GET", "/faults")["faults"]

    def reset(self) -> None:
        """Remove every fault and forget all fault state (buckets, greylist triplets); counters stay."""
        self._call("POST", "/reset")

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")

    def counters(self) -> dict[str, Any]:
        """{sessions, accepted, replies: {code: n}, faults: {id: n}, cut, workers} over all workers."""
        return self._call("GET", "/counters")

    def messages(
        self,
        *,
        rcpt: str | None = None,
        sender: str | None = None,
        id: str | None = None,  # the correlation id
        header: str | Sequence[str] = (),
        since: float | str | None = None,
        until: float | str | None = None,
        offset: int = 0,
        limit: int | None = None,
        body: bool = False,
        min: int | None = None,  # the long poll: answer once this many match
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """GET /messages: the latest accepted messages that match, newest first, as the ESP answers
        (``{total, count, messages: [...], ...}``). With ``min``, the ESP answers as soon as that many
        match, or after ``timeout`` s with what there is: a test waits for mail without sleeping."""
        params: list[tuple[str, Any]] = [
            (k, v)
            for k, v in (("rcpt", rcpt), ("sender", sender), ("id", id), ("since", since), ("until", until))
            if v is not None
        ]
        params += [("header", h) for h in ([header] if isinstance(header, str) else header)]
        params += [("offset", offset)] if offset else []
        params += [("limit", limit)] if limit is not None else []
        params += [("body", 1)] if body else []
        if min is not None:
            params += [("min", min), ("timeout", timeout)]
        path = "/messages" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        return self._call("GET", path, wait=timeout if min is not None else 0.0)

    def message(self, message_id: str) -> dict[str, Any]:
        """GET /messages/{id}: one message with its headers (and body when the ESP stores bodies)."""
        return self._call("GET", f"/messages/{urllib.parse.quote(message_id, safe='')}")


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
        return str(body.get("error") or exc.reason)
    except ValueError:
        return str(exc.reason)
