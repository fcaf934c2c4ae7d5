"""A real headless Chromium driven over the Chrome DevTools Protocol (CDP), for the sandbox's pages.

Debian's ``chromium`` package (scripts/install-system-deps.sh installs it). The browser is started
with ``--remote-debugging-port=0``; it writes the port it chose to ``DevToolsActivePort`` in its
profile folder. One page target is opened and spoken to over its WebSocket with aiohttp.

Clicks and typing go through ``Input.dispatchMouseEvent`` / ``Input.insertText`` (what a person's
mouse and keyboard produce), not through ``element.click()`` in the page.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class CdpError(RuntimeError):
    pass


class Page:
    """One browser tab."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.console: list[str] = []  # console messages and uncaught exceptions of the page
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                args = data["params"].get("args", [])
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.console.append("exception: " + str(details.get("exception", {}).get("description", details)))
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(CdpError("the browser closed the connection"))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = fut
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        reply = await asyncio.wait_for(fut, 30)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        """Run JavaScript in the page (awaiting a promise) and return its JSON value."""
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise CdpError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && document.body?.dataset.ready === '1'")

    async def wait_for(self, expression: str, within: float = 15.0) -> Any:
        """Poll a JavaScript expression until it is truthy (a liveness bound, not a speed check)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            with contextlib.suppress(CdpError):
                value = await self.evaluate(expression)
                if value:
                    return value
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {expression!r}; console: {self.console[-5:]}")
            await asyncio.sleep(0.1)

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (scrolled into view first)."""
        box = await self.wait_for(
            f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e || e.disabled) return null; e.scrollIntoView({{block: 'center'}});
            const r = e.getBoundingClientRect();
            return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null;
            }})()"""
        )
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            extra = {"button": "left", "clickCount": 1} if kind != "mouseMoved" else {}
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, **extra)

    async def type_into(self, selector: str, text: str) -> None:
        """Click the field, clear it, and type ``text`` as keyboard input."""
        await self.click(selector)
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).select()")
        await self.send("Input.dispatchKeyEvent", type="keyDown", key="Backspace", code="Backspace",
                        windowsVirtualKeyCode=8)
        await self.send("Input.dispatchKeyEvent", type="keyUp", key="Backspace", code="Backspace",
                        windowsVirtualKeyCode=8)
        await self.send("Input.insertText", text=text)

    async def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                            windowsVirtualKeyCode=13, **({"text": "\r"} if kind == "keyDown" else {}))

    async def set_files(self, selector: str, *paths: Path) -> None:
        """Choose files in an ``<input type=file>`` (as the file dialog would)."""
        doc = await self.send("DOM.getDocument", depth=0)
        node = await self.send("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector=selector)
        await self.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(p) for p in paths])

    async def screenshot(self, path: Path) -> Path:
        data = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))  # noqa: ASYNC240 (a test helper, small file)
        return path

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()


@contextlib.asynccontextmanager
async def chromium_page(profile: Path, *, width: int = 1280, height: int = 900,
                        dark: bool = False) -> AsyncIterator[Page]:
    """Start a headless Chromium with a fresh profile and yield one page; kill the browser after."""
    exe = chromium_path()
    if exe is None:
        raise RuntimeError("chromium is not installed")
    profile.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    args = [
        exe, "--headless=new", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
        f"--user-data-dir={profile}", f"--window-size={width},{height}", "--no-first-run",
        "--no-default-browser-check", "--disable-gpu", "--disable-dev-shm-usage", "--disable-extensions",
        "--disable-background-networking", "--disable-sync", "--mute-audio", "--hide-scrollbars",
        "--force-color-profile=srgb", "about:blank",
    ]
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    # Popen, not asyncio's subprocesses: the tests' qasync loop has no child watcher
    proc = subprocess.Popen(  # noqa: ASYNC220
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    http = aiohttp.ClientSession()
    page: Page | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {proc.returncode} before it listened")
            if loop.time() > deadline:
                raise RuntimeError("chromium did not open its DevTools port within 60 s")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        target = next(t for t in targets if t.get("type") == "page")
        ws = await http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024)
        page = Page(ws)
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                        mobile=False)
        if dark:
            await page.send("Emulation.setEmulatedMedia",
                            features=[{"name": "prefers-color-scheme", "value": "dark"}])
        yield page
    finally:
        if page is not None:
            with contextlib.suppress(Exception):
                await page.close()
        await http.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
