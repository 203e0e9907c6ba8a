#!/usr/bin/env python3
"""A test STAND-IN for GitLab's Commit Status API, a Slack incoming webhook and a
generic JSON webhook receiver. This is NOT GitLab and NOT Slack.

Neither service can run where the relay's Swift tests run, so this small,
standard-library-only HTTP/1.1 server (keep-alive, always a Content-Length)
copies the parts of their API contracts that the relay uses. It checks every
request against the documented contract, records it, and answers with the
status code and body that the real service gives.

usage: notify_standin.py --port 0 [--host 127.0.0.1] --gitlab-token TOKEN
                         [--max-seconds 600] [--verbose]
It prints exactly "listening <port>" on stdout, then serves until SIGTERM or
SIGINT (exit 0) or until --max-seconds have passed (exit 0).

GitLab: POST /api/v4/projects/<id>/statuses/<sha>  ("Set the pipeline status
of a commit"). Checked in the order GitLab (Grape) checks:
 1. Route. <id> is a numeric id or a URL-encoded full path (group%2Fproject,
    a%2Fb%2Fc); a raw "/" in it, any other method or any other /api/v4 path
    hits GitLab's catch-all: 404 {"error":"404 Not Found"}, token or not.
    /api/v3/* gets GitLab's 410.
 2. Body, as Grape parses it: application/json (an object gives parameters;
    any other JSON value gives none), form-urlencoded, multipart/form-data,
    or no Content-Type (Grape's default format, JSON). Invalid JSON: 400 with
    Grape's "message body does not match declared format" text. Any other
    Content-Type with a body: 415 "The provided content-type '...' is not
    supported.". Query parameters are merged under body parameters.
 3. Token: PRIVATE-TOKEN header, Authorization: Bearer, or the private_token
    / access_token parameter (GitLab accepts all four). None, or any one of
    them not equal to --gitlab-token: 401 {"message":"401 Unauthorized"}.
 4. Parameters, with Grape's coercion and messages, joined by ", " in
    {"error": ...}: state is required and one of pending, running, success,
    failed, canceled, skipped ("state is missing, state does not have a valid
    value" / "state does not have a valid value"); ref, target_url,
    description, name, context are strings; coverage a float; pipeline_id an
    integer ("<param> is invalid").
 5. Project: a numeric id, or a path of two or more non-empty segments;
    anything else: 404 {"message":"404 Project Not Found"}.
 6. Commit: <sha> must be 40 hex digits (answered in lower case); anything
    else: 404 {"message":"404 Commit Not Found"}.
 7. GitLab's CreateCommitStatusService: ref "" -> 404 "404 References for
    commit Not Found"; a pipeline_id with no pipeline of that id, sha (and
    ref, if given) -> 404 "404 Pipeline for pipeline_id, sha and ref Not
    Found". The newest matching pipeline is used, or one is created. The job
    updated is the pending/running status with that name (name, else context,
    else "default") and ref in that pipeline, else a new one (status
    "created"); target_url, description and coverage are assigned when given
    and not blank. Model validation then gives 400 {"message": {field:
    [errors]}}: name blank ("can't be blank"); ref, target_url, description
    over 255 characters ("is too long (maximum is 255 characters)");
    target_url not http(s) ("is blocked: Only allowed schemes are http,
    https") or without a host ("is blocked: URI is invalid").
 8. GitLab's state machine for external statuses (CommitStatus events, as
    apply_job_state! fires them): pending=enqueue! (created->pending);
    running=enqueue then run! (pending->running); success=success!,
    failed=drop!, canceled=cancel! (from created, pending or running);
    skipped=skip! (created/pending->skipped). A refused event gives 400 with
    state_machines' message, e.g. {"message":"Cannot transition status via
    :run from :running (Reason(s): Status cannot transition via \\"run\\")"};
    refused are exactly pending->pending, running->pending, running->running
    and running->skipped. A finished status (success, failed, canceled,
    skipped) is never updated again: the next post for that name creates a
    new status (201), as on GitLab, and the old one is marked retried. As on
    GitLab, a pipeline created in step 7 stays even when the status is then
    refused (so a later post without ref inherits that pipeline's ref).
 Success: 201 with GitLab's CommitStatus entity: id, sha, ref, status, name,
 target_url, description, created_at, started_at (set on entering running),
 finished_at (set on success/failed/canceled), allow_failure false, coverage,
 pipeline_id, author {id, username, name, state, locked, avatar_url,
 web_url}; times are UTC "YYYY-MM-DDTHH:MM:SS.mmmZ".

Slack: POST /services/<T...>/<B...>/<secret> (the shape of a real webhook
URL; any other /services path, or one not registered once registration is
used, gets 404 "no_service"). Body: application/json (charset allowed), or
form-urlencoded with a payload=<JSON> field (Slack's older, still accepted
form). Otherwise, or if it is not a JSON object, or "text" is not a string:
400 "invalid_payload". blocks not a list: 400 "invalid_blocks_format"; a block
that is not an object with a string "type", or over 50 blocks: 400
"invalid_blocks"; over 100 attachments: 400 "too_many_attachments". Neither a
non-empty "text", nor non-empty "blocks", nor non-empty "attachments": 400
"no_text". Success: 200, Content-Type text/html, body "ok" (as Slack). Other
methods: 405 "method_not_allowed" (a stand-in choice; Slack's answer is not
documented).

Generic webhook: POST /hook/<anything>: Content-Type application/json
(parameters allowed) and a JSON object body -> 200 {"ok":true}; otherwise 400
{"ok":false,"error":...}; other methods 405. Anything else: service "unknown",
404.

NOT implemented: every other GitLab endpoint (catch-all 404), resolving
branch/tag names or short SHAs as <sha> (GitLab does; here only 40-hex SHAs
exist, SHA-256 repositories neither), a real repository (a status without ref
goes to the newest pipeline's ref for that sha, else "main"), mapping a
numeric id to a path (they are different projects here), users, permissions
(403), protected refs, the job-count limit (422), the pipeline lock (409),
Slack channel/user overrides and errors (channel_not_found, ...), Slack rate
limits, response headers beyond Content-Type (and GitLab's X-Content-Type-
Options / X-Frame-Options). Unsure and chosen:
whether GitLab limits name to 255 characters (this stand-in does, with the
Rails message); target_url wording for URLs without a host; Slack's answer to
blocks it cannot parse and to non-POST methods.

Test-only control API under /_standin/ (JSON, no auth, never recorded):
  GET    /_standin/requests[?service=S]  every other request, in order:
         {seq, service, method, path (raw, without query), query, project
         (decoded, gitlab only), sha, headers {lower-case name: value},
         params (merged query+body for gitlab, else query), body (parsed JSON
         or raw text, null if empty), status, response, injected (null,
         "down" or "fault"), at (epoch seconds)}
  DELETE /_standin/requests              clears the log
  POST   /_standin/down {"seconds": N}   for N seconds every request gets 503:
         {"message":"503 Service Unavailable"} (text/plain
         "service_unavailable" under /services); still recorded, nothing
         applied. {"seconds": 0} ends it. GET shows it.
  POST   /_standin/faults {"pathContains", "status", "count"=1, "method"?,
         "body"?, "headers"?}  the next count matching requests get that
         status (recorded, not applied); GET lists, DELETE clears.
  POST   /_standin/slack/webhooks {"paths": [...]}  registers webhook paths;
         from then on only they exist. GET lists; DELETE accepts all again.
  GET    /_standin/gitlab/statuses       the stored commit statuses
  POST   /_standin/reset                 forgets everything above
  GET    /_standin/health                {"ok": true}
Every read has a 30 s socket timeout; bodies are capped at 8 MiB (413), an
unreadable body gets 400 (501 for a Transfer-Encoding other than chunked),
both as {"error": ...} and recorded; the log keeps the last 100000 entries
(older ones dropped, counted in GET /_standin/health).
"""

from __future__ import annotations

import argparse
import datetime
import email.parser
import email.policy
import http
import http.server
import json
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse

MAX_BODY_BYTES = 8 * 1024 * 1024
IDLE_TIMEOUT_SECONDS = 30
MAX_LOG_ENTRIES = 100_000
MAX_CHUNK_LINE = 1024
DEFAULT_REF = "main"

GITLAB_STATES = ("pending", "running", "success", "failed", "canceled", "skipped")
GITLAB_ROUTE = re.compile(r"^/api/v4/projects/([^/]+)/statuses/([^/]+)$")
SHA1_HEX = re.compile(r"^[0-9a-fA-F]{40}$")
PROJECT_SEGMENT = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.\-]*$")
SLACK_ROUTE = re.compile(r"^/services/(T[A-Z0-9]+)/(B[A-Z0-9]+)/([A-Za-z0-9]+)$")
FLOAT_TEXT = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
INT_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")

GRAPE_BAD_JSON = ("\nProblem:\n  message body does not match declared format\nResolution:\n"
                  "  when specifying application/json as content-type, you must pass valid "
                  "application/json in the request's 'body' ")
TOO_LONG = "is too long (maximum is 255 characters)"
GITLAB_SECURITY_HEADERS = [("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "SAMEORIGIN")]


# --------------------------------------------------------------------------- replies


class Reply:
    """One HTTP answer: status, body bytes, headers, and what the log shows of it."""

    def __init__(self, status, body=b"", content_type=None, headers=None, logged=None, close=False):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = list(headers or [])
        self.logged = logged
        self.close = close


def json_reply(status, obj, headers=None, close=False):
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Reply(status, data, "application/json", headers, logged=obj, close=close)


def gitlab_reply(status, obj):
    return json_reply(status, obj, GITLAB_SECURITY_HEADERS)


def text_reply(status, text, content_type="text/plain; charset=utf-8", headers=None, close=False):
    return Reply(status, text.encode("utf-8"), content_type, headers, logged=text, close=close)


def slack_reply(status, token):
    # Slack answers webhooks with a bare token and Content-Type text/html.
    return text_reply(status, token, "text/html")


def phrase(status):
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def utc_stamp(epoch):
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


def media_type(content_type):
    if content_type is None:
        return None
    value = content_type.split(";", 1)[0].strip().lower()
    return value or None


def is_blank(value):
    """Ruby's blank? for the values that reach it here."""
    return value is None or (isinstance(value, str) and value.strip() == "")


# --------------------------------------------------------------------------- Grape-like coercion


def coerce_string(value):
    if value is None or isinstance(value, str):
        return True, value
    if isinstance(value, bool):
        return True, "true" if value else "false"
    if isinstance(value, (int, float)):
        return True, repr(value) if isinstance(value, float) else str(value)
    return False, None


def coerce_float(value):
    if value is None or value == "":
        return True, None
    if isinstance(value, bool):
        return False, None
    if isinstance(value, (int, float)):
        return True, float(value)
    if isinstance(value, str) and FLOAT_TEXT.match(value):
        return True, float(value)
    return False, None


def coerce_integer(value):
    if value is None or value == "":
        return True, None
    if isinstance(value, bool):
        return False, None
    if isinstance(value, int):
        return True, value
    if isinstance(value, float) and value.is_integer():
        return True, int(value)
    if isinstance(value, str) and INT_TEXT.match(value):
        return True, int(value)
    return False, None


def validate_gitlab_params(raw):
    """Grape's validation for the statuses endpoint: (coerced params, error messages)."""
    errors = []
    params = {}
    if "state" not in raw:
        errors += ["state is missing", "state does not have a valid value"]
    else:
        ok, state = coerce_string(raw["state"])
        if not ok:
            errors.append("state is invalid")
        elif state not in GITLAB_STATES:
            errors.append("state does not have a valid value")
        params["state"] = state
    for key in ("ref", "target_url", "description", "name", "context"):
        ok, value = coerce_string(raw.get(key))
        if not ok:
            errors.append(f"{key} is invalid")
        params[key] = value
    ok, coverage = coerce_float(raw.get("coverage"))
    if not ok:
        errors.append("coverage is invalid")
    params["coverage"] = coverage
    ok, pipeline_id = coerce_integer(raw.get("pipeline_id"))
    if not ok:
        errors.append("pipeline_id is invalid")
    params["pipeline_id"] = pipeline_id
    return params, errors


def valid_project(project):
    if re.fullmatch(r"[0-9]+", project):
        return True
    segments = project.split("/")
    if len(segments) < 2:
        return False
    return all(PROJECT_SEGMENT.match(s) and s not in (".", "..") for s in segments)


def target_url_errors(url):
    errors = []
    if len(url) > 255:
        errors.append(TOO_LONG)
    try:
        parts = urllib.parse.urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname
    except ValueError:
        return errors + ["is blocked: URI is invalid"]
    if scheme not in ("http", "https"):
        errors.append("is blocked: Only allowed schemes are http, https")
    elif not host or any(c.isspace() or ord(c) < 32 for c in url):
        errors.append("is blocked: URI is invalid")
    return errors


# --------------------------------------------------------------------------- GitLab model


class GitLabModel:
    """Pipelines and external commit statuses, enough for CreateCommitStatusService."""

    def __init__(self):
        self.pipelines = []
        self.statuses = []
        self.next_pipeline_id = 1001
        self.next_status_id = 1

    def post_status(self, project, sha, p, base_url):
        ref_param = p["ref"]
        pipeline_id = p["pipeline_id"]

        candidates = [pl for pl in self.pipelines if pl["project"] == project and pl["sha"] == sha]
        if ref_param is not None:
            candidates = [pl for pl in candidates if pl["ref"] == ref_param]
        if pipeline_id is not None:
            candidates = [pl for pl in candidates if pl["id"] == pipeline_id]
        first = max(candidates, key=lambda pl: pl["id"]) if candidates else None

        if ref_param is not None:
            ref = ref_param
        else:
            ref = first["ref"] if first else DEFAULT_REF
        if is_blank(ref):
            return gitlab_reply(404, {"message": "404 References for commit Not Found"})
        if pipeline_id is not None and first is None:
            return gitlab_reply(404, {"message": "404 Pipeline for pipeline_id, sha and ref Not Found"})

        now = time.time()
        pipeline = first
        if pipeline is None:
            pipeline = {"id": self.next_pipeline_id, "project": project, "sha": sha, "ref": ref,
                        "created_at": now}
            self.next_pipeline_id += 1
            self.pipelines.append(pipeline)

        if p["name"] is not None:
            name = p["name"]
        elif p["context"] is not None:
            name = p["context"]
        else:
            name = "default"

        existing = [s for s in self.statuses
                    if s["pipeline_id"] == pipeline["id"] and s["ref"] == ref and s["name"] == name
                    and s["status"] in ("pending", "running")]
        stored = min(existing, key=lambda s: s["id"]) if existing else None
        if stored is not None:
            job = dict(stored)
        else:
            job = {"id": None, "project": project, "pipeline_id": pipeline["id"], "sha": sha,
                   "ref": ref, "name": name, "status": "created", "target_url": None,
                   "description": None, "coverage": None, "created_at": now, "queued_at": None,
                   "started_at": None, "finished_at": None, "retried": False}
        job["ref"] = pipeline["ref"]
        for key in ("target_url", "description"):
            if not is_blank(p[key]):
                job[key] = p[key]
        if p["coverage"] is not None:
            job["coverage"] = p["coverage"]

        invalid = self._validate(job)
        if invalid:
            return gitlab_reply(400, {"message": invalid})

        refused = self._transition(job, p["state"], now)
        if refused:
            return gitlab_reply(400, {"message": refused})

        if stored is not None:
            stored.update(job)
            job = stored
        else:
            job["id"] = self.next_status_id
            self.next_status_id += 1
            for other in self.statuses:
                if other["pipeline_id"] == job["pipeline_id"] and other["name"] == name:
                    other["retried"] = True
            self.statuses.append(job)
        return gitlab_reply(201, self.entity(job, base_url))

    @staticmethod
    def _validate(job):
        errors = {}
        name = job["name"]
        if is_blank(name):
            errors.setdefault("name", []).append("can't be blank")
        elif len(name) > 255:
            errors.setdefault("name", []).append(TOO_LONG)
        if job["ref"] is not None and len(job["ref"]) > 255:
            errors.setdefault("ref", []).append(TOO_LONG)
        if job["target_url"] is not None:
            url_errors = target_url_errors(job["target_url"])
            if url_errors:
                errors["target_url"] = url_errors
        if job["description"] is not None and len(job["description"]) > 255:
            errors.setdefault("description", []).append(TOO_LONG)
        return errors

    @staticmethod
    def _transition(job, state, now):
        """Fires the events GitLab fires; returns the refusal message, or None."""

        def refused(event):
            return (f"Cannot transition status via :{event} from :{job['status']} "
                    f"(Reason(s): Status cannot transition via \"{event}\")")

        def enqueue():
            if job["status"] in ("created", "skipped"):
                job["status"] = "pending"
                job["queued_at"] = now
                return True
            return False

        if state == "pending":
            if not enqueue():
                return refused("enqueue")
        elif state == "running":
            enqueue()  # the non-bang enqueue: a refusal is silent
            if job["status"] != "pending":
                return refused("run")
            job["status"] = "running"
            job["started_at"] = now
        elif state in ("success", "failed", "canceled"):
            event = {"success": "success", "failed": "drop", "canceled": "cancel"}[state]
            if job["status"] not in ("created", "pending", "running"):
                return refused(event)
            job["status"] = state
            job["finished_at"] = now
        elif state == "skipped":
            if job["status"] not in ("created", "pending"):
                return refused("skip")
            job["status"] = "skipped"
        else:  # unreachable: Grape already refused it
            return "invalid state"
        return None

    @staticmethod
    def entity(job, base_url):
        def stamp(value):
            return utc_stamp(value) if value is not None else None

        return {
            "id": job["id"],
            "sha": job["sha"],
            "ref": job["ref"],
            "status": job["status"],
            "name": job["name"],
            "target_url": job["target_url"],
            "description": job["description"],
            "created_at": stamp(job["created_at"]),
            "started_at": stamp(job["started_at"]),
            "finished_at": stamp(job["finished_at"]),
            "allow_failure": False,
            "coverage": job["coverage"],
            "pipeline_id": job["pipeline_id"],
            "author": {
                "id": 1,
                "username": "notify-standin",
                "name": "Notify Stand-in",
                "state": "active",
                "locked": False,
                "avatar_url": f"{base_url}/uploads/-/system/user/avatar/1/avatar.png",
                "web_url": f"{base_url}/notify-standin",
            },
        }

    def dump(self, base_url):
        out = []
        for job in self.statuses:
            item = self.entity(job, base_url)
            item["project"] = job["project"]
            item["retried"] = job["retried"]
            out.append(item)
        return out


# --------------------------------------------------------------------------- shared state


class StandinState:
    def __init__(self, gitlab_token):
        self.lock = threading.RLock()
        self.gitlab_token = gitlab_token
        self.reset()

    def reset(self):
        with self.lock:
            self.log = []
            self.dropped = 0
            self.seq = 0
            self.down_until = 0.0
            self.faults = []
            self.slack_paths = None  # None: every well-shaped /services path exists
            self.gitlab = GitLabModel()

    def down_remaining(self):
        return max(0.0, self.down_until - time.monotonic())

    def take_fault(self, method, path):
        for fault in self.faults:
            if fault["remaining"] <= 0:
                continue
            if fault["pathContains"] not in path:
                continue
            if fault.get("method") and fault["method"].upper() != method:
                continue
            fault["remaining"] -= 1
            self.faults = [f for f in self.faults if f["remaining"] > 0]
            return fault
        return None

    def record(self, entry):
        self.seq += 1
        entry["seq"] = self.seq
        self.log.append(entry)
        if len(self.log) > MAX_LOG_ENTRIES:
            excess = len(self.log) - MAX_LOG_ENTRIES
            del self.log[:excess]
            self.dropped += excess


# --------------------------------------------------------------------------- HTTP handler


class BodyError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "notify-standin"
    sys_version = ""
    timeout = IDLE_TIMEOUT_SECONDS
    disable_nagle_algorithm = True

    # ----- plumbing

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("notify-standin: %s - %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def dispatch(self):
        target = self.path
        if target.startswith(("http://", "https://")):
            parts = urllib.parse.urlsplit(target)
            path, query = parts.path or "/", parts.query
        else:
            target = target.split("#", 1)[0]
            path, _, query = target.partition("?")
        if path == "/_standin" or path.startswith("/_standin/"):
            self.control(path, query)
        else:
            self.service(path, query)

    def read_body(self):
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise BodyError(501, f"Transfer-Encoding {encoding!r} is not supported")
            return self.read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            size = int(length.strip())
        except ValueError:
            raise BodyError(400, "invalid Content-Length") from None
        if size < 0:
            raise BodyError(400, "invalid Content-Length")
        if size > MAX_BODY_BYTES:
            raise BodyError(413, "request body too large")
        data = self.rfile.read(size)
        if len(data) != size:
            raise BodyError(400, "request body ended early")
        return data

    def read_chunked(self):
        data = bytearray()
        while True:
            line = self.rfile.readline(MAX_CHUNK_LINE)
            if not line.endswith(b"\n"):
                raise BodyError(400, "malformed chunked body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BodyError(400, "malformed chunk size") from None
            if size < 0:
                raise BodyError(400, "malformed chunk size")
            if size == 0:
                for _ in range(100):  # trailer fields, bounded
                    trailer = self.rfile.readline(MAX_CHUNK_LINE)
                    if trailer in (b"\r\n", b"\n", b""):
                        return bytes(data)
                raise BodyError(400, "too many trailer fields")
            if len(data) + size > MAX_BODY_BYTES:
                raise BodyError(413, "request body too large")
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise BodyError(400, "chunked body ended early")
            data += chunk
            if self.rfile.readline(MAX_CHUNK_LINE) not in (b"\r\n", b"\n"):
                raise BodyError(400, "malformed chunked body")

    def send(self, reply):
        if reply.close:
            self.close_connection = True
        try:
            self.send_response(reply.status)
            no_body = reply.status in (204, 304)
            if reply.content_type and not no_body:
                self.send_header("Content-Type", reply.content_type)
            for name, value in reply.headers:
                self.send_header(name, value)
            if not no_body:
                self.send_header("Content-Length", str(len(reply.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and not no_body:
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True

    def header_map(self):
        result = {}
        for name, value in self.headers.items():
            key = name.lower()
            result[key] = f"{result[key]}, {value}" if key in result else value
        return result

    def base_url(self):
        host = self.headers.get("Host")
        if not host:
            host = "%s:%d" % self.server.server_address[:2]
        return f"http://{host}"

    # ----- control API

    def control(self, path, query):
        try:
            body = self.read_body()
        except BodyError as exc:
            self.send(json_reply(exc.status, {"error": exc.message}, close=True))
            return
        payload = None
        if body.strip():
            try:
                payload = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                self.send(json_reply(400, {"error": "control body must be JSON"}))
                return
        self.send(self.control_reply(self.command, path[len("/_standin"):].rstrip("/"), query, payload))

    def control_reply(self, method, route, query, payload):
        state = self.server.state
        with state.lock:
            if route == "/health" and method in ("GET", "HEAD"):
                return json_reply(200, {"ok": True, "recorded": len(state.log), "dropped": state.dropped})
            if route == "/requests":
                if method in ("GET", "HEAD"):
                    wanted = urllib.parse.parse_qs(query).get("service")
                    entries = [e for e in state.log if not wanted or e["service"] in wanted]
                    return json_reply(200, entries)
                if method == "DELETE":
                    cleared = len(state.log)
                    state.log = []
                    return json_reply(200, {"ok": True, "cleared": cleared})
            if route == "/down":
                if method in ("GET", "HEAD"):
                    return json_reply(200, {"down": state.down_remaining() > 0, "remaining": state.down_remaining()})
                if method == "POST":
                    seconds = payload.get("seconds") if isinstance(payload, dict) else None
                    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 86400:
                        return json_reply(400, {"error": 'body must be {"seconds": N} with 0 <= N <= 86400'})
                    state.down_until = time.monotonic() + seconds if seconds > 0 else 0.0
                    return json_reply(200, {"ok": True, "down": seconds > 0, "remaining": state.down_remaining()})
            if route == "/faults":
                if method in ("GET", "HEAD"):
                    return json_reply(200, state.faults)
                if method == "DELETE":
                    state.faults = []
                    return json_reply(200, {"ok": True})
                if method == "POST":
                    fault, problem = parse_fault(payload)
                    if problem:
                        return json_reply(400, {"error": problem})
                    state.faults.append(fault)
                    return json_reply(200, {"ok": True, "fault": fault, "faults": state.faults})
            if route == "/slack/webhooks":
                if method in ("GET", "HEAD"):
                    paths = sorted(state.slack_paths) if state.slack_paths is not None else []
                    return json_reply(200, {"acceptAll": state.slack_paths is None, "paths": paths})
                if method == "DELETE":
                    state.slack_paths = None
                    return json_reply(200, {"ok": True, "acceptAll": True})
                if method == "POST":
                    paths = payload.get("paths") if isinstance(payload, dict) else None
                    if isinstance(payload, dict) and isinstance(payload.get("path"), str):
                        paths = [payload["path"]]
                    if not isinstance(paths, list) or not all(isinstance(x, str) and SLACK_ROUTE.match(x) for x in paths):
                        return json_reply(400, {"error": 'body must be {"paths": ["/services/T.../B.../secret", ...]}'})
                    state.slack_paths = (state.slack_paths or set()) | set(paths)
                    return json_reply(200, {"ok": True, "paths": sorted(state.slack_paths)})
            if route == "/gitlab/statuses" and method in ("GET", "HEAD"):
                return json_reply(200, state.gitlab.dump(self.base_url()))
            if route == "/reset" and method == "POST":
                state.reset()
                return json_reply(200, {"ok": True})
        known = ("/health", "/requests", "/down", "/faults", "/slack/webhooks", "/gitlab/statuses", "/reset")
        if route in known:
            return json_reply(405, {"error": f"{method} is not supported on /_standin{route}"})
        return json_reply(404, {"error": f"unknown control endpoint /_standin{route}"})

    # ----- services

    def service(self, path, query):
        if path.startswith("/api/"):
            service = "gitlab"
        elif path.startswith("/services/"):
            service = "slack"
        elif path.startswith("/hook/") and len(path) > len("/hook/"):
            service = "webhook"
        else:
            service = "unknown"
        headers = self.header_map()
        entry = {
            "service": service,
            "method": self.command,
            "path": path,
            "query": query,
            "project": None,
            "sha": None,
            "headers": headers,
            "params": dict(urllib.parse.parse_qsl(query, keep_blank_values=True)),
            "body": None,
            "status": None,
            "response": None,
            "injected": None,
            "at": time.time(),
        }
        state = self.server.state
        try:
            body = self.read_body()
            body_error = None
        except BodyError as exc:
            body, body_error = b"", exc
        entry["body"] = describe_body(headers.get("content-type"), body)
        if service == "gitlab":
            describe_gitlab(path, query, headers, body, entry)

        with state.lock:
            if body_error is not None:
                reply = json_reply(body_error.status, {"error": body_error.message}, close=True)
            elif state.down_remaining() > 0:
                entry["injected"] = "down"
                if service == "slack":
                    reply = text_reply(503, "service_unavailable")
                else:
                    reply = json_reply(503, {"message": "503 Service Unavailable"})
            else:
                fault = state.take_fault(self.command, path)
                if fault is not None:
                    entry["injected"] = "fault"
                    reply = fault_reply(service, fault)
                elif service == "gitlab":
                    reply = self.gitlab(path, query, headers, body)
                elif service == "slack":
                    reply = self.slack(path, headers, body)
                elif service == "webhook":
                    reply = self.webhook(headers, body)
                else:
                    reply = json_reply(404, {"error": f"no route for {path} in the notify stand-in"})
            entry["status"] = reply.status
            entry["response"] = reply.logged
            state.record(entry)
        self.send(reply)

    def gitlab(self, path, query, headers, body):
        if path.startswith("/api/v3/"):
            return gitlab_reply(410, {"error": "API V3 is no longer supported. Use API V4 instead."})
        match = GITLAB_ROUTE.match(path)
        if match is None or self.command != "POST":
            return gitlab_reply(404, {"error": "404 Not Found"})
        project = urllib.parse.unquote(match.group(1))
        sha = urllib.parse.unquote(match.group(2))
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        try:
            params.update(gitlab_body_params(headers.get("content-type"), body))
        except BodyError as exc:
            return gitlab_reply(exc.status, {"error": exc.message})

        if not self.gitlab_authenticated(headers, params):
            return gitlab_reply(401, {"message": "401 Unauthorized"})
        coerced, errors = validate_gitlab_params(params)
        if errors:
            return gitlab_reply(400, {"error": ", ".join(errors)})
        if not valid_project(project):
            return gitlab_reply(404, {"message": "404 Project Not Found"})
        if not SHA1_HEX.match(sha):
            return gitlab_reply(404, {"message": "404 Commit Not Found"})
        return self.server.state.gitlab.post_status(project, sha.lower(), coerced, self.base_url())

    def gitlab_authenticated(self, headers, params):
        offered = []
        for key in ("private_token", "access_token"):
            value = params.get(key)
            if isinstance(value, str) and value.strip():
                offered.append(value)
        private = headers.get("private-token", "")
        if private.strip():
            offered.append(private.strip())
        authorization = headers.get("authorization", "")
        bearer = re.match(r"^\s*Bearer\s+(\S+)\s*$", authorization, re.IGNORECASE)
        if bearer:
            offered.append(bearer.group(1))
        return bool(offered) and all(token == self.server.state.gitlab_token for token in offered)

    def slack(self, path, headers, body):
        state = self.server.state
        if not SLACK_ROUTE.match(path):
            return slack_reply(404, "no_service")
        if state.slack_paths is not None and path not in state.slack_paths:
            return slack_reply(404, "no_service")
        if self.command != "POST":
            return slack_reply(405, "method_not_allowed")
        kind = media_type(headers.get("content-type"))
        message = None
        try:
            if kind == "application/json":
                message = json.loads(body.decode("utf-8"))
            elif kind == "application/x-www-form-urlencoded":
                form = dict(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True))
                if "payload" in form:
                    message = json.loads(form["payload"])
        except (UnicodeDecodeError, ValueError):
            message = None
        if not isinstance(message, dict):
            return slack_reply(400, "invalid_payload")
        text = message.get("text")
        if text is not None and not isinstance(text, str):
            return slack_reply(400, "invalid_payload")
        blocks = message.get("blocks")
        if blocks is not None:
            if not isinstance(blocks, list):
                return slack_reply(400, "invalid_blocks_format")
            if len(blocks) > 50 or not all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks):
                return slack_reply(400, "invalid_blocks")
        attachments = message.get("attachments")
        if attachments is not None:
            if not isinstance(attachments, list):
                return slack_reply(400, "invalid_payload")
            if len(attachments) > 100:
                return slack_reply(400, "too_many_attachments")
        if not (text or blocks or attachments):
            return slack_reply(400, "no_text")
        return slack_reply(200, "ok")

    def webhook(self, headers, body):
        if self.command != "POST":
            return json_reply(405, {"ok": False, "error": f"{self.command} not allowed; POST a JSON object"},
                              headers=[("Allow", "POST")])
        if media_type(headers.get("content-type")) != "application/json":
            return json_reply(400, {"ok": False, "error": "Content-Type must be application/json"})
        try:
            message = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return json_reply(400, {"ok": False, "error": "body is not valid JSON"})
        if not isinstance(message, dict):
            return json_reply(400, {"ok": False, "error": "body must be a JSON object"})
        return json_reply(200, {"ok": True})


def describe_body(content_type, body):
    """What the log shows of a request body: parsed JSON, raw text, or None."""
    if not body:
        return None
    text = body.decode("utf-8", errors="replace")
    kind = media_type(content_type)
    if kind is None or kind == "application/json" or kind.endswith("+json"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def describe_gitlab(path, query, headers, body, entry):
    """Fills project, sha and the merged params of a GitLab request for the log, even when
    the request is then answered by the down window or a fault."""
    match = GITLAB_ROUTE.match(path)
    if match is None:
        return
    entry["project"] = urllib.parse.unquote(match.group(1))
    entry["sha"] = urllib.parse.unquote(match.group(2))
    params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    try:
        params.update(gitlab_body_params(headers.get("content-type"), body))
    except BodyError:
        pass
    entry["params"] = params


def gitlab_body_params(content_type, body):
    """Body parameters as Grape/Rack would read them; raises BodyError like Grape."""
    if not body:
        return {}
    kind = media_type(content_type)
    if kind == "application/x-www-form-urlencoded":
        try:
            return dict(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise BodyError(400, "invalid byte sequence in UTF-8") from None
    if kind == "multipart/form-data":
        return multipart_params(content_type, body)
    if kind is None or kind == "application/json":
        try:
            value = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise BodyError(400, GRAPE_BAD_JSON) from None
        return value if isinstance(value, dict) else {"_json": value}
    raise BodyError(415, f"The provided content-type '{kind}' is not supported.")


def multipart_params(content_type, body):
    head = b"Content-Type: " + content_type.encode("latin-1", errors="replace") + b"\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise BodyError(400, "invalid multipart/form-data body")
    params = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        data = part.get_payload(decode=True) or b""
        params[name] = data.decode("utf-8", errors="replace")
    return params


def parse_fault(payload):
    if not isinstance(payload, dict):
        return None, "body must be a JSON object"
    contains = payload.get("pathContains")
    status = payload.get("status")
    count = payload.get("count", 1)
    if not isinstance(contains, str):
        return None, "pathContains must be a string"
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        return None, "status must be an integer from 200 to 599"
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100000:
        return None, "count must be an integer from 1 to 100000"
    fault = {"pathContains": contains, "status": status, "count": count, "remaining": count}
    if payload.get("method") is not None:
        if not isinstance(payload["method"], str):
            return None, "method must be a string"
        fault["method"] = payload["method"].upper()
    if "body" in payload:
        fault["body"] = payload["body"]
    if payload.get("headers") is not None:
        extra = payload["headers"]
        if not isinstance(extra, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
            return None, "headers must be an object of strings"
        fault["headers"] = extra
    return fault, None


def fault_reply(service, fault):
    status = fault["status"]
    extra = list(fault.get("headers", {}).items())
    if "body" in fault:
        body = fault["body"]
        if isinstance(body, str):
            kind = "text/html" if service == "slack" else "text/plain; charset=utf-8"
            return text_reply(status, body, kind, extra)
        return json_reply(status, body, extra)
    if service == "slack":
        token = "rollup_error" if status == 500 else phrase(status).lower().replace(" ", "_").replace("-", "_")
        return text_reply(status, token, "text/html", extra)
    if service == "webhook":
        return json_reply(status, {"ok": False, "error": f"{status} {phrase(status)}"}, extra)
    return json_reply(status, {"message": f"{status} {phrase(status)}"}, extra)


# --------------------------------------------------------------------------- server


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, state, verbose):
        self.state = state
        self.verbose = verbose
        super().__init__(address, Handler)


class Server6(Server):
    address_family = socket.AF_INET6


def positive_seconds(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description="GitLab commit-status / Slack webhook STAND-IN (not GitLab, not Slack)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--gitlab-token", required=True, help="the only token GitLab routes accept")
    parser.add_argument("--max-seconds", type=positive_seconds, default=600.0,
                        help="exit 0 after this many seconds (default 600)")
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)
    if not args.gitlab_token:
        parser.error("--gitlab-token must not be empty")

    state = StandinState(args.gitlab_token)
    server_class = Server6 if ":" in args.host else Server
    server = server_class((args.host, args.port), state, args.verbose)

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="notify-standin", daemon=True)
    worker.start()
    print(f"listening {server.server_address[1]}", flush=True)

    deadline = time.monotonic() + args.max_seconds
    while not stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            sys.stderr.write(f"notify-standin: --max-seconds {args.max_seconds:g} reached, exiting\n")
            break
        stop.wait(min(0.5, remaining))

    server.shutdown()
    server.server_close()
    worker.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
