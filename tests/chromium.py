"""Headless Chromium driven over the Chrome DevTools Protocol, for tests of rendered pages.

Starts Debian's ``chromium`` with a temporary profile and a debugging port,
opens a page, records console errors, uncaught exceptions and every request
the page makes, evaluates JavaScript in it and clicks like a mouse does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest


def chromium_binary() -> str:
    """The chromium executable, or skip the test saying how to get it."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium not found: install Debian's package (apt-get install -y chromium; .ci/run does)")


class Browser:
    def __init__(self, width: int = 1280, height: int = 2000):
        import websocket

        self.profile = tempfile.mkdtemp(prefix="histcli-chromium-")
        self.process = subprocess.Popen(
            [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-default-apps", f"--user-data-dir={self.profile}",
             "--remote-debugging-port=0", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its debugging port")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as answer:
            pages = [t for t in json.load(answer) if t["type"] == "page"]
        self.socket = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")

    def send(self, method: str, params: dict | None = None) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params or {}}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, start: int, timeout: float = 60) -> dict:
        """The first ``event`` recorded at or after index ``start`` of the events, waiting for it."""
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.events):
                if self.events[index].get("method") == event:
                    return self.events[index]
                index += 1
            if time.monotonic() > deadline:
                raise TimeoutError(event)
            self.events.append(json.loads(self.socket.recv()))

    def open(self, url: str) -> None:
        """Navigate to ``url``; what was recorded on earlier pages is forgotten, so that console errors and
        requests are this page's whichever tests ran before."""
        self.events = []
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired", 0)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def _centre(self, selector: str) -> list[float]:
        return self.evaluate(f"(function () {{ var e = document.querySelector({json.dumps(selector)}); "
                             "e.scrollIntoView({block: 'center'}); var r = e.getBoundingClientRect(); "
                             "return [r.left + r.width / 2, r.top + r.height / 2]; })()")

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) at the centre of the element."""
        x, y = self._centre(selector)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def hover(self, selector: str) -> None:
        """Move the mouse onto the centre of the element."""
        x, y = self._centre(selector)
        self.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})

    def set_viewport(self, width: int | None, height: int = 2000) -> None:
        """Lay pages out as in a window ``width`` CSS pixels wide; None: back to the window's own size."""
        if width is None:
            self.send("Emulation.clearDeviceMetricsOverride")
        else:
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and browser log errors seen so far."""
        errors = []
        for message in self.events:
            method, params = message.get("method"), message.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                errors.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(params["entry"]["text"])
        return errors

    def requests(self) -> list[str]:
        """URLs of every request the page made (the page's own file included)."""
        return [m["params"]["request"]["url"] for m in self.events if m.get("method") == "Network.requestWillBeSent"]

    def close(self) -> None:
        if getattr(self, "socket", None) is not None:
            self.socket.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

