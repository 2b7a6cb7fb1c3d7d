"""Open a page in headless Chromium over the DevTools protocol: console messages, failed loads, a screenshot.

The websocket client is tornado's (installed with ipykernel, which the test extra needs anyway), so the
browser test needs no playwright or selenium. Debian: ``apt-get install -y chromium``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tornado.websocket import websocket_connect

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


@dataclass
class PageLoad:
    """What the browser reported while loading a page."""

    console: list[str] = field(default_factory=list)  # console.error / console.warn messages
    exceptions: list[str] = field(default_factory=list)  # uncaught script errors
    log_errors: list[str] = field(default_factory=list)  # browser log entries (failed resource loads, CSP, ...)
    failed_requests: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    images: list[dict[str, Any]] = field(default_factory=list)  # per <img>: complete, naturalWidth, src prefix
    size: tuple[int, int] = (0, 0)  # full page width, height in CSS pixels

    @property
    def errors(self) -> list[str]:
        return self.console + self.exceptions + self.log_errors + self.failed_requests


def load_page(url: str, screenshot: Path, width: int = 1280, timeout_s: float = 60.0) -> PageLoad:
    """Load ``url`` in a fresh headless Chromium, wait for the load event, and save a full-page PNG."""
    binary = chromium_path()
    if binary is None:
        raise FileNotFoundError("no chromium binary on PATH")
    # Chromium's helper processes can still write to the profile after the browser exits: the whole process
    # group is stopped before the profile goes, and a file written in that gap does not fail the test.
    with tempfile.TemporaryDirectory(prefix="audit-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", f"--window-size={width},900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            port = _devtools_port(Path(profile), proc, timeout_s)
            return asyncio.run(asyncio.wait_for(_drive(port, url, screenshot, width), timeout_s))
        finally:
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop the browser and every helper it started (renderer, GPU, crashpad), which share its process group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            proc.poll()  # reap the browser itself so the group can empty
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def _devtools_port(profile: Path, proc: subprocess.Popen, timeout_s: float) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode} before DevTools came up")
        if marker.exists() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        time.sleep(0.1)
    raise TimeoutError("chromium did not open its DevTools port")


async def _drive(port: int, url: str, screenshot: Path, width: int) -> PageLoad:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
        targets = json.load(response)
    target = next(t for t in targets if t["type"] == "page")
    ws = await websocket_connect(target["webSocketDebuggerUrl"], max_message_size=512 * 1024 * 1024)
    ids = itertools.count(1)
    result = PageLoad()
    pending: dict[int, asyncio.Future] = {}
    loaded = asyncio.get_running_loop().create_future()

    async def reader() -> None:
        while True:
            message = await ws.read_message()
            if message is None:
                return
            data = json.loads(message)
            if "id" in data and data["id"] in pending:
                pending.pop(data["id"]).set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert"):
                result.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                result.exceptions.append(details.get("exception", {}).get("description", details.get("text", "")))
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                result.log_errors.append(f"{params['entry']['source']}: {params['entry']['text']}")
            elif method == "Network.requestWillBeSent":
                result.requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed":
                result.failed_requests.append(f"{params.get('errorText')} ({params['requestId']})")
            elif method == "Page.loadEventFired" and not loaded.done():
                loaded.set_result(True)

    async def call(method: str, **params: Any) -> dict[str, Any]:
        key = next(ids)
        pending[key] = asyncio.get_running_loop().create_future()
        ws.write_message(json.dumps({"id": key, "method": method, "params": params}))
        answer = await pending[key]
        if "error" in answer:
            raise RuntimeError(f"DevTools {method}: {answer['error']}")
        return answer["result"]

    task = asyncio.create_task(reader())
    try:
        for domain in ("Runtime", "Log", "Network", "Page"):
            await call(f"{domain}.enable")
        await call("Page.navigate", url=url)
        await loaded
        await asyncio.sleep(0.5)  # let late console messages arrive
        probe = "JSON.stringify(Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth, src: i.src.slice(0, 30)})))"
        evaluated = await call("Runtime.evaluate", expression=probe, returnByValue=True)
        result.images = json.loads(evaluated["result"]["value"])
        metrics = await call("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        result.size = (int(size["width"]), int(size["height"]))
        shot = await call(
            "Page.captureScreenshot", format="png", captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": max(width, result.size[0]), "height": result.size[1], "scale": 1},
        )  # fmt: skip
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
    finally:
        task.cancel()
        ws.close()
    return result
