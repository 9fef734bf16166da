"""Headless Firefox driven over WebDriver BiDi, for the tests that must run in Firefox as well.

Playwright cannot fetch its own Firefox build here (nothing is downloaded at run time), so the
tests use the distribution's ``firefox-esr`` (installed by ``scripts/test``), which speaks the
W3C WebDriver BiDi protocol itself: started with ``--remote-debugging-port``, it accepts a
WebSocket at ``ws://127.0.0.1:PORT/session``. This module is a small client of that protocol over
``websockets`` (a runtime dependency already): commands and their answers, the page's log and
failed responses, evaluating script, and real pointer clicks.

Firefox applies the remote agent's recommended preferences (no updates, telemetry, first-run
pages); the profile adds the few more that keep it off the network on a closed machine.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

LISTENING = re.compile(r"WebDriver BiDi listening on (ws://\S+)")

# Preferences written to the fresh profile's user.js: nothing to fetch, nothing to ask.
PREFS = {
    "app.normandy.enabled": False,
    "app.update.disabledForTesting": True,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.page": 0,
    "datareporting.policy.dataSubmissionEnabled": False,
    "extensions.update.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "services.settings.server": "http://127.0.0.1:9/",  # remote settings: a closed port, at once
    "toolkit.telemetry.enabled": False,
    "intl.accept_languages": "en-US",
    "intl.locale.requested": "en-US",
}


def firefox_binary() -> str | None:
    """The installed Firefox (Debian's ``firefox-esr``), or None."""
    return shutil.which("firefox-esr") or shutil.which("firefox")


class BiDiError(AssertionError):
    """A command the browser answered with an error, or a script that threw."""


class Firefox:
    """One headless Firefox process and its BiDi session.

    ``log`` collects the page's console errors and uncaught exceptions; ``failed_responses`` every
    HTTP answer of 400 or more that a page received (``"STATUS METHOD URL"``)."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900, timeout: float = 60) -> None:
        binary = firefox_binary()
        assert binary, "firefox is not installed (apt-get install firefox-esr)"
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "user.js").write_text(
            "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in PREFS.items()))
        self.stderr_path = profile.parent / f"{profile.name}-firefox.log"
        stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "--headless", "--remote-debugging-port", "0", "-no-remote", "-profile", str(profile),
             "--width", str(width), "--height", str(height), "about:blank"],
            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
            env={**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1"})
        stderr.close()
        self._ids = itertools.count(1)
        self.log: list[str] = []
        self.failed_responses: list[str] = []
        self._closing = ExitStack()
        try:
            self.ws: ClientConnection = self._closing.enter_context(
                connect(self._endpoint(timeout) + "/session", max_size=None, open_timeout=timeout))
            self.command("session.new", {"capabilities": {}})
            self.command("session.subscribe", {"events": ["log.entryAdded", "network.responseCompleted"]})
        except BaseException:
            self.close()
            raise

    def _endpoint(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = LISTENING.search(self.stderr_path.read_text(errors="replace"))
            if match:
                return match.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"firefox exited early:\n{self.stderr_path.read_text(errors='replace')}")
            time.sleep(0.1)
        raise RuntimeError(f"firefox never opened its BiDi port:\n{self.stderr_path.read_text(errors='replace')}")

    # --- the protocol ------------------------------------------------------------------------

    def command(self, method: str, params: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        """Sends one command and returns its result; events arriving meanwhile are recorded."""
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("type") == "event":
                self._event(message["method"], message["params"])
            elif message.get("id") == ident:
                if message.get("type") == "error":
                    raise BiDiError(f"{method}: {message.get('error')}: {message.get('message')}")
                return dict(message["result"])

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "log.entryAdded" and params.get("level") == "error":
            self.log.append(f"{params.get('type')}: {params.get('text')}")
        elif method == "network.responseCompleted":
            status = params["response"]["status"]
            if status >= 400:
                request = params["request"]
                self.failed_responses.append(f"{status} {request['method']} {request['url']}")

    # --- pages -------------------------------------------------------------------------------

    def new_tab(self) -> str:
        return str(self.command("browsingContext.create", {"type": "tab"})["context"])

    def navigate(self, context: str, url: str) -> None:
        self.command("browsingContext.navigate", {"context": context, "url": url, "wait": "complete"})

    def add_preload_script(self, function: str) -> None:
        """Runs ``function`` (JS source of a function) in every new document before its scripts."""
        self.command("script.addPreloadScript", {"functionDeclaration": function})

    def evaluate(self, context: str, expression: str) -> Any:
        """The value of a JS expression in the page (awaited when a promise), as JSON."""
        result = self.command("script.evaluate", {
            "expression": f"(async () => JSON.stringify(await ({expression})))()",
            "target": {"context": context}, "awaitPromise": True})
        if result.get("type") == "exception":
            details = result["exceptionDetails"]
            raise BiDiError(f"the script threw: {details.get('text')}")
        value = result["result"].get("value")
        return None if value is None else json.loads(value)

    def call(self, context: str, function: str, *args: Any) -> Any:
        """``function`` (JS source) called with JSON arguments; its result as JSON."""
        return self.evaluate(context, f"({function})(...{json.dumps(list(args))})")

    def wait_for(self, context: str, expression: str, timeout: float = 30) -> Any:
        """Polls a JS expression until it is truthy (a navigation in between is waited out)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(context, expression)
            except BiDiError as e:  # the document went away under the script: try again
                last = e
            else:
                if last:
                    return last
            time.sleep(0.1)
        raise AssertionError(f"never true in Firefox: {expression} (last: {last!r})")

    def click(self, context: str, selector: str) -> None:
        """A real pointer click (move, press, release) in the middle of the element."""
        box = self.call(context, """(selector) => {
            const e = document.querySelector(selector);
            if (!e) return null;
            e.scrollIntoView({block: 'center'});
            const r = e.getBoundingClientRect();
            return {x: Math.round(r.left + r.width / 2), y: Math.round(r.top + r.height / 2)};
        }""", selector)
        assert box, f"nothing to click: {selector}"
        self.command("input.performActions", {"context": context, "actions": [{
            "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
            "actions": [{"type": "pointerMove", "x": box["x"], "y": box["y"]},
                        {"type": "pointerDown", "button": 0}, {"type": "pointerUp", "button": 0}]}]})

    def type_into(self, context: str, selector: str, text: str) -> None:
        """Focuses the field by clicking it and types ``text`` key by key."""
        self.click(context, selector)
        keys = [a for ch in text for a in ({"type": "keyDown", "value": ch}, {"type": "keyUp", "value": ch})]
        self.command("input.performActions", {"context": context, "actions": [
            {"type": "key", "id": "keyboard", "actions": keys}]})

    def close(self) -> None:
        try:
            if hasattr(self, "ws"):
                try:
                    self.command("session.end", {}, timeout=5)
                except Exception:  # the browser may already be gone
                    pass
            self._closing.close()
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
