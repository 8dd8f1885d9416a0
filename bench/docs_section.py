"""Writing one benchmark's section of docs/benchmarks.md (``--write-docs``), leaving the others alone."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def write_section(section: str, lines: list[str]) -> None:
    """Replace (or add at the end) the section headed ``section`` with ``lines``."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = "\n".join([section, "", *lines]) + "\n"
    if section in text:
        head, _, rest = text.partition(section)
        nxt = rest.find("\n## ")
        text = head + block + (rest[nxt:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    DOC.write_text(text)
