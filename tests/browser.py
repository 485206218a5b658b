"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol on a pipe, with the
standard library only: open local pages, wait for each to load, and return its console errors,
uncaught exceptions and failed loads, what a script evaluated in the page found, and a
screenshot.

--remote-debugging-pipe: Chromium reads commands on fd 3 and writes answers and events on
fd 4, each a JSON message ended by NUL. The browser's own connection opens a page target and
attaches to it (flatten: the page's messages carry its sessionId on the same pipe).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-pipe")
WIDTH = 1280


def chromium() -> str:
    """The chromium binary; a test skips without it, except under CI, where it fails."""
    path = shutil.which("chromium")
    if path is None:
        message = "chromium is not installed (scripts/setup installs Debian's chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Loaded:
    errors: list[str] = field(default_factory=list)   # exceptions, console.error, Log entries of level error
    found: Any = None                                  # what PROBE evaluated to, after the page loaded
    png: bytes = b""


class _Pipe:
    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int) -> None:
        self.proc, self.out, self.inp = proc, to_browser, from_browser
        self.deadline = 0.0
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.inp], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self.inp, 1 << 20)
            if not chunk:
                raise ConnectionError(f"chromium closed the pipe (exit {self.proc.poll()})")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.out, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._message()
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str, session: str) -> None:
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            self.events.append(self._message())


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for event in events:
        params = event.get("params", {})
        if event.get("method") == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            out.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif event.get("method") == "Log.entryAdded" and params["entry"].get("level") == "error":
            out.append(f"{params['entry'].get('source')}: {params['entry'].get('text')}")
    return out


class Chromium:
    """One headless browser for a test module: `with Chromium() as browser: browser.load(...)`;
    each page opens in a tab of its own (a launch costs about 2.5 s; a page, its own load)."""

    def __init__(self, height: int = 2400) -> None:
        binary = chromium()
        self.height = height
        self._profile = tempfile.TemporaryDirectory(prefix="opsctl-chromium-")
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        argv = [binary, *FLAGS, f"--user-data-dir={self._profile.name}", f"--window-size={WIDTH},{height}"]
        # bash (dash takes no fd above 9) puts the pipe's ends on fds 3 and 4, where chromium looks.
        proc = subprocess.Popen(["bash", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "bash", *argv],
                                pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._pipe = _Pipe(proc, to_browser_w, from_browser_r)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *_exc: object) -> None:
        pipe = self._pipe
        pipe.deadline = time.monotonic() + 10
        try:
            pipe.call("Browser.close")
        except (OSError, TimeoutError, ConnectionError, RuntimeError):
            pass
        os.close(pipe.out)
        os.close(pipe.inp)
        try:
            pipe.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pipe.proc.kill()
            pipe.proc.wait()
        self._profile.cleanup()

    def load(self, page: Path, probe: str = "null", timeout: float = 60.0, settle: float = 0.5) -> Loaded:
        """Open PAGE (a local file), wait for its load event and SETTLE seconds more (plots draw
        after load's promise chain), evaluate PROBE (a JavaScript expression whose value is
        JSON), and take a screenshot of the top HEIGHT pixels at WIDTH."""
        pipe = self._pipe
        pipe.deadline = time.monotonic() + timeout
        pipe.events = []
        target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
        session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            pipe.call(f"{domain}.enable", session)
        pipe.call("Emulation.setDeviceMetricsOverride", session, width=WIDTH, height=self.height,
                  deviceScaleFactor=1, mobile=False)
        pipe.call("Page.navigate", session, url=page.resolve().as_uri())
        pipe.wait_for("Page.loadEventFired", session)
        time.sleep(settle)
        value = pipe.call("Runtime.evaluate", session, expression=f"JSON.stringify({probe})",
                          returnByValue=True, awaitPromise=True)
        shot = pipe.call("Page.captureScreenshot", session, format="png")["data"]
        pipe.call("Target.closeTarget", targetId=target)
        found = json.loads(value["result"]["value"]) if value.get("result", {}).get("value") else None
        return Loaded(errors=_errors([e for e in pipe.events if e.get("sessionId") == session]), found=found,
                      png=base64.b64decode(shot))
