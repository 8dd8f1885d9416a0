"""A real headless Chromium driven over the DevTools protocol, for the tests of pages people look at (the
interactive report, the fake ESP's page): load a page, list every request it made, evaluate script, move
the mouse, take screenshots. aiohttp's websocket client only; Debian's ``chromium`` binary.

    async with Browser(tmp_path) as b:
        await b.goto(page.as_uri())
        await b.mouse_move(400, 300)
        await b.screenshot(tmp_path / "hover.png")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class Browser:
    """One headless Chromium with one page (a tab) attached; ``requests`` lists every URL it asked for."""

    def __init__(self, tmp: Path, width: int = 1200, height: int = 900) -> None:
        self.tmp = tmp
        self.size = (width, height)
        self.requests: list[str] = []
        self.console_errors: list[str] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: dict[str, asyncio.Queue[dict[str, Any]]] = {}

    async def __aenter__(self) -> Browser:
        assert CHROMIUM is not None
        self.proc = await asyncio.create_subprocess_exec(
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
            f"--window-size={self.size[0]},{self.size[1]}",
            f"--user-data-dir={self.tmp / 'chromium-profile'}", "about:blank",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stderr is not None
        url = None
        async with asyncio.timeout(60):
            while url is None:
                line = await self.proc.stderr.readline()
                if not line:
                    raise RuntimeError("chromium exited before its DevTools endpoint was up")
                m = _LISTENING.search(line.decode(errors="replace"))
                url = m.group(1) if m else None
        self._drain = asyncio.ensure_future(self._drain_stderr())  # its pipe must never fill up
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(url, max_msg_size=64 * 1024 * 1024)
        self._reader = asyncio.ensure_future(self._read())
        target = await self.send("Target.createTarget", {"url": "about:blank"}, page=False)
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, page=False
        )
        self.session = attached["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            await self.send(f"{domain}.enable")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.size[0], "height": self.size[1], "deviceScaleFactor": 1, "mobile": False},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send("Browser.close", page=False), 10)
        self._reader.cancel()
        await self.ws.close()
        await self.http.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self._drain.cancel()

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        while await self.proc.stderr.readline():
            pass

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._waiting.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
            elif method == "Runtime.exceptionThrown":
                self.console_errors.append(json.dumps(params["exceptionDetails"])[:2000])
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                self.console_errors.append(json.dumps(params.get("args"))[:2000])
            self._events.setdefault(method, asyncio.Queue()).put_nowait(params)

    async def send(self, method: str, params: dict[str, Any] | None = None, page: bool = True) -> Any:
        mid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[mid] = fut
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if page:
            msg["sessionId"] = self.session
        await self.ws.send_str(json.dumps(msg))
        answer = await asyncio.wait_for(fut, 60)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    async def event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        return await asyncio.wait_for(self._events.setdefault(method, asyncio.Queue()).get(), timeout)

    async def goto(self, url: str) -> None:
        """Open ``url`` and return once its load event fired."""
        self._events.pop("Page.loadEventFired", None)
        await self.send("Page.navigate", {"url": url})
        await self.event("Page.loadEventFired")

    async def eval(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15, what: str = "condition") -> Any:
        """Evaluate ``expression`` until it is truthy (the page changes on its own: a live view)."""
        try:
            async with asyncio.timeout(timeout):
                while not (value := await self.eval(expression)):
                    await asyncio.sleep(0.05)  # polling interval of the condition, bounded by the timeout
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None
        return value

    async def mouse_move(self, x: float, y: float) -> None:
        await self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})

    async def drag(self, x0: float, x1: float, y: float) -> None:
        """Press at (x0, y), move to (x1, y) in steps, release: a drag as a hand makes it."""
        await self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x0, "y": y})
        press = {"x": x0, "y": y, "button": "left", "clickCount": 1}
        await self.send("Input.dispatchMouseEvent", {"type": "mousePressed", **press})
        for i in range(1, 11):
            x = x0 + (x1 - x0) * i / 10
            await self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y, "buttons": 1})
        release = {"x": x1, "y": y, "button": "left", "clickCount": 1}
        await self.send("Input.dispatchMouseEvent", {"type": "mouseReleased", **release})

    async def click(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}
            )

    async def screenshot(self, path: Path, full_page: bool = False) -> bytes:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            w, h = await self.eval("[document.body.scrollWidth, document.body.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}
        png = base64.b64decode((await self.send("Page.captureScreenshot", params))["data"])
        path.write_bytes(png)
        return png
