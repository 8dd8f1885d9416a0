"""The records of one kind read whole from a ``Store``, null fields kept: what ``Store.whole`` holds,
less its loss. ``Store.whole`` leaves every null value out of the line it decodes, so a record whose
required field is null (an unanswered ``analytics.probe``'s ``status``, a ``campaign.answer`` without a
``code``) fails its class and is dropped; here a null stays in the line when its field is required (a
field with a default is left out, so an absent one takes its default). For the campaign and analytics
sections until store.py reads them so (then ``store.whole[cls]`` replaces ``records``).
"""

from __future__ import annotations

import msgspec
import orjson

from mailstorm.ledger import InvalidRecord, Record, decode
from mailstorm.reports.store import Store


def records(store: Store, cls: type[Record]) -> list[Record]:
    """Every record of ``cls``'s kind in ``store.rec``, as ``cls``, by time; lines that do not fit the
    class are skipped, as every reader skips them."""
    fields = msgspec.structs.fields(cls)
    names = [f.encode_name for f in fields]
    required = {f.encode_name for f in fields if f.required}
    typed = dict(store.rows("SELECT column_name, column_type FROM (DESCRIBE rec)"))
    cols = [n for n in names if n in typed]
    quoted = ", ".join(f'"{n}"' for n in cols)
    got = store.rows(f"SELECT t, {quoted} FROM rec WHERE k = ?", [str(cls.kind)])
    out: list[Record] = []
    for t, *values in got:
        line: dict[str, object] = {"k": str(cls.kind), "t": t}
        for n, v in zip(cols, values, strict=True):
            if v is None and n not in required:
                continue
            line[n] = orjson.loads(v) if typed[n] == "JSON" and v is not None else v
        try:
            out.append(decode(orjson.dumps(line)))
        except InvalidRecord:
            continue
    out.sort(key=lambda r: r.t)
    return out
