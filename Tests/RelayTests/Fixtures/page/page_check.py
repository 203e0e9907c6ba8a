#!/usr/bin/env python3
"""Prove, with real headless Chromium, that a web page updates itself live (no reload).

The page is driven through the Chrome DevTools Protocol (CDP) over a websocket
(websocket-client). The test harness changes server-side state once this script says the
page is loaded; the script then checks that the page picked the change up in place.

Usage:
  python3 page_check.py --url URL --selector CSS --attribute NAME
                        --initial VALUE --final VALUE
                        --ready-file PATH --screenshot PATH
                        [--timeout 30] [--chromium /usr/bin/chromium]

What it does:
  1. starts Chromium headless (--headless=new, --no-sandbox, --disable-gpu, window 1280x800)
     with a fresh temporary --user-data-dir and --remote-debugging-port=0, at about:blank;
     reads the DevTools port from <user-data-dir>/DevToolsActivePort and attaches to the
     "page" target listed by http://127.0.0.1:PORT/json/list;
  2. enables Page and Runtime, navigates to --url and waits for the load event;
  3. plants a random marker (window.__pageCheckMarker) and records performance.timeOrigin;
  4. polls (every 100 ms) document.querySelector(CSS)?.getAttribute(NAME) until it equals
     --initial, then writes the word `loaded` to --ready-file (temp file + rename) and prints
     {"phase": "initial", "value": ...} on stderr;
  5. polls until the attribute equals --final, checks that no reload happened (marker still
     present, performance.timeOrigin unchanged, no new main-frame document), and saves a PNG
     screenshot of the 1280x800 viewport to --screenshot (temp file + rename). A screenshot is also
     attempted, best effort, when the check fails after the page was loaded.

Output: exactly one JSON object on stdout:
  {"ok": bool, "initial": <value seen at ready time or null>, "final": <last value seen>,
   "reloaded": bool, "elapsedMs": <ms from ready-file write to final value, or null>,
   "text": <innerText of the selected element or null>, "consoleErrors": [str, ...],
   "error": <message or null>}
Progress lines (JSON, one per line) go to stderr.

Exit codes: 0 ok; 1 check failed (timeout, reload detected, element missing, Chromium or
CDP failure, interrupted); 2 usage error (argparse).

Timing: --timeout bounds each phase separately (Chromium start-up, page load, initial value,
final value), so the worst case is about 4 x --timeout plus a few seconds of clean-up.
Chromium (its whole process group) is always killed and the temporary profile removed,
including on exceptions, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import websocket  # websocket-client

POLL_INTERVAL = 0.1  # seconds between attribute polls
RECV_SLICE = 0.05  # socket timeout for one websocket receive
VIEWPORT = (1280, 800)
RELOAD_GRACE = 3.0  # after a reload is seen, keep polling this long for --final, then stop


class CheckFailed(Exception):
    """The page check failed; the message goes into the JSON "error" field."""


class CDPError(Exception):
    """A CDP command answered with an error object."""


class Terminated(BaseException):
    """Raised from the SIGTERM handler so that clean-up runs."""


def log(obj: dict) -> None:
    print(json.dumps(obj), file=sys.stderr, flush=True)


def remaining(deadline: float) -> float:
    return deadline - time.monotonic()


# --------------------------------------------------------------------------- Chromium


class Browser:
    """A headless Chromium process with a throwaway profile."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.root = tempfile.mkdtemp(prefix="page-check-")
        self.profile = os.path.join(self.root, "profile")
        os.mkdir(self.profile)
        self.log_path = os.path.join(self.root, "chromium.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = [
            self.executable,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            # Quieter, more deterministic runs in containers and CI.
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            "--hide-scrollbars",
            "about:blank",
        ]
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: we can kill all its children
            )

    def log_tail(self, limit: int = 1500) -> str:
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace").strip()

    def wait_for_port(self, timeout: float) -> int:
        path = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(path, encoding="utf-8") as f:
                    first = f.readline().strip()
                if first.isdigit() and int(first) > 0:
                    return int(first)
            except OSError:
                pass
            if self.proc is not None and self.proc.poll() is not None:
                raise CheckFailed(
                    f"chromium exited with code {self.proc.returncode} before DevTools "
                    f"came up: {self.log_tail()}"
                )
            if remaining(deadline) <= 0:
                raise CheckFailed(
                    f"DevToolsActivePort did not appear within {timeout:g}s: {self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        proc = self.proc
        if proc is not None:
            for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    proc.wait(timeout=wait)
                    # The main process is gone; make sure helpers in its group are too.
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                    break
                except subprocess.TimeoutExpired:
                    continue
            self.proc = None
        for _ in range(10):
            shutil.rmtree(self.root, ignore_errors=True)
            if not os.path.exists(self.root):
                break
            time.sleep(0.1)


def find_page_websocket(port: int, timeout: float) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"http://127.0.0.1:{port}/json/list"
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            with opener.open(url, timeout=2) as resp:
                targets = json.load(resp)
            for t in targets:
                if t.get("type") == "page" and t.get("webSocketDebuggerUrl"):
                    return t["webSocketDebuggerUrl"]
            last = f"no page target in {len(targets)} target(s)"
        except (OSError, ValueError) as e:
            last = str(e)
        if remaining(deadline) <= 0:
            raise CheckFailed(f"no DevTools page target within {timeout:g}s ({last})")
        time.sleep(0.1)


# --------------------------------------------------------------------------- CDP


class CDP:
    """A minimal CDP session: numbered commands; events are stashed, never dropped."""

    def __init__(self, ws_url: str, timeout: float) -> None:
        # Connect the TCP socket ourselves: websocket-client would otherwise honour
        # http_proxy/https_proxy from the environment, even for 127.0.0.1.
        parsed = urllib.parse.urlsplit(ws_url)
        sock = socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 80), timeout=timeout
        )
        try:
            self.ws = websocket.create_connection(
                ws_url,
                timeout=timeout,
                socket=sock,
                suppress_origin=True,  # Chromium refuses handshakes with a foreign Origin
                enable_multithread=False,
            )
        except BaseException:
            sock.close()
            raise
        self.next_id = 0
        self.events: collections.deque = collections.deque(maxlen=10000)
        self.on_event = None  # called for every event as it arrives

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:
            pass

    def _recv(self, deadline: float) -> dict | None:
        """One message, or None when the slice (bounded by deadline) passed without one."""
        slice_ = max(0.001, min(RECV_SLICE, remaining(deadline)))
        self.ws.settimeout(slice_)
        try:
            raw = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return None
        except websocket.WebSocketConnectionClosedException as e:
            raise CheckFailed(f"DevTools connection closed: {e}") from e
        if not raw:
            return None
        msg = json.loads(raw)
        if "method" in msg and "id" not in msg:
            self.events.append(msg)
            if self.on_event is not None:
                self.on_event(msg)
        return msg

    def send(self, method: str, params: dict | None = None, timeout: float = 10.0) -> dict:
        self.next_id += 1
        cmd_id = self.next_id
        self.ws.settimeout(timeout)
        self.ws.send(json.dumps({"id": cmd_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            msg = self._recv(deadline)
            if msg is not None and msg.get("id") == cmd_id:
                if "error" in msg:
                    err = msg["error"]
                    raise CDPError(f"{method}: {err.get('message')} ({err.get('code')})")
                return msg.get("result", {})
            if remaining(deadline) <= 0:
                raise CheckFailed(f"no reply to CDP {method} within {timeout:g}s")

    def pump(self, seconds: float) -> None:
        """Receive (and stash) events for about `seconds`."""
        deadline = time.monotonic() + seconds
        while remaining(deadline) > 0:
            self._recv(deadline)

    def evaluate(self, expression: str, timeout: float = 5.0):
        res = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": False},
            timeout=timeout,
        )
        if "exceptionDetails" in res:
            raise CDPError(describe_exception(res["exceptionDetails"]))
        return res.get("result", {}).get("value")


def describe_exception(details: dict) -> str:
    exc = details.get("exception") or {}
    text = exc.get("description") or exc.get("value") or details.get("text") or "exception"
    where = details.get("url") or ""
    if where:
        text = f"{text} ({where}:{details.get('lineNumber', 0) + 1})"
    return str(text)


def describe_console_args(args: list) -> str:
    parts = []
    for a in args:
        if "value" in a:
            v = a["value"]
            parts.append(v if isinstance(v, str) else json.dumps(v))
        else:
            parts.append(a.get("description") or a.get("unserializableValue") or a.get("type", ""))
    return " ".join(parts)


# --------------------------------------------------------------------------- the check


class PageState:
    """What the event stream told us."""

    def __init__(self) -> None:
        self.console_errors: list[str] = []
        self.load_fired = False
        self.main_navigations = 0  # cross-document navigations of the main frame

    def on_event(self, msg: dict) -> None:
        method = msg.get("method")
        params = msg.get("params") or {}
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.console_errors.append(describe_console_args(params.get("args") or []))
        elif method == "Runtime.exceptionThrown":
            self.console_errors.append(describe_exception(params.get("exceptionDetails") or {}))
        elif method == "Page.loadEventFired":
            self.load_fired = True
        elif method == "Page.frameNavigated":
            frame = params.get("frame") or {}
            if not frame.get("parentId"):
                self.main_navigations += 1


def probe_expression(selector: str, attribute: str, marker: str) -> str:
    sel, attr, mark = json.dumps(selector), json.dumps(attribute), json.dumps(marker)
    return (
        "(() => { const el = document.querySelector(" + sel + ");"
        " return { found: !!el,"
        " value: el ? el.getAttribute(" + attr + ") : null,"
        " text: el ? el.innerText : null,"
        " marker: window.__pageCheckMarker === " + mark + ","
        " origin: performance.timeOrigin,"
        " readyState: document.readyState }; })()"
    )


def write_atomically(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def run_check(args: argparse.Namespace, result: dict, ctx: dict, state: PageState) -> None:
    browser = ctx["browser"]
    timeout = args.timeout
    browser.start()
    port = browser.wait_for_port(timeout)
    ws_url = find_page_websocket(port, timeout)
    cdp = ctx["cdp"] = CDP(ws_url, timeout=min(10.0, timeout))
    cdp.on_event = state.on_event
    _drive(args, result, cdp, state)


def _drive(args: argparse.Namespace, result: dict, cdp: CDP, state: PageState) -> None:
    timeout = args.timeout
    cmd_timeout = min(10.0, timeout)
    cdp.send("Page.enable", timeout=cmd_timeout)
    cdp.send("Runtime.enable", timeout=cmd_timeout)
    # Headless "new" takes window decorations off --window-size; pin the viewport itself
    # to 1280x800 so screenshots have a predictable size.
    cdp.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False},
        timeout=cmd_timeout,
    )

    # ---- navigate and wait for load
    state.load_fired = False
    cdp.events.clear()
    nav = cdp.send("Page.navigate", {"url": args.url}, timeout=timeout)
    if nav.get("errorText"):
        raise CheckFailed(f"navigation to {args.url} failed: {nav['errorText']}")
    # The load event only wakes us up early; the document itself is the authority (so a
    # stray late event from the initial about:blank cannot fool us).
    loaded_js = (
        "document.readyState === 'complete' && "
        "(location.href !== 'about:blank' || " + json.dumps(args.url == "about:blank") + ")"
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cdp.evaluate(loaded_js) is True:
                break
        except CDPError:
            pass  # execution context being replaced; try again
        if remaining(deadline) <= 0:
            raise CheckFailed(f"page did not finish loading within {timeout:g}s")
        state.load_fired = False
        wake = time.monotonic() + 0.2
        while not state.load_fired and remaining(wake) > 0:
            cdp.pump(0.02)

    # ---- plant the marker and remember this document's identity
    marker = secrets.token_hex(16)
    identity = cdp.evaluate(
        "(() => { window.__pageCheckMarker = " + json.dumps(marker) + ";"
        " return { origin: performance.timeOrigin, href: location.href }; })()"
    )
    origin = identity["origin"]
    navigations_at_load = state.main_navigations
    try:
        history = cdp.send("Page.getNavigationHistory", timeout=cmd_timeout)
        entry_count = len(history.get("entries", []))
    except CDPError:
        entry_count = None
    result["_loaded"] = True
    log({"phase": "load", "href": identity.get("href"), "timeOrigin": origin,
         "navigationEntries": entry_count})

    # Fail fast on a selector the browser cannot parse.
    bad = cdp.evaluate(
        "(() => { try { document.querySelector(" + json.dumps(args.selector) + "); return null; }"
        " catch (e) { return String(e.message || e); } })()"
    )
    if bad:
        raise CheckFailed(f"invalid selector {args.selector!r}: {bad}")

    probe = probe_expression(args.selector, args.attribute, marker)

    def reload_seen(snapshot: dict | None) -> bool:
        if state.main_navigations != navigations_at_load:
            return True
        if snapshot is None:
            return False
        return (not snapshot.get("marker")) or snapshot.get("origin") != origin

    def poll_until(wanted: str, phase: str) -> dict:
        deadline = time.monotonic() + args.timeout
        reload_at = None
        last: dict | None = None
        while True:
            started = time.monotonic()
            try:
                snap = cdp.evaluate(probe)
            except CDPError:
                snap = None  # e.g. execution context destroyed by a navigation
            if snap is not None:
                last = snap
                result["final"] = snap.get("value")
                result["text"] = snap.get("text")
                if snap.get("found") and snap.get("value") == wanted:
                    return snap
            if reload_seen(snap):
                result["reloaded"] = True
                if reload_at is None:
                    reload_at = time.monotonic()
                    log({"phase": phase, "event": "reload-detected"})
                elif time.monotonic() - reload_at > RELOAD_GRACE:
                    raise CheckFailed(
                        f"page reloaded while waiting for {args.attribute}={wanted!r}"
                        f" (last value {result['final']!r})"
                    )
            if remaining(deadline) <= 0:
                if last is None:
                    raise CheckFailed(f"timed out after {args.timeout:g}s waiting for"
                                      f" {phase} value: page could not be evaluated")
                if not last.get("found"):
                    raise CheckFailed(f"timed out after {args.timeout:g}s: no element"
                                      f" matches selector {args.selector!r}")
                raise CheckFailed(
                    f"timed out after {args.timeout:g}s waiting for {args.attribute}="
                    f"{wanted!r} on {args.selector!r} ({phase}); last value "
                    f"{last.get('value')!r}"
                )
            cdp.pump(max(0.0, POLL_INTERVAL - (time.monotonic() - started)))

    # ---- initial value, then tell the harness
    snap = poll_until(args.initial, "initial")
    result["initial"] = snap.get("value")
    write_atomically(args.ready_file, b"loaded")
    ready_at = time.monotonic()
    log({"phase": "initial", "value": snap.get("value")})

    # ---- final value
    snap = poll_until(args.final, "final")
    result["elapsedMs"] = int(round((time.monotonic() - ready_at) * 1000))
    log({"phase": "final", "value": snap.get("value"), "elapsedMs": result["elapsedMs"]})

    # ---- no reload?  Look once more after letting pending events arrive.
    cdp.pump(0.1)
    check = None
    retry_until = time.monotonic() + 2.0
    while check is None:
        try:
            check = cdp.evaluate(probe)
        except CDPError:
            if remaining(retry_until) <= 0:
                raise
            cdp.pump(0.1)
    if reload_seen(check):
        result["reloaded"] = True
    result["text"] = check.get("text")
    if result["reloaded"]:
        why = []
        if not check.get("marker"):
            why.append("marker gone")
        if check.get("origin") != origin:
            why.append("performance.timeOrigin changed")
        if state.main_navigations != navigations_at_load:
            why.append("main frame navigated")
        raise CheckFailed("page reloaded instead of updating live (" + ", ".join(why) + ")")

    take_screenshot(cdp, args.screenshot, cmd_timeout)
    result["_screenshot_done"] = True
    result["ok"] = True


def take_screenshot(cdp: CDP, path: str, timeout: float) -> None:
    shot = cdp.send(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": False, "fromSurface": True},
        timeout=timeout,
    )
    data = base64.b64decode(shot["data"])
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise CheckFailed("Page.captureScreenshot did not return a PNG")
    write_atomically(path, data)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Check with headless Chromium that a page updates live without reloading."
    )
    p.add_argument("--url", required=True)
    p.add_argument("--selector", required=True, help="CSS selector of the element to watch")
    p.add_argument("--attribute", required=True, help="attribute of that element to watch")
    p.add_argument("--initial", required=True, help="value to wait for before writing --ready-file")
    p.add_argument("--final", required=True, help="value the page must reach without a reload")
    p.add_argument("--ready-file", required=True, help="gets the word `loaded` once --initial is seen")
    p.add_argument("--screenshot", required=True, help="PNG written once --final is seen")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per phase (default 30)")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args(argv)
    if args.timeout <= 0:
        p.error("--timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def on_sigterm(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, on_sigterm)

    result: dict = {
        "ok": False, "initial": None, "final": None, "reloaded": False, "elapsedMs": None,
        "text": None, "consoleErrors": [], "error": None,
    }
    state = PageState()
    ctx: dict = {"browser": None, "cdp": None}
    try:
        ctx["browser"] = Browser(args.chromium)
        try:
            run_check(args, result, ctx, state)
        except CheckFailed as e:
            result["error"] = str(e)
        except CDPError as e:
            result["error"] = f"CDP error: {e}"
        except websocket.WebSocketException as e:
            result["error"] = f"DevTools websocket error: {e}"
        except OSError as e:
            result["error"] = f"{type(e).__name__}: {e}"
        except KeyboardInterrupt:
            result["error"] = "interrupted"
        except Terminated:
            result["error"] = "terminated (SIGTERM)"
        except Exception as e:  # keep the one-JSON-object contract
            result["error"] = f"unexpected {type(e).__name__}: {e}"
        # Best-effort screenshot of a failed page, for debugging.
        if (not result["ok"] and result.get("_loaded") and not result.get("_screenshot_done")
                and ctx["cdp"] is not None
                and result["error"] not in ("interrupted", "terminated (SIGTERM)")):
            try:
                take_screenshot(ctx["cdp"], args.screenshot, 5.0)
            except (Exception, KeyboardInterrupt, Terminated):
                pass
    finally:
        # Don't let a second Ctrl-C / SIGTERM interrupt the clean-up.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if ctx["cdp"] is not None:
            ctx["cdp"].close()
        if ctx["browser"] is not None:
            ctx["browser"].stop()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    result["consoleErrors"] = list(state.console_errors)
    out = {k: v for k, v in result.items() if not k.startswith("_")}
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
