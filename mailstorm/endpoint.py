"""Where the load submits: one SMTP host/port or HTTP URL (shared by the load side and the targets)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoint:
    """One address the load submits to: SMTP host/port, or an HTTP URL."""

    kind: str  # "smtp" | "http"
    host: str = "127.0.0.1"
    port: int = 0
    url: str | None = None

    def __str__(self) -> str:
        return self.url if self.kind == "http" and self.url else f"{self.host}:{self.port}"
