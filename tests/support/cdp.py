"""Drive a real headless Chromium over the DevTools protocol (for pages that need clicks and typing,
like the web console): open a URL, run JavaScript in the page, wait on a condition, take a screenshot.
Skips when Chromium is not installed, as tests/support/chromium.py does."""
from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.support.procs import wait_until


class PageError(AssertionError):
    """A script in the page threw."""


class Page:
    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:  # events arrive in between; skip them
            msg = json.loads(self._ws.recv(timeout=60))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise PageError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))

    def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in out:
            raise PageError(str(out["exceptionDetails"])[:2000])
        return out["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        wait_until(lambda: self.eval("document.readyState") == "complete", f"{url} to load")

    def wait(self, expression: str, what: str, timeout_s: float = 30.0) -> Any:
        """Wait until the expression is truthy in the page; its value (true for an element). On time-out,
        the page's DOM."""
        try:
            # an element found is truthy (by value it would come back as an empty, falsy, dict)
            check = f"(() => {{ const v = ({expression}); return v instanceof Node || v; }})()"
            return wait_until(lambda: self.eval(check), what, timeout_s)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the page says: {str(self.eval('document.body.outerHTML'))[:6000]}") from None

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
        path.write_bytes(data)
        return data


@contextmanager
def browser_page(profile_dir: Path, size: str = "1400,1000") -> Iterator[Page]:
    """A fresh headless Chromium with one blank page; closed on exit."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); needed for the console tests")
    proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={size}",
                             f"--user-data-dir={profile_dir}", "--remote-debugging-port=0", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        port = None
        for line in proc.stderr:  # Chromium names its DevTools port on stderr
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if found:
                port = found.group(1)
                break
        assert port is not None, "Chromium did not start its DevTools server"
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=30).json()
        target = next(p for p in pages if p["type"] == "page")
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=30) as ws:
            page = Page(ws)
            page.call("Page.enable")
            yield page
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
