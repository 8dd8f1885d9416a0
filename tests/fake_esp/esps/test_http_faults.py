"""The HTTP side's fault handling, whatever the API: a refusal is in the ledger, a disconnect fault
resets the connection with nothing kept, an outage in hang mode answers nothing until the client gives
up. (Each ESP's own answers are in its own test module.)"""

from __future__ import annotations

import botocore.exceptions
import pytest
import requests
from postmarker.core import PostmarkClient

from mailstorm.ledger import Kind, LedgerReader
from tests.fake_esp.esps.test_postmark import PM, postmark_send
from tests.fake_esp.esps.test_ses import ses_send
from tests.fake_esp.http_support import accepted, new_id, post


def test_every_refusal_is_in_the_ledger(esp):
    """Each refused request is an esp.replied record (proto http) with the status it got."""
    before = LedgerReader(esp.ledger_dir).count(Kind.ESP_REPLIED)
    post(esp, "/email", PM, data=b"[")
    recs = [r for r in LedgerReader(esp.ledger_dir).merged([Kind.ESP_REPLIED])]
    assert len(recs) == before + 1
    assert (recs[-1]["proto"], recs[-1]["api"], recs[-1]["code"]) == ("http", "postmark", 422)


def test_disconnect_fault_resets_the_connection(esp):
    """A disconnect fault on phase http: the SDK sees a reset connection, no HTTP answer; the ledger
    records the cut (code null) and keeps nothing."""
    esp.control.add_fault({"name": "cut", "type": "disconnect", "phase": "http"})
    cid = new_id()
    with pytest.raises(
        (botocore.exceptions.ConnectionClosedError, botocore.exceptions.EndpointConnectionError)
    ):
        ses_send(esp, cid)
    with pytest.raises(requests.exceptions.ConnectionError):
        postmark_send(esp, new_id())
    cuts = [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_REPLIED]) if r["fault"] == "cut"]
    assert cuts and all(r["code"] is None and r["proto"] == "http" for r in cuts)
    assert accepted(esp, cid) == []


def test_outage_hang_gives_no_answer_until_the_client_times_out(esp):
    """An outage in hang mode: the request is accepted by TCP and never answered; the client times out."""
    esp.control.add_fault(
        {"name": "down", "type": "outage", "phase": "http", "duration_s": 3, "mode": "hang"}
    )
    client = PostmarkClient(server_token="pm-token", root_api_url=esp.http_url, timeout=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.emails.send(From="a@example.test", To="b@example.test", Subject="s", TextBody="b")
