"""aiosmtpd builds its command, hook and AUTH maps on every connection with dir() and
inspect.getmembers; fake_esp.smtp_wire.cache_introspection gives its module cached forms. The maps a
session gets must be the ones aiosmtpd's own forms give: same names, bound to that session and handler."""

from __future__ import annotations

import asyncio
import inspect

import aiosmtpd.smtp
import pytest
from aiosmtpd.smtp import SMTP

from mailstorm.fake_esp.smtp import Handler
from mailstorm.fake_esp.smtp_wire import cache_introspection


class Session(SMTP):
    async def smtp_XFOO(self, arg: str) -> None:  # a command of a subclass
        await self.push("250 foo")

    async def auth_CUSTOM(self, server, args):  # an AUTH mechanism of a subclass
        return None


def maps(handler: object) -> tuple[dict, dict, dict, SMTP]:
    async def build() -> SMTP:
        return Session(handler)

    s = asyncio.run(build())
    auth = {name: (impl.method, impl.is_builtin) for name, impl in s._auth_methods.items()}
    return s._smtp_methods, s._handle_hooks, auth, s


@pytest.fixture
def aiosmtpd_as_shipped():
    """aiosmtpd's module with its own dir and inspect (restored afterwards as it was)."""
    saved = dict(vars(aiosmtpd.smtp))
    vars(aiosmtpd.smtp).pop("dir", None)
    aiosmtpd.smtp.inspect = inspect
    yield
    vars(aiosmtpd.smtp).pop("dir", None)
    aiosmtpd.smtp.inspect = saved["inspect"]
    if "dir" in saved:
        aiosmtpd.smtp.dir = saved["dir"]


def test_cached_forms_give_aiosmtpds_own_maps(aiosmtpd_as_shipped):
    handler = Handler()
    handler.handle_EXTRA = lambda *a: None  # an instance attribute is found too, as dir() finds it
    own = maps(handler)
    cache_introspection()
    assert "dir" in vars(aiosmtpd.smtp)
    cached = maps(handler)
    for mine, theirs in zip(cached[:3], own[:3], strict=True):
        assert list(mine) == list(theirs)  # the same names, in the same order
    assert {"XFOO", "EHLO", "DATA"} <= set(cached[0]) and "EXTRA" in cached[1] and "CUSTOM" in cached[2]
    session = cached[3]
    assert all(m.__self__ is session for m in cached[0].values())  # bound to this session, not another's
    assert cached[2]["CUSTOM"][0].__self__ is session and cached[2]["PLAIN"][1] is True
    assert cached[1]["EXTRA"] is handler.handle_EXTRA
