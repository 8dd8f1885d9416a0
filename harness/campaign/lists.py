"""A campaign's list: made from a seed or read from the user's CSV file, checked, and written as
``<run>/campaign/<id>.csv`` with the columns ``email,name,status`` (``subscribed`` | ``unsubscribed``).

The generated list is a pure function of the seed: the same names, addresses (``first.last.N@example.*``,
unique by their index; RFC 2606 domains) and unsubscribed rows every time. A user's file is refused with
one line naming the file, the row and the problem: not CSV, no email column, an address twice, an
address that is not one."""

from __future__ import annotations

import csv
import random
import re
from dataclasses import dataclass
from pathlib import Path

from mailstorm.errors import UserError
from mailstorm.harness.campaign.spec import CampaignSpec, UnsubscribedColumn

COLUMNS = ("email", "name", "status")
SUBSCRIBED, UNSUBSCRIBED = "subscribed", "unsubscribed"
DOMAINS = ("example.com", "example.net", "example.org")
_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_SNIFF_BYTES = 4096


@dataclass(frozen=True)
class CampaignList:
    """The list as written: where, how many rows, how many unsubscribed."""

    id: str
    path: Path
    recipients: int
    unsubscribed: int


def generate(n: int, unsubscribed_pct: float, seed: int) -> list[tuple[str, str, str]]:
    """``n`` seeded fake subscribers, ``round(n * pct / 100)`` of them unsubscribed (chosen by the seed).

    Names are drawn from Faker's en_US name tables with their weights, by one seeded ``random.Random``
    (Faker's own per-call generators cost ~250 us a name: 20,000 subscribers took 10 s)."""
    from faker.providers.person.en_US import Provider  # only when a list is made: a heavy import

    rng = random.Random(seed)
    firsts = rng.choices(list(Provider.first_names), weights=list(Provider.first_names.values()), k=n)
    lasts = rng.choices(list(Provider.last_names), weights=list(Provider.last_names.values()), k=n)
    rows = []
    for i, (first, last) in enumerate(zip(firsts, lasts, strict=True)):
        local = re.sub(r"[^a-z0-9.]", "", f"{first}.{last}".lower())
        rows.append([f"{local}.{i}@{DOMAINS[i % len(DOMAINS)]}", f"{first} {last}", SUBSCRIBED])
    for i in rng.sample(range(n), round(n * unsubscribed_pct / 100)):
        rows[i][2] = UNSUBSCRIBED
    return [tuple(r) for r in rows]


def read(
    path: Path, unsubscribed: float | UnsubscribedColumn | None, seed: int
) -> list[tuple[str, str, str]]:
    """The rows of the user's CSV file; ``UserError`` (file, row, problem) for anything not a list."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the list: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: row 1: not a CSV file (not UTF-8 text: byte {exc.start})") from None
    if "\x00" in text[:_SNIFF_BYTES]:
        raise UserError(f"{path}: row 1: not a CSV file (binary data)")
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader, None)
        if not header:
            raise UserError(f"{path}: row 1: not a CSV file (empty)")
        names = [h.strip().lower() for h in header]
        if "email" not in names:
            shown = ", ".join(repr(h) for h in header[:6])
            raise UserError(f"{path}: row 1: no 'email' column (the header has {shown})")
        col = _column(path, names, unsubscribed)
        email_i, name_i = names.index("email"), names.index("name") if "name" in names else None
        rows: list[tuple[str, str, str]] = []
        first_row: dict[str, int] = {}
        for n, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise UserError(f"{path}: row {n}: {len(row)} fields, the header has {len(header)}")
            email = row[email_i].strip()
            if not _ADDRESS.match(email):
                raise UserError(f"{path}: row {n}: invalid address {email!r}")
            low = email.lower()
            if low in first_row:
                raise UserError(
                    f"{path}: row {n}: duplicate address {email!r} (first on row {first_row[low]})"
                )
            first_row[low] = n
            status = SUBSCRIBED
            if col is not None:
                index, values = col
                status = UNSUBSCRIBED if row[index].strip().lower() in values else SUBSCRIBED
            rows.append((email, row[name_i].strip() if name_i is not None else "", status))
    except csv.Error as exc:
        raise UserError(f"{path}: row {reader.line_num}: not a CSV file ({exc})") from None
    if not rows:
        raise UserError(f"{path}: row 2: the list has no recipients")
    if isinstance(unsubscribed, float | int) and unsubscribed:
        for i in random.Random(seed).sample(range(len(rows)), round(len(rows) * unsubscribed / 100)):
            rows[i] = (rows[i][0], rows[i][1], UNSUBSCRIBED)
    return rows


def _column(
    path: Path, names: list[str], unsubscribed: float | UnsubscribedColumn | None
) -> tuple[int, frozenset[str]] | None:
    """Which column says "unsubscribed", and its values that do: the one named, else a ``status``
    column when no percentage is given."""
    if isinstance(unsubscribed, UnsubscribedColumn):
        wanted = unsubscribed.column.strip().lower()
        if wanted not in names:
            raise UserError(
                f"{path}: row 1: no {unsubscribed.column!r} column (named by unsubscribed.column)"
            )
        return names.index(wanted), frozenset(v.lower() for v in unsubscribed.values)
    if unsubscribed is None and "status" in names:
        return names.index("status"), frozenset({UNSUBSCRIBED})
    return None


def prepare(spec: CampaignSpec, out_dir: Path, seed: int) -> CampaignList:
    """Make or read the list and write ``out_dir/<id>.csv``."""
    seed = spec.seed if spec.seed is not None else seed
    if spec.recipients is not None:
        pct = spec.unsubscribed if isinstance(spec.unsubscribed, float | int) else 0.0
        rows = generate(spec.recipients, float(pct), seed)
    else:
        assert spec.list is not None
        rows = read(spec.list, spec.unsubscribed, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{spec.id}.csv"
    write(path, rows)
    gone = sum(1 for r in rows if r[2] == UNSUBSCRIBED)
    return CampaignList(spec.id, path, len(rows), gone)


def write(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        w.writerows(rows)


def load(path: Path) -> tuple[list[str], list[bool]]:
    """A written list back: the addresses (lower case) and which unsubscribed, in list order."""
    emails: list[str] = []
    gone: list[bool] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        for email, _name, status in reader:
            emails.append(email.lower())
            gone.append(status == UNSUBSCRIBED)
    return emails, gone
