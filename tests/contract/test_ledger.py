"""The ledger contract: every kind declared once and written by someone, the lines on disk as they always
were (old ledgers load, today's round-trip), and lines of unknown kinds or keys skipped, not fatal."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import msgspec
import orjson
import pytest

from mailstorm.ledger import (
    RECORDS,
    EspAccepted,
    Kind,
    LedgerReader,
    LedgerWriter,
    LoadSubmit,
    Record,
    SutBounced,
    decode,
    encode_line,
    field_types,
)
from mailstorm.reports.analysis import analyze
from tests.records import loose
from tests.reports.oracle import read_columns

ROOT = Path(__file__).resolve().parents[2]
RECORDS_PY = ROOT / "mailstorm" / "ledger" / "records.py"
# Where the processes that write ledgers live (the ledger package itself and the tests do not count).
WRITERS = [p for d in ("fake_esp", "harness", "scenarios", "reports") for p in (ROOT / d).rglob("*.py")]

# One line per place that wrote a record before the record classes existed, as it wrote it (key order
# included): each must still decode to its class, and a record written today must have the same keys.
OLD_LINES = [
    # fake ESP, SMTP: an acceptance, a cut, a fault's reply, a fault, an outage on the listener
    '{"t":1,"k":"esp.accepted","src":"esp-smtp-0","id":"run-0-1","mid":"m1@x.test","size":2048,"rcpts":1,'
    '"sha":"ab","proto":"smtp","api":null,"peer":"127.0.0.1","session":"0-9-1","key":null,"acked":true}',
    '{"t":2,"k":"esp.replied","src":"esp-smtp-0","proto":"smtp","phase":"eod","code":null,"text":null,'
    '"fault":"cut","session":"0-9-1","id":"run-0-1","peer":"127.0.0.1"}',
    '{"t":3,"k":"esp.replied","src":"esp-smtp-0","proto":"smtp","phase":"rcpt","code":451,'
    '"text":"451 4.7.1 later","fault":"grey","session":"0-9-2","id":null,"peer":"127.0.0.1"}',
    '{"t":4,"k":"esp.fault","src":"esp-smtp-0","fault":"slow","ftype":"latency","phase":"eod",'
    '"action":"delay","delay_s":0.2,"session":"0-9-1"}',
    '{"t":5,"k":"esp.fault","src":"esp-smtp-0","fault":"down","ftype":"outage","phase":"listener",'
    '"action":"refuse","state":"begin","session":null,"delay_s":0.0}',
    # fake ESP, HTTP: an acceptance, a refusal, a fault; a webhook post
    '{"t":6,"k":"esp.accepted","src":"esp-smtp-0","id":"run-0-2","mid":"m2@x.test","size":900,"rcpts":2,'
    '"sha":"cd","proto":"http","api":"sendgrid","peer":"127.0.0.1","session":"h-1","key":"SG.k",'
    '"acked":true,"esp_id":"abc"}',
    '{"t":7,"k":"esp.replied","src":"esp-smtp-0","proto":"http","api":"ses","phase":"http","code":429,'
    '"text":"Throttling","fault":"quota","session":"h-2","id":"run-0-3","peer":"127.0.0.1"}',
    '{"t":8,"k":"esp.fault","src":"esp-smtp-0","fault":"quota","ftype":"throttle","phase":"http",'
    '"action":"reply","delay_s":0.0,"session":"h-2","proto":"http","api":"ses"}',
    '{"t":9,"k":"esp.webhook","src":"esp-smtp-0","api":"sendgrid","event":"delivered","id":"run-0-2",'
    '"esp_id":"abc","rcpt":"a@b.test","event_id":"e1","url":"http://127.0.0.1:9/h","status":200,'
    '"attempt":1,"fault":null,"copy":0,"final":true,"ok":true,"error":null}',
    # load generator
    '{"t":10,"k":"load.submit","src":"load-0","id":"run-0-1","intended":1,"start":2,"end":9,"ok":true,'
    '"code":250,"text":"2.0.0 Ok","phase":"done","target":"127.0.0.1:2525","worker":0,"cls":"default",'
    '"size":2048,"rcpts":1}',
    '{"t":11,"k":"load.dropped","src":"load-0","intended":5,"count":3,"worker":0}',
    '{"t":12,"k":"load.started","src":"load-0","worker":0,"t0":1,"planned":null,"shape":"steady"}',
    # the reference pipeline, and Postfix's maillog
    '{"t":13,"k":"sut.accepted","src":"sut","id":"run-0-1","queue_id":17}',
    '{"t":14,"k":"sut.relayed","src":"sut","id":"run-0-1","attempt":1,"code":250}',
    '{"t":15,"k":"sut.deferred","src":"sut","id":"run-0-1","attempt":1,"code":null,"text":"refused",'
    '"retry_in_s":1.5}',
    '{"t":16,"k":"sut.bounced","src":"sut","id":"run-0-1","code":550,"text":"no","rcpts":["x@y.test"],'
    '"partial":true}',
    '{"t":17,"k":"sut.bounced","src":"sut","id":"run-0-1","code":550,"text":"no","attempt":3}',
    '{"t":18,"k":"sut.queue","src":"sut","depth":4}',
    '{"t":19,"k":"sut.accepted","src":"postfix","id":"run-0-4","queue_id":"4F2A1"}',
    '{"t":20,"k":"sut.relayed","src":"postfix","id":"run-0-4","queue_id":"4F2A1","attempt":1,"code":250}',
    '{"t":21,"k":"sut.deferred","src":"postfix","id":"run-0-4","queue_id":"4F2A1","attempt":1,"code":454,'
    '"text":"(host said: 454 slow down)","retry_in_s":null}',
    '{"t":22,"k":"sut.bounced","src":"postfix","id":"run-0-4","queue_id":"4F2A1","code":550,"text":"no"}',
    # the runner's timeline
    '{"t":23,"k":"run.started","src":"timeline","run_id":"r","name":"demo","seed":7,"duration_s":60,'
    '"prepared":3}',
    '{"t":24,"k":"run.phase","src":"timeline","phase":"load","t0":23}',
    '{"t":25,"k":"run.phase","src":"timeline","phase":"drain"}',
    '{"t":26,"k":"chaos.begin","src":"timeline","name":"outage","what":"esp_outage",'
    '"params":{"mode":"refuse"},"at_s":30.0}',
    '{"t":27,"k":"chaos.end","src":"timeline","name":"outage","what":"esp_outage",'
    '"params":{"mode":"refuse"},"at_s":42.0}',
    '{"t":28,"k":"probe","src":"timeline","url":"http://127.0.0.1:8/m","name":"q","status":200,'
    '"latency_s":0.001,"ok":true,"value":3.0}',
    '{"t":29,"k":"probe","src":"timeline","url":"http://127.0.0.1:8/h","name":"h","status":null,'
    '"error":"refused","latency_s":0.002,"ok":false}',
    '{"t":30,"k":"action","src":"timeline","what":"kill","target":"reference","ok":true,"detail":"ok",'
    '"started":29}',
    '{"t":31,"k":"run.ended","src":"timeline","reason":"drained"}',
]


def test_every_kind_has_its_record_class():
    """Each Kind is declared by exactly one record class whose name spells it (EspAccepted: esp.accepted)."""
    assert set(RECORDS) == set(Kind)
    for kind, cls in RECORDS.items():
        assert cls.kind is kind and issubclass(cls, Record)
        assert re.sub(r"(?<!^)([A-Z])", r".\1", cls.__name__).lower() == kind


@pytest.mark.parametrize("cls", RECORDS.values(), ids=lambda c: c.__name__)
def test_every_record_class_is_written_by_some_writer(cls):
    """Some process of the code base constructs each record class (a kind nobody writes is dead)."""
    pattern = re.compile(rf"\b{cls.__name__}\(")
    writers = [p for p in WRITERS if pattern.search(p.read_text())]
    assert writers, f"no writer constructs {cls.__name__}"


def test_every_field_is_documented_where_it_is_declared():
    """Under each field of each record class is its documentation (as Locust's Events documents events)."""
    tree = ast.parse(RECORDS_PY.read_text())
    undocumented = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name == "Kind":
            continue
        body = node.body
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.AnnAssign):
                doc = body[i + 1] if i + 1 < len(body) else None
                if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)):
                    undocumented.append(f"{node.name}.{ast.unparse(stmt.target)}")
    assert not undocumented


@pytest.mark.parametrize("line", OLD_LINES, ids=lambda s: orjson.loads(s)["k"])
def test_a_line_written_before_the_record_classes_reads_and_is_written_the_same(line):
    """Every writer's old line decodes to its class, and the class writes it back with the same keys and
    values (the order of keys is no part of the format: readers parse JSON)."""
    old = orjson.loads(line)
    rec = decode(line.encode())
    assert type(rec) is RECORDS[Kind(old["k"])] and (rec.t, rec.src) == (old["t"], old["src"])
    again = encode_line(rec, t=rec.t, src=rec.src)
    assert orjson.loads(again) == old


def test_a_record_written_today_round_trips(tmp_path):
    """A record written now reads back as the same record (typed), and as the dict the line holds."""
    acc = EspAccepted(
        id="run-0-1", mid="m@x", size=10, rcpts=2, sha="ff", proto="http", api="ses", peer="127.0.0.1",
        session="h-1", key="k", acked=False, esp_id="E1",
    )  # fmt: skip
    bounce = SutBounced(id="run-0-1", code=550, text="no", rcpts=["a@b.test"], partial=True)
    with LedgerWriter(tmp_path, "esp-smtp-0") as w:
        t1 = w.write(acc)
        t2 = w.write(bounce, t=t1 + 5)
    reader = LedgerReader(tmp_path)
    got = list(reader.typed())
    assert [(r.t, r.src) for r in got] == [(t1, "esp-smtp-0"), (t2, "esp-smtp-0")] and t2 == t1 + 5
    assert [msgspec.structs.replace(r, t=0, src="") for r in got] == [acc, bounce]
    first, second = reader.records()
    assert first == {"t": t1, "k": "esp.accepted", "src": "esp-smtp-0", **_fields(acc)}
    # Optional fields at their defaults are left out, as they always were.
    assert set(second) == {"t", "k", "src", "id", "code", "text", "rcpts", "partial"}


def _fields(rec: Record) -> dict:
    """The keys a line of ``rec`` holds: every field but an optional one left at its default."""
    defaults = {f.name: f.default for f in msgspec.structs.fields(type(rec))}
    return {
        f: getattr(rec, f)
        for f in field_types(type(rec))
        if f not in ("t", "src") and getattr(rec, f) != defaults.get(f, msgspec.NODEFAULT)
    }


def test_unknown_kinds_and_keys_are_skipped_and_counted_not_fatal(tmp_path):
    """A line of an unknown kind, extra keys, a record lacking a declared field and a torn line: the typed
    reader skips and counts them; the reports read what they can, as before."""
    with LedgerWriter(tmp_path, "load-0") as w:
        w.write(_submit("a"))
        loose(w, "load.teleported", id="b")  # a kind from a newer writer
        w.write_lines([encode_line(_submit("c"), t=5, src="load-0")[:-2] + b',"x":1}\n'])
        loose(w, Kind.LOAD_SUBMIT, t=6, id="d", ok=True)  # an older writer's partial record
    with (tmp_path / "load-0.jsonl").open("ab") as fh:
        fh.write(b'{"t":7,"k":"load.sub')
    reader = LedgerReader(tmp_path)
    assert [r.id for r in reader.typed()] == ["a", "c"]
    assert (reader.skipped, reader.torn_lines) == (2, 1)
    assert [r.id for r in LedgerReader(tmp_path).typed(LoadSubmit)] == ["a", "c"]
    assert [r.get("id") for r in LedgerReader(tmp_path).records()] == ["a", "b", "c", "d"]
    cols = read_columns(tmp_path)
    assert sorted(cols.ids[i] for i in cols.table(Kind.LOAD_SUBMIT)["id"]) == ["a", "c", "d"]
    assert cols.torn_lines == 1


def _submit(mid: str) -> LoadSubmit:
    return LoadSubmit(
        id=mid, intended=1, start=2, end=3, ok=True, code=250, text="ok", phase="done", target="t", worker=0,
        cls="default", size=1, rcpts=1,
    )  # fmt: skip


def test_a_run_directory_written_before_the_record_classes_still_reports():
    """tests/contract/old-run was written by the synthetic run of the previous ledger (partial records,
    the old run.json): `mailstorm report`'s analysis finds its known answer."""
    figures = analyze(ROOT / "tests" / "contract" / "old-run").figures
    assert figures["outcomes"] == {
        "submitted": 240, "delivered": 235, "duplicated": 1, "bounced": 1, "pending": 1, "lost": 1,
        "rejected": 1, "uncorrelated": 0,
    }  # fmt: skip
    assert [(f["name"], f["start_s"], f["end_s"]) for f in figures["faults"]] == [("esp-outage", 4.0, 6.0)]
    assert len(figures["probes"]) == 12 and figures["run"]["torn_lines"] == 0
