#!/usr/bin/env python3
"""A test STAND-IN for GitLab's Commit Status, Deployments, Environments and Freeze
Periods APIs, a Slack incoming webhook and a generic JSON webhook receiver. This is NOT
GitLab and NOT Slack.

Neither service can run where the relay's Swift tests run, so this small,
standard-library-only HTTP/1.1 server (Python 3.9+ for zoneinfo; keep-alive,
always a Content-Length but on 204)
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

GitLab deployments, environments and freeze periods (lib/api/deployments.rb,
environments.rb and freeze_periods.rb, read with the Deployment, Environment and
Ci::FreezePeriod models, their validators and Deployments::CreateService/UpdateService).
Routes, body parsing, tokens and the log work as for statuses above (a raw "/" in <id>,
or another method, is the catch-all 404; HEAD works on every GET route). Then, as in
Grape: parameter errors, 400 {"error": "a, b"} in declaration order; the project, 404
{"message":"404 Project Not Found"}; the record, ActiveRecord's 404 {"message":"404 Not
found"}. A model validation failure is 400 {"message": {field: [errors]}}. Ids are global
and increasing; names, iids and lookups are per project (a numeric id and a path are
different projects). Lists use GitLab's offset pagination: page (default 1), per_page
(default 20, at most 100, 0: "per_page has a value not allowed"), headers X-Page,
X-Per-Page, X-Next-Page, X-Prev-Page, X-Total, X-Total-Pages and Link (prev, next,
first, last).
 Deployments:
  POST .../deployments: environment, sha, ref (strings), tag (Grape Boolean: true/false,
   "true"/"false", "1"/"0", "yes"/"no", "t"/"f", ...) and status (running, success,
   failed, canceled), all required. A blank ref: 400 {"message": {"ref": ["The branch or
   tag does not exist"]}}, before anything is created. The environment is found by exact
   name, or created with the environment validations below and GitLab's guessed tier
   (Environment#guess_tier: dev|review|trunk -> development, test|tst|int|acpt|qa|qc|
   control|quality -> testing, stag|model|pre|demo|non -> staging, prod|live ->
   production, else other); it stays even when the deployment is then refused, as on
   GitLab. If the environment's last successful deployment has the same ref, tag, sha and
   status, GitLab returns that one (201, nothing new). sha: 40 hex digits here, kept as
   sent; else {"message": {"sha": ["The commit does not exist"]}} ("can't be blank"
   first when blank). 201 with GitLab's Deployment entity: id, iid, ref, sha, created_at,
   updated_at, user {id, username, name, state, locked, avatar_url, web_url}, environment
   (EnvironmentBasic: id, name, slug, external_url, created_at, updated_at), deployable
   (null; for one marked as made by CI the given object or a job stub), status.
  PUT .../deployments/<deployment_id>: status (same four, required). The id is cast as
   ActiveRecord casts it ("12abc" is 12, "abc" finds nothing); unknown: 404. One marked
   as made by CI: 403 {"message": "403 Forbidden - Deployments created using GitLab CI can
   not be updated using the API"}. Then Deployment's state machine, as its events allow
   (run: created|blocked -> running; succeed, drop, cancel: from any status except their
   own; GitLab's update_status maps running/success/failed/canceled to them):
       from        to: running  success  failed  canceled
       created     yes      yes      yes     yes
       running     -        yes      yes     yes
       success     -        -        yes     yes
       failed      -        yes      -       yes
       canceled    -        yes      yes     -
       blocked     yes      yes      yes     yes
       skipped     -        yes      yes     yes
   So a finished deployment may move to another finished status; only its own status
   again, or running from anything but created/blocked, is refused: 400 {"message":
   {"status": ["cannot transition via \\"run\\""]}} (event run, succeed, drop or cancel;
   state_machines' error on the record, rendered by render_validation_error!). finished_at
   is set on entering success/failed/canceled. 200 with the entity. API-made deployments
   start in the given status; created, blocked and skipped are only reachable through the
   control API (GitLab sets them itself).
  GET .../deployments: environment (exact name), status (created, running, success,
   failed, canceled, skipped, blocked), order_by (id, iid, created_at, updated_at,
   finished_at; iid and created_at sort as id, as in GitLab's finder), sort (asc, desc).
  GET .../deployments/<deployment_id> (an integer, else "deployment_id is invalid").
 Environments:
  GET .../environments: name (exact), search (case-insensitive prefix; under 3
   characters: 400 {"message": "400 Bad request - Search query is less than 3
   characters"}), states (available, stopping, stopped); name and search together:
   "name, search cannot be used together". Ordered by id.
  GET .../environments/<environment_id>: adds last_deployment (the latest success, without
   its environment, or null).
  POST .../environments: name (required), external_url, tier (production, staging,
   testing, development, other, else "tier does not have a valid value"; none: the
   guessed tier), cluster_agent_id (integer), kubernetes_namespace, flux_resource_path,
   description, auto_stop_setting (always, with_action; default always); a slug
   parameter: "slug is automatically generated and cannot be changed". 201.
  PUT .../environments/<environment_id>: the same except name (ignored, as since GitLab
   16.0); cluster_agent_id null removes the agent. 200.
  A cluster_agent_id with no such agent (0 included): 400 {"message": "400 Bad request -
  cluster agent doesn't exist or cannot be associated with this environment"}. Then the
  model, in GitLab's order: name blank, taken, over 255, or not matching ("can contain
  only letters, digits, '-', '_', '/', '$', '{', '}', '.', and spaces, but it cannot
  start or end with '/'"); slug taken (a taken name gives {"name": ["has already been
  taken"], "slug": ["has already been taken"]}: the slug is derived from the name); slugs
  as Gitlab::Slug::Environment (checked against GitLab's spec table); external_url over
  255, a data:/javascript:/vbscript: URL ("<scheme> scheme is not allowed") or an
  unparsable one ("URI is invalid"); description over 10000; kubernetes_namespace over 63
  characters, not a DNS label, or without an agent ("cannot be set without a cluster
  agent"); flux_resource_path over 255 or without a namespace ("cannot be set without a
  kubernetes namespace": GitLab ties the path to the namespace, the namespace to the
  agent). As on GitLab those two are checked only when the agent, namespace or path
  changes, and blank strings become null (nullify_if_blank). Entity: id, name, slug,
  external_url, created_at, updated_at, tier, state ("available"), auto_stop_at (null),
  cluster_agent {id, name, config_project, created_at, created_by_user_id},
  kubernetes_namespace and flux_resource_path (these three only when an agent is set: GitLab
  exposes them only then), description, auto_stop_setting.
 Freeze periods: GET .../freeze_periods (by created_at), POST .../freeze_periods,
  GET/PUT/DELETE (204) .../freeze_periods/<freeze_period_id> (PUT casts the id as
  ActiveRecord does). freeze_start, freeze_end: cron strings (required on POST,
  stripped); cron_timezone: default "UTC". Errors as Ci::FreezePeriod's validators:
  {"freeze_start": ["syntax is invalid"]} (GitLab's current CronValidator wording; older
  GitLab said " is invalid syntax"), "can't be blank" added when blank, an unknown zone
  {"cron_timezone": ["syntax is invalid"]}. Entity: id, freeze_start, freeze_end,
  cron_timezone, created_at, updated_at. Nothing enforces a freeze: GitLab only sets
  CI_DEPLOY_FREEZE in CI jobs and accepts API deployments during one.

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

NOT implemented: every other GitLab endpoint (catch-all 404; among them DELETE
of deployments and environments, deployment approvals and merge requests, environment
stop, stop_stale and review_apps), resolving
branch/tag names or short SHAs as <sha> (GitLab does; here only 40-hex SHAs
exist, SHA-256 repositories neither), a real repository (a status without ref
goes to the newest pipeline's ref for that sha, else "main"; every non-blank
deployment ref exists), mapping a
numeric id to a path (they are different projects here), users, permissions
(403; any valid token may do everything), protected refs and environments, the
environment entity's "project" object, deployment list filters updated_after/before
and finished_after/before (ignored), If-Unmodified-Since on DELETE, CI job tokens,
deployment webhooks, the job-count limit (422), the pipeline lock (409),
Slack channel/user overrides and errors (channel_not_found, ...), Slack rate
limits, response headers beyond Content-Type (and GitLab's X-Content-Type-
Options / X-Frame-Options). Unsure and chosen:
whether GitLab limits name to 255 characters (this stand-in does, with the
Rails message); target_url wording for URLs without a host; Slack's answer to
blocks it cannot parse and to non-POST methods. Deployments: the transition table is
from the newest Deployment model found (older GitLab ran only from created and had an
unblock event); tag null or "" (Grape makes it nil, GitLab then most likely fails on
the NOT NULL column): 400 "tag is invalid"; the create-returns-last-success rule orders
by finished_at, then id. Environments: the list order (id) and search (prefix, no
folder matching); by default every positive cluster_agent_id is an agent "agent-<id>" of
every project (register agents to narrow it), and config_project renders the
environment's project unless registered; the external_url parse check is Python's, not
Addressable's. Freeze periods: an omitted cron_timezone is "UTC" as documented (GitLab's
code passes the missing parameter as nil, which may instead give "can't be blank");
cron strings must have exactly five fields of numbers in range, names (jan-dec,
sun-sat), *, a-b (a <= b), /step, L (day of month) or day#n, while GitLab's Fugit
also takes six fields (seconds), @daily-style words and more; time zones are IANA
names from Python's zoneinfo database plus "UTC" (GitLab also maps Rails names such
as "Eastern Time (US & Canada)").

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
  GET    /_standin/gitlab/deployments    every deployment: the entity plus project, tag,
         finished_at, ci
  POST   /_standin/gitlab/deployments/<id>/ci [{"deployable": {...}}]  marks it as made
         by a CI job: PUT then gets 403; deployable becomes the given object, else a job
         stub {id, status, stage, name, ref, tag, created_at, user}
  POST   /_standin/gitlab/deployments/<id>/status {"status": S}  sets any of created,
         running, success, failed, canceled, skipped, blocked, as GitLab itself does
         (no state-machine check; finished_at set for finished ones)
  GET    /_standin/gitlab/environments   every environment (cluster_agent,
         kubernetes_namespace, flux_resource_path always present) plus project
  GET    /_standin/gitlab/freeze_periods every freeze period plus project
  POST   /_standin/gitlab/cluster_agents {"agents": [{"id": N, "name"?, "project"?,
         "config_project"?}]}  from then on only these agents exist (for their project,
         or every project without one); GET shows {acceptAll, agents}; DELETE: every
         positive id again
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
import hashlib
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
import zoneinfo

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

# Deployments, environments and freeze periods (GitLab's lib/api/{deployments,environments,
# freeze_periods}.rb and their models; see the module docstring).
GITLAB_COLLECTION_ROUTE = re.compile(r"^/api/v4/projects/([^/]+)/(deployments|environments|freeze_periods)$")
GITLAB_MEMBER_ROUTE = re.compile(r"^/api/v4/projects/([^/]+)/(deployments|environments|freeze_periods)/([^/]+)$")
DEPLOYMENT_STATUSES = ("created", "running", "success", "failed", "canceled", "skipped", "blocked")
DEPLOYMENT_API_STATUSES = ("running", "success", "failed", "canceled")
DEPLOYMENT_FINISHED = ("success", "failed", "canceled")
DEPLOYMENT_EVENTS = {"running": "run", "success": "succeed", "failed": "drop", "canceled": "cancel"}
DEPLOYMENT_SORT_VALUES = ("id", "iid", "created_at", "updated_at", "finished_at")
SORT_DIRECTIONS = ("asc", "desc")
ENVIRONMENT_TIERS = ("production", "staging", "testing", "development", "other")
ENVIRONMENT_STATES = ("available", "stopping", "stopped")
AUTO_STOP_SETTINGS = ("always", "with_action")
ENVIRONMENT_NAME = re.compile(r"[a-zA-Z0-9_${}. -]([a-zA-Z0-9_/${}. -]*[a-zA-Z0-9_${}. -])?")
ENVIRONMENT_NAME_MESSAGE = ("can contain only letters, digits, '-', '_', '/', '$', '{', '}', '.', and spaces, "
                            "but it cannot start or end with '/'")
ENVIRONMENT_SLUG = re.compile(r"[a-z]([a-z0-9-]*[a-z0-9])?")
ENVIRONMENT_SLUG_MESSAGE = ("can contain only lowercase letters, digits, and '-'. "
                            "Must start with a letter, and cannot end with '-'")
KUBERNETES_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
KUBERNETES_NAMESPACE_MESSAGE = ("can contain only lowercase letters, digits, and '-'. "
                                "Must start with a letter, and cannot end with '-'")
UNSAFE_URL_SCHEMES = ("data", "javascript", "vbscript")
TIER_GUESSES = [
    (re.compile(r"(dev|review|trunk)", re.IGNORECASE), "development"),
    (re.compile(r"(test|tst|int|ac(ce|)pt|qa|qc|control|quality)", re.IGNORECASE), "testing"),
    (re.compile(r"(st(a|)g|mod(e|)l|pre|demo|non)", re.IGNORECASE), "staging"),
    (re.compile(r"(pr(o|)d|live)", re.IGNORECASE), "production"),
]
AR_INTEGER_PREFIX = re.compile(r"\s*[+-]?\d+")
CRON_NUMBER = re.compile(r"[0-9]+")
CRON_MONTHS = {name: i + 1 for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
CRON_DAYS = {name: i for i, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
CRON_FIELDS = ((0, 59, None), (0, 23, None), (1, 31, None), (1, 12, CRON_MONTHS), (0, 7, CRON_DAYS))
GRAPE_TRUE = frozenset("1 on On ON t true True TRUE T y yes Yes YES Y".split())
GRAPE_FALSE = frozenset("0 off Off OFF f false False FALSE F n no No NO N".split())
CI_FORBIDDEN = "403 Forbidden - Deployments created using GitLab CI can not be updated using the API"
NO_CLUSTER_AGENT = "400 Bad request - cluster agent doesn't exist or cannot be associated with this environment"
RECORD_NOT_FOUND = {"message": "404 Not found"}
CONTROL_DEPLOYMENT_ROUTE = re.compile(r"/gitlab/deployments/([0-9]+)/(ci|status)")
GITLAB_DEPLOY_METHODS = {
    ("deployments", False): ("GET", "POST"), ("deployments", True): ("GET", "PUT"),
    ("environments", False): ("GET", "POST"), ("environments", True): ("GET", "PUT"),
    ("freeze_periods", False): ("GET", "POST"), ("freeze_periods", True): ("GET", "PUT", "DELETE"),
}
PAGINATION_SPEC = [("page", "integer", {"default": 1}), ("per_page", "integer", {"default": 20, "except_values": (0,)})]
ENVIRONMENT_FIELDS_SPEC = [
    ("external_url", "string", {}),
    ("slug", "string", {"absence": "is automatically generated and cannot be changed"}),
    ("tier", "string", {"values": ENVIRONMENT_TIERS}),
    ("cluster_agent_id", "integer", {}),
    ("kubernetes_namespace", "string", {}),
    ("flux_resource_path", "string", {}),
    ("description", "string", {}),
]


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


def coerce_boolean(value):
    """Grape's Boolean (dry-types Params::Bool); "" becomes nil as for every non-String type."""
    if value is None or value == "":
        return True, None
    if isinstance(value, bool):
        return True, value
    text = str(value) if isinstance(value, (str, int)) else None
    if text in GRAPE_TRUE:
        return True, True
    if text in GRAPE_FALSE:
        return True, False
    return False, None


GRAPE_COERCERS = {"string": coerce_string, "integer": coerce_integer, "boolean": coerce_boolean}


def grape_validate(raw, spec):
    """Grape's declared-parameter checks, in declaration order: (params, error messages).
    spec: [(name, kind, options)], options: required, values, except_values, absence (message),
    default, null_invalid (a stand-in choice, see the docstring). Only parameters that were
    given (or defaulted) appear in params, so a JSON null stays distinguishable from a
    missing key."""
    errors = []
    params = {}
    for name, kind, options in spec:
        present = name in raw
        if "absence" in options:
            if present:
                errors.append(f"{name} {options['absence']}")
            continue
        if not present:
            if options.get("required"):
                errors.append(f"{name} is missing")
                if "values" in options:
                    errors.append(f"{name} does not have a valid value")
            elif "default" in options:
                params[name] = options["default"]
            continue
        ok, value = GRAPE_COERCERS[kind](raw[name])
        if not ok:
            errors.append(f"{name} is invalid")
            continue
        if value is None and "default" in options:
            value = options["default"]
        if value is None and options.get("null_invalid"):
            errors.append(f"{name} is invalid")
            continue
        if "values" in options and (value is not None or options.get("required")) and value not in options["values"]:
            errors.append(f"{name} does not have a valid value")
            continue
        if value is not None and value in options.get("except_values", ()):
            errors.append(f"{name} has a value not allowed")
            continue
        params[name] = value
    return params, errors


def ar_integer(text):
    """How ActiveRecord casts an undeclared path id for find(): a leading integer, else none."""
    match = AR_INTEGER_PREFIX.match(text)
    return int(match.group(0)) if match else None


def base36(number):
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out


def environment_slug(name):
    """Gitlab::Slug::Environment#generate."""
    text = "" if name is None else name
    slug = re.sub(r"[^a-z0-9]", "-", text.lower())
    if not re.match(r"[a-z]", slug):
        slug = "env-" + slug
    slug = re.sub(r"-{2,}", "-", slug)
    if len(slug) > 24 or slug != text:
        slug = slug[:17]
        if not slug.endswith("-"):
            slug += "-"
        return slug + base36(int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16))[-6:]
    return slug[:-1] if slug.endswith("-") else slug


def guess_tier(name):
    """Environment#guess_tier: the tier GitLab picks when none is given."""
    for pattern, tier in TIER_GUESSES:
        if name is not None and pattern.search(name):
            return tier
    return "other"


def external_url_errors(url):
    """Environment's external_url checks (length, then safe_external_url's scheme test)."""
    errors = []
    if len(url) > 255:
        errors.append(TOO_LONG)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # raises for a port that is not a number
    except ValueError:
        return errors + ["URI is invalid"]
    scheme = parts.scheme.lower()
    if scheme in UNSAFE_URL_SCHEMES:
        errors.append(f"{scheme} scheme is not allowed")
    return errors


def cron_item_valid(item, index):
    low, high, names = CRON_FIELDS[index]

    def number(text):
        if CRON_NUMBER.fullmatch(text) and low <= int(text) <= high:
            return int(text)
        if names is not None and text.lower() in names:
            return names[text.lower()]
        return None

    base, slash, step = item.partition("/")
    if slash and not (CRON_NUMBER.fullmatch(step) and int(step) >= 1):
        return False
    if index == 4 and "#" in base:
        base, _, nth = base.partition("#")
        if slash or nth.upper() not in ("1", "2", "3", "4", "5", "L", "-1"):
            return False
        return number(base) is not None
    if base == "*":
        return True
    if index == 2 and base.upper() == "L" and not slash:
        return True
    first, dash, last = base.partition("-")
    start = number(first)
    if start is None:
        return False
    if dash:
        end = number(last)
        return end is not None and end >= start
    return True


def cron_valid(text):
    """Five cron fields as Fugit reads them (see the docstring for what is stricter here)."""
    if not isinstance(text, str):
        return False
    fields = text.split()
    if len(fields) != 5:
        return False
    return all(item and cron_item_valid(item, index)
               for index, field in enumerate(fields) for item in field.split(","))


_TIMEZONES = None


def timezone_valid(name):
    """An IANA time zone name (TZInfo's list), looked up in Python's zoneinfo database."""
    global _TIMEZONES
    if _TIMEZONES is None:
        _TIMEZONES = frozenset(zoneinfo.available_timezones()) | {"UTC"}
    return name in _TIMEZONES


def standin_user(base_url):
    """The user every accepted token belongs to (GitLab's UserBasic entity)."""
    return {
        "id": 1,
        "username": "notify-standin",
        "name": "Notify Stand-in",
        "state": "active",
        "locked": False,
        "avatar_url": f"{base_url}/uploads/-/system/user/avatar/1/avatar.png",
        "web_url": f"{base_url}/notify-standin",
    }


def stamp_or_none(epoch):
    return utc_stamp(epoch) if epoch is not None else None



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


class GitLabDeployModel:
    """Deployments, environments, cluster agents and freeze periods, kept per project."""

    def __init__(self):
        self.created = time.time()
        self.deployments = []
        self.environments = []
        self.freeze_periods = []
        self.next_deployment_id = 1
        self.next_environment_id = 1
        self.next_freeze_period_id = 1
        self.agents = None  # None: every positive id is an agent of every project

    # ----- lookups

    def environment(self, env_id):
        return next((e for e in self.environments if e["id"] == env_id), None)

    def project_environments(self, project):
        return [e for e in self.environments if e["project"] == project]

    def project_deployments(self, project):
        return [d for d in self.deployments if d["project"] == project]

    def agent(self, project, agent_id):
        """Clusters::AgentsFinder for the project, then find_by_id."""
        if agent_id is None or agent_id <= 0:
            return None
        if self.agents is None:
            return {"id": agent_id, "name": f"agent-{agent_id}", "project": None, "config_project": None,
                    "created_at": self.created}
        return next((a for a in self.agents if a["id"] == agent_id and a["project"] in (None, project)), None)

    def last_successful_deployment(self, env_id):
        """Environment#last_deployment: success, ordered by finished_at desc."""
        done = [d for d in self.deployments if d["environment_id"] == env_id and d["status"] == "success"]
        return max(done, key=lambda d: (d["finished_at"] or 0, d["id"])) if done else None

    # ----- entities

    def environment_basic(self, env):
        return {
            "id": env["id"],
            "name": env["name"],
            "slug": env["slug"],
            "external_url": env["external_url"],
            "created_at": utc_stamp(env["created_at"]),
            "updated_at": utc_stamp(env["updated_at"]),
        }

    def agent_entity(self, env):
        agent = self.agent(env["project"], env["cluster_agent_id"]) or {
            "id": env["cluster_agent_id"], "name": f"agent-{env['cluster_agent_id']}", "config_project": None,
            "created_at": self.created}
        config = agent.get("config_project")
        if config is None:
            segments = env["project"].split("/")
            config = {
                "id": int(env["project"]) if env["project"].isdigit() else None,
                "description": "",
                "name": segments[-1],
                "name_with_namespace": " / ".join(segments),
                "path": segments[-1],
                "path_with_namespace": env["project"],
                "created_at": utc_stamp(self.created),
            }
        return {"id": agent["id"], "name": agent["name"], "config_project": config,
                "created_at": utc_stamp(agent["created_at"]), "created_by_user_id": 1}

    def environment_entity(self, env, base_url, last_deployment=False, all_fields=False):
        out = self.environment_basic(env)
        out["tier"] = env["tier"]
        if last_deployment:
            last = self.last_successful_deployment(env["id"])
            out["last_deployment"] = (self.deployment_entity(last, base_url, with_environment=False)
                                      if last is not None else None)
        out["state"] = env["state"]
        out["auto_stop_at"] = None
        if env["cluster_agent_id"] is not None:
            out["cluster_agent"] = self.agent_entity(env)
            out["kubernetes_namespace"] = env["kubernetes_namespace"]
            out["flux_resource_path"] = env["flux_resource_path"]
        elif all_fields:
            out["cluster_agent"] = None
            out["kubernetes_namespace"] = env["kubernetes_namespace"]
            out["flux_resource_path"] = env["flux_resource_path"]
        out["description"] = env["description"]
        out["auto_stop_setting"] = env["auto_stop_setting"]
        return out

    def deployment_entity(self, dep, base_url, with_environment=True):
        out = {
            "id": dep["id"],
            "iid": dep["iid"],
            "ref": dep["ref"],
            "sha": dep["sha"],
            "created_at": utc_stamp(dep["created_at"]),
            "updated_at": utc_stamp(dep["updated_at"]),
            "user": standin_user(base_url),
        }
        if with_environment:
            out["environment"] = self.environment_basic(self.environment(dep["environment_id"]))
        deployable = None
        if dep["ci"]:
            deployable = dep["deployable"] if dep["deployable"] is not None else {
                "id": dep["job_id"], "status": dep["status"], "stage": "deploy", "name": "deploy",
                "ref": dep["ref"], "tag": dep["tag"], "created_at": utc_stamp(dep["created_at"]),
                "user": standin_user(base_url)}
        out["deployable"] = deployable
        out["status"] = dep["status"]
        return out

    @staticmethod
    def freeze_period_entity(period):
        return {
            "id": period["id"],
            "freeze_start": period["freeze_start"],
            "freeze_end": period["freeze_end"],
            "cron_timezone": period["cron_timezone"],
            "created_at": utc_stamp(period["created_at"]),
            "updated_at": utc_stamp(period["updated_at"]),
        }

    # ----- environments

    def environment_errors(self, env, before):
        """Environment's validations, in GitLab's order; before is the stored record (None if new)."""
        errors = {}

        def add(field, message):
            errors.setdefault(field, []).append(message)

        def changed(field):
            return (before[field] if before is not None else None) != env[field]

        others = [e for e in self.project_environments(env["project"]) if e["id"] != env["id"]]
        name = env["name"]
        if is_blank(name):
            add("name", "can't be blank")
        if name is not None and any(e["name"] == name for e in others):
            add("name", "has already been taken")
        if name is not None and len(name) > 255:
            add("name", TOO_LONG)
        if not ENVIRONMENT_NAME.fullmatch(name or ""):
            add("name", ENVIRONMENT_NAME_MESSAGE)
        slug = env["slug"]
        if any(e["slug"] == slug for e in others):
            add("slug", "has already been taken")
        if len(slug) > 24:
            add("slug", "is too long (maximum is 24 characters)")
        if not ENVIRONMENT_SLUG.fullmatch(slug):
            add("slug", ENVIRONMENT_SLUG_MESSAGE)
        if env["external_url"] is not None and len(env["external_url"]) > 255:
            add("external_url", TOO_LONG)
        if env["description"] is not None and changed("description") and len(env["description"]) > 10000:
            add("description", "is too long (maximum is 10000 characters)")
        namespace = env["kubernetes_namespace"]
        if namespace is not None and (changed("cluster_agent_id") or changed("kubernetes_namespace")):
            if len(namespace) > 63:
                add("kubernetes_namespace", "is too long (maximum is 63 characters)")
            if not KUBERNETES_NAMESPACE.fullmatch(namespace):
                add("kubernetes_namespace", KUBERNETES_NAMESPACE_MESSAGE)
            if env["cluster_agent_id"] is None:
                add("kubernetes_namespace", "cannot be set without a cluster agent")
        flux = env["flux_resource_path"]
        if flux is not None and (changed("kubernetes_namespace") or changed("flux_resource_path")):
            if len(flux) > 255:
                add("flux_resource_path", TOO_LONG)
            if namespace is None:
                add("flux_resource_path", "cannot be set without a kubernetes namespace")
        if not is_blank(env["external_url"]):
            for message in external_url_errors(env["external_url"]):
                if message != TOO_LONG:
                    add("external_url", message)
        return errors

    def new_environment(self, project, name, now):
        return {"id": None, "project": project, "name": name, "slug": environment_slug(name),
                "external_url": None, "tier": None, "state": "available", "description": None,
                "auto_stop_setting": "always", "cluster_agent_id": None, "kubernetes_namespace": None,
                "flux_resource_path": None, "created_at": now, "updated_at": now}

    def save_environment(self, env, before):
        """Runs the before_validation hooks and validations; stores the environment or returns errors."""
        for field in ("external_url", "kubernetes_namespace", "flux_resource_path", "description"):
            if is_blank(env[field]):
                env[field] = None  # nullify_if_blank
        if env["tier"] is None:
            env["tier"] = guess_tier(env["name"])
        errors = self.environment_errors(env, before)
        if errors:
            return errors
        if before is None:
            env["id"] = self.next_environment_id
            self.next_environment_id += 1
            self.environments.append(env)
        elif env != before:
            env["updated_at"] = time.time()
            before.update(env)
        return None

    def create_environment(self, project, p, base_url):
        env = self.new_environment(project, p.get("name"), time.time())
        for field in ("external_url", "tier", "cluster_agent_id", "kubernetes_namespace", "flux_resource_path",
                      "description", "auto_stop_setting"):
            if p.get(field) is not None:
                env[field] = p[field]
        if p.get("cluster_agent_id") is not None and self.agent(project, p["cluster_agent_id"]) is None:
            return gitlab_reply(400, {"message": NO_CLUSTER_AGENT})
        errors = self.save_environment(env, None)
        if errors:
            return gitlab_reply(400, {"message": errors})
        return gitlab_reply(201, self.environment_entity(env, base_url))

    def update_environment(self, project, env_id, p, base_url):
        stored = next((e for e in self.project_environments(project) if e["id"] == env_id), None)
        if stored is None:
            return gitlab_reply(404, RECORD_NOT_FOUND)
        if p.get("cluster_agent_id") is not None and self.agent(project, p["cluster_agent_id"]) is None:
            return gitlab_reply(400, {"message": NO_CLUSTER_AGENT})
        env = dict(stored)
        for field in ("external_url", "tier", "cluster_agent_id", "kubernetes_namespace", "flux_resource_path",
                      "description", "auto_stop_setting"):
            if field in p:
                env[field] = p[field]
        errors = self.save_environment(env, stored)
        if errors:
            return gitlab_reply(400, {"message": errors})
        return gitlab_reply(200, self.environment_entity(stored, base_url))

    # ----- deployments

    def create_deployment(self, project, p, base_url):
        ref, sha, tag, status, name = p["ref"], p["sha"], p["tag"], p["status"], p["environment"]
        if ref is not None and ref.strip() == "":
            # user_project.commit(ref) finds nothing for a blank ref (nil means HEAD and is found)
            return gitlab_reply(400, {"message": {"ref": ["The branch or tag does not exist"]}})
        now = time.time()
        env = next((e for e in self.project_environments(project) if name is not None and e["name"] == name), None)
        if env is None:
            env = self.new_environment(project, name, now)
            errors = self.save_environment(env, None)
            if errors:
                return gitlab_reply(400, {"message": errors})
        last = self.last_successful_deployment(env["id"])
        if last is not None and (last["ref"], last["tag"], last["sha"], last["status"]) == (ref, tag, sha, status):
            return gitlab_reply(201, self.deployment_entity(last, base_url))  # Deployments::CreateService
        errors = {}
        if is_blank(sha):
            errors.setdefault("sha", []).append("can't be blank")
        if is_blank(ref):
            errors.setdefault("ref", []).append("can't be blank")
        if sha is not None and not re.fullmatch(r"[0-9a-fA-F]{40}", sha):
            errors.setdefault("sha", []).append("The commit does not exist")
        if errors:
            return gitlab_reply(400, {"message": errors})
        iid = 1 + max((d["iid"] for d in self.project_deployments(project)), default=0)
        dep = {"id": self.next_deployment_id, "iid": iid, "project": project, "environment_id": env["id"],
               "ref": ref, "tag": tag, "sha": sha, "status": status, "created_at": now, "updated_at": now,
               "finished_at": now if status in DEPLOYMENT_FINISHED else None, "ci": False, "deployable": None,
               "job_id": None}
        self.next_deployment_id += 1
        self.deployments.append(dep)
        return gitlab_reply(201, self.deployment_entity(dep, base_url))

    @staticmethod
    def transition_refused(current, wanted):
        """Deployment's state machine for the API's four statuses: the event's name if refused."""
        if wanted == "running":
            allowed = current in ("created", "blocked")
        else:
            allowed = current != wanted
        return None if allowed else DEPLOYMENT_EVENTS[wanted]

    def update_deployment(self, project, dep_id, status, base_url):
        dep = next((d for d in self.project_deployments(project) if d["id"] == dep_id), None)
        if dep is None:
            return gitlab_reply(404, RECORD_NOT_FOUND)
        if dep["ci"]:
            return gitlab_reply(403, {"message": CI_FORBIDDEN})
        event = self.transition_refused(dep["status"], status)
        if event is not None:
            return gitlab_reply(400, {"message": {"status": [f'cannot transition via "{event}"']}})
        self.force_status(dep, status)
        return gitlab_reply(200, self.deployment_entity(dep, base_url))

    @staticmethod
    def force_status(dep, status):
        now = time.time()
        if status in DEPLOYMENT_FINISHED:
            dep["finished_at"] = now
        dep["status"] = status
        dep["updated_at"] = now

    def list_deployments(self, project, p):
        items = self.project_deployments(project)
        if not is_blank(p.get("environment")):
            env = next((e for e in self.project_environments(project) if e["name"] == p["environment"]), None)
            items = [d for d in items if env is not None and d["environment_id"] == env["id"]]
        if p.get("status"):
            items = [d for d in items if d["status"] == p["status"]]
        order_by = p.get("order_by") or "id"
        descending = p.get("sort") == "desc"
        if order_by == "updated_at":
            key = lambda d: (d["updated_at"], d["id"])  # noqa: E731
        elif order_by == "finished_at":
            # PostgreSQL puts NULLs last ascending, first descending
            key = lambda d: (d["finished_at"] is None, d["finished_at"] or 0, d["id"])  # noqa: E731
        else:  # id, iid and created_at all sort as id in GitLab's finder
            key = lambda d: d["id"]  # noqa: E731
        return sorted(items, key=key, reverse=descending)

    # ----- freeze periods

    @staticmethod
    def freeze_period_errors(period):
        errors = {}
        for field in ("freeze_start", "freeze_end"):
            value = period[field]
            if not cron_valid(value if value is not None else ""):
                errors.setdefault(field, []).append("syntax is invalid")
            if is_blank(value):
                errors.setdefault(field, []).append("can't be blank")
        zone = period["cron_timezone"]
        if not is_blank(zone) and not timezone_valid(zone):
            errors.setdefault("cron_timezone", []).append("syntax is invalid")
        if is_blank(zone):
            errors.setdefault("cron_timezone", []).append("can't be blank")
        return errors

    def save_freeze_period(self, project, stored, p):
        now = time.time()
        period = dict(stored) if stored is not None else {
            "id": None, "project": project, "freeze_start": None, "freeze_end": None, "cron_timezone": "UTC",
            "created_at": now, "updated_at": now}
        for field in ("freeze_start", "freeze_end", "cron_timezone"):
            if field in p:
                period[field] = p[field]
        for field in ("freeze_start", "freeze_end"):  # strip_attributes!
            if isinstance(period[field], str):
                period[field] = period[field].strip()
        errors = self.freeze_period_errors(period)
        if errors:
            return gitlab_reply(400, {"message": errors})
        if stored is None:
            period["id"] = self.next_freeze_period_id
            self.next_freeze_period_id += 1
            self.freeze_periods.append(period)
            return gitlab_reply(201, self.freeze_period_entity(period))
        if period != stored:
            period["updated_at"] = now
            stored.update(period)
        return gitlab_reply(200, self.freeze_period_entity(stored))

    def project_freeze_periods(self, project):
        items = [f for f in self.freeze_periods if f["project"] == project]
        return sorted(items, key=lambda f: (f["created_at"], f["id"]))

    # ----- control API dumps

    def dump_deployments(self, base_url):
        out = []
        for dep in self.deployments:
            item = self.deployment_entity(dep, base_url)
            item.update({"project": dep["project"], "tag": dep["tag"],
                         "finished_at": stamp_or_none(dep["finished_at"]), "ci": dep["ci"]})
            out.append(item)
        return out

    def dump_environments(self, base_url):
        out = []
        for env in self.environments:
            item = self.environment_entity(env, base_url, all_fields=True)
            item["project"] = env["project"]
            out.append(item)
        return out

    def dump_freeze_periods(self):
        return [dict(self.freeze_period_entity(f), project=f["project"]) for f in self.freeze_periods]



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
            self.gitlab_deploy = GitLabDeployModel()

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
            reply = self.control_gitlab_deploy(method, route, payload)
            if reply is not None:
                return reply
            if route == "/reset" and method == "POST":
                state.reset()
                return json_reply(200, {"ok": True})
        known = ("/health", "/requests", "/down", "/faults", "/slack/webhooks", "/gitlab/statuses", "/reset",
                 "/gitlab/deployments", "/gitlab/environments", "/gitlab/freeze_periods", "/gitlab/cluster_agents")
        if route in known or CONTROL_DEPLOYMENT_ROUTE.fullmatch(route):
            return json_reply(405, {"error": f"{method} is not supported on /_standin{route}"})
        return json_reply(404, {"error": f"unknown control endpoint /_standin{route}"})

    def control_gitlab_deploy(self, method, route, payload):
        """The control routes for deployments, environments, freeze periods and cluster agents."""
        model = self.server.state.gitlab_deploy
        reading = method in ("GET", "HEAD")
        if route == "/gitlab/deployments" and reading:
            return json_reply(200, model.dump_deployments(self.base_url()))
        if route == "/gitlab/environments" and reading:
            return json_reply(200, model.dump_environments(self.base_url()))
        if route == "/gitlab/freeze_periods" and reading:
            return json_reply(200, model.dump_freeze_periods())
        if route == "/gitlab/cluster_agents":
            if reading:
                return json_reply(200, {"acceptAll": model.agents is None, "agents": self.agents_dump()})
            if method == "DELETE":
                model.agents = None
                return json_reply(200, {"ok": True, "acceptAll": True})
            if method == "POST":
                agents, problem = parse_agents(payload)
                if problem:
                    return json_reply(400, {"error": problem})
                kept = [a for a in (model.agents or []) if a["id"] not in {b["id"] for b in agents}]
                model.agents = kept + agents
                return json_reply(200, {"ok": True, "agents": self.agents_dump()})
        match = CONTROL_DEPLOYMENT_ROUTE.fullmatch(route)
        if match and method == "POST":
            dep = next((d for d in model.deployments if d["id"] == int(match.group(1))), None)
            if dep is None:
                return json_reply(404, {"error": f"no deployment with id {match.group(1)}"})
            body = payload if isinstance(payload, dict) else {}
            if match.group(2) == "ci":
                deployable = body.get("deployable")
                if deployable is not None and not isinstance(deployable, dict):
                    return json_reply(400, {"error": "deployable must be a JSON object"})
                dep["ci"] = True
                dep["deployable"] = deployable
                dep["job_id"] = 9000 + dep["id"]
            else:
                status = body.get("status")
                if status not in DEPLOYMENT_STATUSES:
                    return json_reply(400, {"error": "status must be one of " + ", ".join(DEPLOYMENT_STATUSES)})
                model.force_status(dep, status)
            return json_reply(200, {"ok": True, "deployment": model.dump_deployments(self.base_url())[
                model.deployments.index(dep)]})
        return None

    def agents_dump(self):
        agents = self.server.state.gitlab_deploy.agents or []
        return [{"id": a["id"], "name": a["name"], "project": a["project"], "config_project": a["config_project"]}
                for a in agents]

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
            return self.gitlab_deploy_routes(path, query, headers, body)
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

    # ----- GitLab deployments, environments, freeze periods

    def gitlab_deploy_routes(self, path, query, headers, body):
        """Deployments, environments and freeze periods; anything else is GitLab's catch-all 404."""
        method = "GET" if self.command == "HEAD" else self.command
        member = None
        match = GITLAB_COLLECTION_ROUTE.match(path)
        if match is None:
            match = GITLAB_MEMBER_ROUTE.match(path)
            if match is not None:
                member = urllib.parse.unquote(match.group(3))
        if match is None or method not in GITLAB_DEPLOY_METHODS[(match.group(2), member is not None)]:
            return gitlab_reply(404, {"error": "404 Not Found"})
        project = urllib.parse.unquote(match.group(1))
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        try:
            params.update(gitlab_body_params(headers.get("content-type"), body))
        except BodyError as exc:
            return gitlab_reply(exc.status, {"error": exc.message})
        if not self.gitlab_authenticated(headers, params):
            return gitlab_reply(401, {"message": "401 Unauthorized"})
        handler = getattr(self, f"gitlab_{match.group(2)}_{method.lower()}")
        return handler(project, member, params, path, query)

    def gitlab_checked(self, raw, spec, project):
        """Grape's parameter errors (400), then the project lookup (404); None when both pass."""
        params, errors = grape_validate(raw, spec)
        if errors:
            return params, gitlab_reply(400, {"error": ", ".join(errors)})
        if not valid_project(project):
            return params, gitlab_reply(404, {"message": "404 Project Not Found"})
        return params, None

    def gitlab_page(self, items, p, render, path, query):
        """GitLab's offset pagination: one page of items and the X-* / Link headers."""
        per_page = p.get("per_page")
        per_page = 20 if per_page is None or per_page < 0 else min(per_page, 100)
        page = max(p.get("page") or 1, 1)
        total = len(items)
        pages = max(1, -(-total // per_page))
        chunk = items[(page - 1) * per_page:page * per_page]
        next_page = page + 1 if page < pages else None
        prev_page = page - 1 if 1 < page <= pages else None
        request_params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))

        def href(number):
            merged = dict(request_params, page=str(number), per_page=str(per_page))
            return f"{self.base_url()}{path}?{urllib.parse.urlencode(sorted(merged.items()))}"

        links = []
        if prev_page is not None:
            links.append(f'<{href(prev_page)}>; rel="prev"')
        if next_page is not None:
            links.append(f'<{href(next_page)}>; rel="next"')
        links.append(f'<{href(1)}>; rel="first"')
        links.append(f'<{href(pages)}>; rel="last"')
        headers = GITLAB_SECURITY_HEADERS + [
            ("X-Per-Page", str(per_page)), ("X-Page", str(page)),
            ("X-Next-Page", str(next_page) if next_page is not None else ""),
            ("X-Prev-Page", str(prev_page) if prev_page is not None else ""),
            ("Link", ", ".join(links)), ("X-Total", str(total)), ("X-Total-Pages", str(pages))]
        return json_reply(200, [render(item) for item in chunk], headers)

    def gitlab_deployments_get(self, project, member, raw, path, query):
        model = self.server.state.gitlab_deploy
        base = self.base_url()
        if member is None:
            p, refused = self.gitlab_checked(raw, PAGINATION_SPEC + [
                ("order_by", "string", {"values": DEPLOYMENT_SORT_VALUES, "default": "id"}),
                ("sort", "string", {"values": SORT_DIRECTIONS, "default": "asc"}),
                ("environment", "string", {}),
                ("status", "string", {"values": DEPLOYMENT_STATUSES}),
            ], project)
            if refused:
                return refused
            return self.gitlab_page(model.list_deployments(project, p), p,
                                    lambda dep: model.deployment_entity(dep, base), path, query)
        p, refused = self.gitlab_checked(dict(raw, deployment_id=member),
                                         [("deployment_id", "integer", {"required": True})], project)
        if refused:
            return refused
        dep = next((d for d in model.project_deployments(project) if d["id"] == p["deployment_id"]), None)
        if dep is None:
            return gitlab_reply(404, RECORD_NOT_FOUND)
        return gitlab_reply(200, model.deployment_entity(dep, base))

    def gitlab_deployments_post(self, project, member, raw, path, query):
        p, refused = self.gitlab_checked(raw, [
            ("environment", "string", {"required": True}),
            ("sha", "string", {"required": True}),
            ("ref", "string", {"required": True}),
            ("tag", "boolean", {"required": True, "null_invalid": True}),
            ("status", "string", {"required": True, "values": DEPLOYMENT_API_STATUSES}),
        ], project)
        if refused:
            return refused
        return self.server.state.gitlab_deploy.create_deployment(project, p, self.base_url())

    def gitlab_deployments_put(self, project, member, raw, path, query):
        p, refused = self.gitlab_checked(raw, [
            ("status", "string", {"required": True, "values": DEPLOYMENT_API_STATUSES})], project)
        if refused:
            return refused
        return self.server.state.gitlab_deploy.update_deployment(project, ar_integer(member), p["status"],
                                                                 self.base_url())

    def gitlab_environments_get(self, project, member, raw, path, query):
        model = self.server.state.gitlab_deploy
        base = self.base_url()
        if member is None:
            params, errors = grape_validate(raw, PAGINATION_SPEC + [
                ("name", "string", {}), ("search", "string", {}),
                ("states", "string", {"values": ENVIRONMENT_STATES})])
            if "name" in raw and "search" in raw:
                errors.append("name, search cannot be used together")
            if errors:
                return gitlab_reply(400, {"error": ", ".join(errors)})
            if not valid_project(project):
                return gitlab_reply(404, {"message": "404 Project Not Found"})
            search = params.get("search")
            if not is_blank(search) and len(search) < 3:
                return gitlab_reply(400, {"message": "400 Bad request - Search query is less than 3 characters"})
            items = model.project_environments(project)
            if not is_blank(params.get("name")):
                items = [e for e in items if e["name"] == params["name"]]
            if not is_blank(search):
                items = [e for e in items if e["name"].lower().startswith(search.lower())]
            if not is_blank(params.get("states")):
                items = [e for e in items if e["state"] == params["states"]]
            return self.gitlab_page(items, params, lambda env: model.environment_entity(env, base), path, query)
        p, refused = self.gitlab_checked(dict(raw, environment_id=member),
                                         [("environment_id", "integer", {"required": True})], project)
        if refused:
            return refused
        env = next((e for e in model.project_environments(project) if e["id"] == p["environment_id"]), None)
        if env is None:
            return gitlab_reply(404, RECORD_NOT_FOUND)
        return gitlab_reply(200, model.environment_entity(env, base, last_deployment=True))

    def gitlab_environments_post(self, project, member, raw, path, query):
        p, refused = self.gitlab_checked(raw, [("name", "string", {"required": True})] + ENVIRONMENT_FIELDS_SPEC + [
            ("auto_stop_setting", "string", {"default": "always", "values": AUTO_STOP_SETTINGS})], project)
        if refused:
            return refused
        return self.server.state.gitlab_deploy.create_environment(project, p, self.base_url())

    def gitlab_environments_put(self, project, member, raw, path, query):
        p, refused = self.gitlab_checked(
            dict(raw, environment_id=member),
            [("environment_id", "integer", {"required": True})] + ENVIRONMENT_FIELDS_SPEC + [
                ("auto_stop_setting", "string", {"values": AUTO_STOP_SETTINGS})], project)
        if refused:
            return refused
        fields = {k: v for k, v in p.items() if k != "environment_id"}
        return self.server.state.gitlab_deploy.update_environment(project, p["environment_id"], fields,
                                                                  self.base_url())

    def gitlab_freeze_periods_get(self, project, member, raw, path, query):
        model = self.server.state.gitlab_deploy
        if member is None:
            p, refused = self.gitlab_checked(raw, PAGINATION_SPEC, project)
            if refused:
                return refused
            return self.gitlab_page(model.project_freeze_periods(project), p, model.freeze_period_entity,
                                    path, query)
        p, refused = self.gitlab_checked(dict(raw, freeze_period_id=member),
                                         [("freeze_period_id", "integer", {"required": True})], project)
        if refused:
            return refused
        period = next((f for f in model.project_freeze_periods(project) if f["id"] == p["freeze_period_id"]), None)
        if period is None:
            return gitlab_reply(404, RECORD_NOT_FOUND)
        return gitlab_reply(200, model.freeze_period_entity(period))

    def gitlab_freeze_periods_post(self, project, member, raw, path, query):
        p, refused = self.gitlab_checked(raw, [
            ("freeze_start", "string", {"required": True}),
            ("freeze_end", "string", {"required": True}),
            ("cron_timezone", "string", {})], project)
        if refused:
            return refused
        return self.server.state.gitlab_deploy.save_freeze_period(project, None, p)

    def gitlab_freeze_periods_put(self, project, member, raw, path, query):
        p, refused = self.gitlab_checked(raw, [
            ("freeze_start", "string", {}), ("freeze_end", "string", {}), ("cron_timezone", "string", {})], project)
        if refused:
            return refused
        model = self.server.state.gitlab_deploy
        period_id = ar_integer(member)
        stored = next((f for f in model.project_freeze_periods(project) if f["id"] == period_id), None)
        if stored is None:
            return gitlab_reply(404, RECORD_NOT_FOUND)
        return model.save_freeze_period(project, stored, p)

    def gitlab_freeze_periods_delete(self, project, member, raw, path, query):
        p, refused = self.gitlab_checked(dict(raw, freeze_period_id=member),
                                         [("freeze_period_id", "integer", {"required": True})], project)
        if refused:
            return refused
        model = self.server.state.gitlab_deploy
        stored = next((f for f in model.project_freeze_periods(project) if f["id"] == p["freeze_period_id"]), None)
        if stored is None:
            return gitlab_reply(404, RECORD_NOT_FOUND)
        model.freeze_periods.remove(stored)
        return Reply(204, b"", None, GITLAB_SECURITY_HEADERS, logged=None)

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
    """Fills project, sha (statuses only) and the merged params of a GitLab request for the log,
    even when the request is then answered by the down window or a fault."""
    match = GITLAB_ROUTE.match(path)
    if match is not None:
        entry["project"] = urllib.parse.unquote(match.group(1))
        entry["sha"] = urllib.parse.unquote(match.group(2))
    else:
        match = GITLAB_COLLECTION_ROUTE.match(path) or GITLAB_MEMBER_ROUTE.match(path)
        if match is None:
            return
        entry["project"] = urllib.parse.unquote(match.group(1))
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


def parse_agents(payload):
    """{"agents": [{"id": N, "name"?, "project"?, "config_project"?}, ...]} or one such object."""
    if isinstance(payload, dict) and "agents" not in payload and "id" in payload:
        payload = {"agents": [payload]}
    items = payload.get("agents") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        return None, 'body must be {"agents": [{"id": N, "name": "...", "project": "group/project"}, ...]}'
    agents = []
    for item in items:
        if not isinstance(item, dict):
            return None, "each agent must be a JSON object"
        agent_id = item.get("id")
        if isinstance(agent_id, bool) or not isinstance(agent_id, int) or agent_id <= 0:
            return None, "agent id must be a positive integer"
        name = item.get("name", f"agent-{agent_id}")
        project = item.get("project")
        config = item.get("config_project")
        if not isinstance(name, str) or (project is not None and not isinstance(project, str)):
            return None, "agent name and project must be strings"
        if config is not None and not isinstance(config, dict):
            return None, "config_project must be a JSON object"
        agents.append({"id": agent_id, "name": name, "project": project, "config_project": config,
                       "created_at": time.time()})
    return agents, None


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
    parser = argparse.ArgumentParser(
        description="GitLab commit-status/deployments/environments/freeze-periods and Slack webhook "
                    "STAND-IN (not GitLab, not Slack)")
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
