#!/usr/bin/env python3
"""A test stand-in for kube-apiserver. This is NOT Kubernetes.

kube-apiserver cannot run where the relay's Swift tests run, so this small,
standard-library-only HTTP(S) server copies the parts of the kube-apiserver
API contract that the agent's Kubernetes client uses. Within those parts,
status codes, Status bodies and messages match upstream.

What it implements, for five namespaced Flux custom resources, each with a
status subresource (source.toolkit.fluxcd.io/v1 externalartifacts,
ocirepositories and gitrepositories; kustomize.toolkit.fluxcd.io/v1
kustomizations; helm.toolkit.fluxcd.io/v2 helmreleases):
* bearer-token authentication, with upstream's 401 Unauthorized Status;
* GET object; GET list (namespaced and cluster-wide), paginated with
  limit/continue and served from a consistent snapshot; labelSelector
  limited to k=v, k==v, k!=v, k and !k;
* server-side apply (PATCH application/apply-patch+yaml), JSON bodies only:
  anything else gets 400 "only JSON bodies are supported by this stand-in".
  Field ownership is kept per manager at leaf level (lists are atomic). A
  conflict needs a changed field that another manager owns; it gives
  upstream's 409 message, and force=true takes the fields over. Status is
  dropped on the main resource; /status changes status only;
* RFC 7386 merge patch with a metadata.resourceVersion precondition.
  Strategic merge patch and unknown patch types get 415, as on real custom
  resources;
* POST create (201, or 409 AlreadyExists); DELETE gives a Success Status or,
  when finalizers are set, the object marked as being deleted;
* server-managed metadata: uid, resourceVersion, generation,
  creationTimestamp, managedFields;
* watch (GET on a collection with ?watch=1/true; any value but 0/false
  counts): 200 at once, chunked application/json, one WatchEvent
  {"type","object"} per line, written as it happens. resourceVersion ""/"0":
  synthetic ADDED for the matching objects (key order), then live events. A
  number: every change after it from the event history, then live events;
  below the compaction horizon, one ERROR event (410 Expired "too old
  resource version: RV (HORIZON)") ends the stream. Not a number: 422 Invalid
  (storage's ParseResourceVersion error, as upstream). Every write that
  changes an object is an event (ADDED on create/seed, MODIFIED, DELETED with
  the last state at the deletion's resourceVersion); as in the watch cache,
  an object entering/leaving the labelSelector is ADDED/DELETED. Each watch
  gets every event once, in resourceVersion order. allowWatchBookmarks: a
  BOOKMARK (kind, apiVersion, metadata.resourceVersion = current) after each
  --bookmark-seconds without events. timeoutSeconds ends the stream cleanly
  (absent or 0: --watch-max-seconds); so does the control API. Options are
  checked as by a server with the WatchList feature gate off (1.33):
  sendInitialEvents and resourceVersionMatch get upstream's 422.
What upstream does, and this stand-in copies: a resource whose CRD is missing
(--crd-missing), or any unknown path, gets Go's plain-text "404 page not
found" (client-go turns that into "the server could not find the requested
resource"). Apply without fieldManager gets 422 Invalid on PatchOptions.
What it does NOT implement: PUT/update, JSON Patch, dryRun,
deletecollection, discovery, YAML/protobuf/CBOR bodies, the core /api group,
namespaces as objects, OpenAPI validation/defaulting/pruning, admission, RBAC,
set-based selectors, watch over WebSocket, the deprecated /watch/ path prefix,
the WatchList streaming (sendInitialEvents). None is silently ignored: PUT,
JSON Patch and dryRun get 405 "... is not implemented by this kube-apiserver
stand-in"; sendInitialEvents gets the 422 described above.
Test-only control API under /_standin/ (no auth, JSON): objects (GET; POST to
seed, keeping status; DELETE all, one DELETED event each), requests (GET,
DELETE), faults (GET, POST, DELETE), expire-continue (POST; this also
advances resourceVersion by one, so no later token can look like an expired
one), tokens (POST), watches (GET: count and each open watch's path/query),
compact (POST: the compaction horizon becomes the current resourceVersion,
so a watch from an older one gets the 410 ERROR event; continue tokens are
not affected), close-watches (POST: every open watch ends at once with its
terminating chunk, then its connection closes, like an apiserver restart;
?abrupt=true cuts the connection without the terminating chunk instead).
Seeded objects have no field owners unless ?fieldManager=NAME is given.
"""
import argparse, base64, bisect, collections, copy, json, random, re, select, signal, socket, ssl, sys, threading, time, traceback, uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

RESOURCES = {  # plural -> (group, version, kind)
    "externalartifacts": ("source.toolkit.fluxcd.io", "v1", "ExternalArtifact"),
    "ocirepositories": ("source.toolkit.fluxcd.io", "v1", "OCIRepository"),
    "gitrepositories": ("source.toolkit.fluxcd.io", "v1", "GitRepository"),
    "kustomizations": ("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
    "helmreleases": ("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
}
USER_META = ("labels", "annotations", "finalizers", "ownerReferences")  # metadata a client may set
SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
APPLY, MERGE = "application/apply-patch+yaml", "application/merge-patch+json"
PATCH_TYPES = ["application/json-patch+json", MERGE, APPLY]  # in upstream's order, for the 415 message
EXPIRED = ("The provided continue parameter is too old to display a consistent list result. "
           "You can start a new list without the continue parameter.")
UNAUTHORIZED = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed", 415: "UnsupportedMediaType",
           422: "Invalid", 503: "ServiceUnavailable", 504: "Timeout"}  # for injected faults with no special Status
MISSING = object()


class Res:
    def __init__(self, plural):
        self.plural, (self.group, self.version, self.kind) = plural, RESOURCES[plural]
        self.api_version = f"{self.group}/{self.version}"


# ---- error responses (metav1.Status, as apimachinery's errors package builds them) ----
class ApiError(Exception):
    def __init__(self, code, body, ctype="application/json", headers=()):
        super().__init__(code)
        self.code, self.body, self.ctype, self.headers = code, body, ctype, list(headers)


def status(code, reason, message, details=None):
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason}
    if details is not None:
        body["details"] = details
    body["code"] = code
    return ApiError(code, body)


def q(s):  # Go's %q, for the plain strings used here
    return json.dumps(s, ensure_ascii=False)


def page_not_found():  # net/http's NotFound, where the apiserver's handler chain ends for unserved paths
    return ApiError(404, "404 page not found\n", "text/plain; charset=utf-8", [("X-Content-Type-Options", "nosniff")])


def bad_request(msg):
    return status(400, "BadRequest", msg)


def not_found(res, name):
    return status(404, "NotFound", f"{res.plural}.{res.group} {q(name)} not found", {"name": name, "group": res.group, "kind": res.plural})


def modified(res, name):
    return status(409, "Conflict", f"Operation cannot be fulfilled on {res.plural}.{res.group} {q(name)}: the object has been modified; "
                  "please apply your changes to the latest version and try again", {"name": name, "group": res.group, "kind": res.plural})


def invalid(group, kind, name, field, why, reason="FieldValueInvalid"):  # NewInvalid with one field error
    return invalid_all(group, kind, name, [(field, why, reason)])


def invalid_all(group, kind, name, errs):  # NewInvalid: errs are (field, why, reason); several are aggregated as [a, b]
    details = {k: v for k, v in (("name", name), ("group", group), ("kind", kind)) if v}
    details["causes"] = [{"reason": reason, "message": why, "field": field} for field, why, reason in errs]
    texts = [f"{field}: {why}" for field, why, _ in errs]
    return status(422, "Invalid", f"{kind}.{group} {q(name)} is invalid: " + (texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"),
                  details)


def unsupported(what):
    return status(405, "MethodNotAllowed", f"{what} is not implemented by this kube-apiserver stand-in", {})


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode(body):  # custom resources are Go maps on the server, so their keys come out sorted; a Status is typed
    typed = isinstance(body, dict) and body.get("kind") == "Status"
    return json.dumps(body, sort_keys=not typed, ensure_ascii=False, separators=(",", ":"))


def at_rv(obj, rv):  # a copy of a stored object carrying another resourceVersion (as etcd3's decodeObj sets it)
    return dict(obj, metadata=dict(obj["metadata"], resourceVersion=str(rv)))


def query_flag(query, key):  # apimachinery's Convert_Slice_string_To_bool: present and not "0"/"false" is true, even empty
    return key in query and query[key].lower() not in ("0", "false")


# ---- field paths: tuples of map keys; lists and scalars are leaves (CRD lists are atomic) ----
def leaves(v, path=()):
    if isinstance(v, dict) and v:
        for k, x in v.items():
            yield from leaves(x, path + (k,))
    elif path:
        yield path


def get_path(obj, path):
    for k in path:
        if not isinstance(obj, dict) or k not in obj:
            return MISSING
        obj = obj[k]
    return obj


def set_path(obj, path, value):
    for k in path[:-1]:
        if not isinstance(obj.get(k), dict):
            obj[k] = {}
        obj = obj[k]
    obj[path[-1]] = value


def del_path(obj, path):
    """Remove the leaf at `path`, then any map this leaves empty (as apply does)."""
    for depth in range(len(path), 0, -1):
        parent, key = get_path(obj, path[:depth - 1]), path[depth - 1]
        if isinstance(parent, dict) and (depth == len(path) or parent.get(key) == {}):
            parent.pop(key, None)


def owned_view(obj, sub):
    """The part of an object that managers own through `sub` ("" = the main resource, or "status")."""
    if obj is None:
        return {}
    if sub == "status":
        return {"status": obj["status"]} if "status" in obj else {}
    view = content(obj)
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k in USER_META}
    return dict(view, metadata=meta) if meta else view


def content(obj):  # what a custom resource's generation tracks: everything but metadata and status
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}


def merge_patch(target, patch):  # RFC 7386
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)  # null deletes
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# ---- storage ----
class State:
    def __init__(self, tokens, missing, bookmark_seconds=1.0, watch_max_seconds=30.0):
        self.lock = threading.RLock()
        self.tokens, self.missing = set(tokens), set(missing)
        self.rv = 0          # the global resourceVersion counter (etcd's revision)
        self.objects = {}    # (plural, namespace, name) -> object
        self.owners = {}     # same key -> {(manager, operation, subresource): {"apiVersion", "time", "paths"}}
        self.snapshots = {}  # resourceVersion -> copy of self.objects, behind continue tokens
        self.requests, self.faults = [], []
        # watch: every change since the compaction horizon, oldest first, as (rv, type, key, object, previous object);
        # stored objects are never mutated, so events share them
        self.history, self.horizon, self.watches = [], 0, set()
        self.bookmark_seconds, self.watch_max_seconds = bookmark_seconds, watch_max_seconds

    def publish(self, kind, key, obj, prev=None):
        """Record a change made at self.rv and queue it on every open watch. Callers hold the lock, so
        watches get events in resourceVersion order."""
        event = (self.rv, kind, key, obj, prev)
        self.history.append(event)
        for w in self.watches:
            w.offer(event)

    def remove(self, key, last):
        """Delete an object at a new resourceVersion. The DELETED event carries its last stored state with the
        deletion's resourceVersion, as etcd's delete event (prevKV) does through the apiserver."""
        self.objects.pop(key, None), self.owners.pop(key, None)
        self.rv += 1
        self.publish("DELETED", key, at_rv(last, self.rv))

    def close_watches(self, how):
        for w in list(self.watches):
            w.stop(how)
        return len(self.watches)

    def owners_copy(self, key):
        return {k: dict(e, paths=set(e["paths"])) for k, e in self.owners.get(key, {}).items()}

    def write(self, key, old, new, ents, actor):
        """Store `new` with managedFields from `ents`; a no-op is not written and keeps its resourceVersion."""
        ents = {k: e for k, e in ents.items() if e["paths"]}
        bare = lambda o: dict(o, metadata={k: v for k, v in o["metadata"].items() if k not in ("resourceVersion", "managedFields")})
        if old is not None and bare(old) == bare(new) and \
                {k: e["paths"] for k, e in ents.items()} == {k: e["paths"] for k, e in self.owners.get(key, {}).items()}:
            return old
        if actor in ents:
            ents[actor]["time"] = now()
        meta = new["metadata"]
        deleted = meta.get("deletionTimestamp") and not meta.get("finalizers")  # last finalizer removed: now deleted
        if deleted and old is not None:
            self.remove(key, old)  # upstream deletes rather than storing this update (deleteWithoutFinalizers)
        else:
            self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        meta.pop("managedFields", None)
        if ents:
            meta["managedFields"] = [managed_entry(k, e) for k, e in ents.items()]
        if not deleted:
            self.objects[key], self.owners[key] = new, ents
            self.publish("ADDED" if old is None else "MODIFIED", key, new, old)
        return new


def managed_entry(eid, e):
    tree = {}
    for p in sorted(e["paths"]):
        node = tree
        for k in p:
            node = node.setdefault("f:" + k, {})
    m = {"manager": eid[0], "operation": eid[1], "apiVersion": e["apiVersion"], "time": e["time"], "fieldsType": "FieldsV1", "fieldsV1": tree}
    return dict(m, subresource=eid[2]) if eid[2] else m


def take_updated_fields(ents, old, new, sub, actor, api_version):
    """An Update operation (create, merge patch) owns the fields it changed; removed fields lose their owners."""
    ov, nv = owned_view(old, sub), owned_view(new, sub)
    changed = {p for p in leaves(nv) if get_path(ov, p) != get_path(nv, p)}
    for e in ents.values():
        e["paths"] -= changed | (set(leaves(ov)) - set(leaves(nv)))
    if changed:
        ents.setdefault(actor, {"apiVersion": api_version, "time": now(), "paths": set()})["paths"] |= changed


def server_meta(res, new, old, ns, name):
    """Rebuild metadata: client-settable fields from `new`, server-managed ones from `old` (or fresh on create)."""
    user = new.get("metadata") if isinstance(new.get("metadata"), dict) else {}
    if old is None:
        meta = {"name": name, "namespace": ns, "uid": str(uuid.uuid4()), "creationTimestamp": now(), "generation": 1}
    else:
        meta = copy.deepcopy(old["metadata"])
        meta["generation"] += content(new) != content(old)
    for k in USER_META + ("generateName",):
        meta.pop(k, None)
        if user.get(k):
            meta[k] = user[k]
    new["metadata"], new["apiVersion"], new["kind"] = meta, res.api_version, res.kind


def check_name(meta, name, ns):  # the apiserver's checkName, after a patch is applied
    if meta.get("name", "") != name:
        raise bad_request(f"the name of the object ({meta.get('name', '')}) does not match the name on the URL ({name})")
    if meta.get("namespace") and meta["namespace"] != ns:
        raise bad_request(f"the namespace of the object ({meta['namespace']}) does not match the namespace on the URL ({ns})")


def validate_new(res, ns, name):  # ValidateObjectMeta: name is a DNS-1123 subdomain, namespace a DNS-1123 label
    for field, value, rx, limit, what, chars, example in (
            ("metadata.name", name, SUBDOMAIN, 253, "subdomain", "characters, '-' or '.'", "'example.com'"),
            ("metadata.namespace", ns, LABEL, 63, "label", "characters or '-'", "'my-name',  or '123-abc'")):
        if len(value) > limit:
            why = f"must be no more than {limit} characters"
        elif not rx.match(value):
            why = (f"a lowercase RFC 1123 {what} must consist of lower case alphanumeric {chars}, and must start and end with an "
                   f"alphanumeric character (e.g. {example}, regex used for validation is '{rx.pattern[:-2]}')")
        else:
            continue
        raise invalid(res.group, res.kind, name, field, f"Invalid value: {q(value)}: {why}")


def apply_conflict(conflicts, ents):  # structured-merge-diff's conflict error, as the apiserver words it
    def who(eid):
        s = q(eid[0]) + (f" with subresource {q(eid[2])}" if eid[2] else "")
        return s + (f" using {ents[eid]['apiVersion']}" if eid[1] == "Update" else "")
    dotted = lambda p: "".join("." + k for k in p)
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {who(e)}", "field": dotted(p)} for e, p in conflicts]
    if len(conflicts) == 1:
        msg = f"Apply failed with 1 conflict: conflict with {who(conflicts[0][0])}: {dotted(conflicts[0][1])}"
    else:
        lines = []
        for e in sorted({e for e, _ in conflicts}):
            lines += [f"conflicts with {who(e)}:"] + [f"- {dotted(p)}" for x, p in conflicts if x == e]
        msg = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return status(409, "Conflict", msg, {"causes": causes})


def body_object(raw, error):
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise bad_request(f"{error}: {e}")
    if not isinstance(body, dict):
        raise bad_request(f"{error}: the body is not a JSON object")
    return body, (body["metadata"] if isinstance(body.get("metadata"), dict) else {})


# ---- verbs ----
def do_apply(st, res, ns, name, sub, raw, query):
    manager = query.get("fieldManager", "")
    if not manager:
        raise invalid("meta.k8s.io", "PatchOptions", "", "fieldManager", "Required value: is required for apply patch", "FieldValueRequired")
    body, meta = body_object(raw, "only JSON bodies are supported by this stand-in")
    if meta.get("managedFields") is not None:
        raise bad_request("metadata.managedFields must be nil")
    key, me = (res.plural, ns, name), (manager, "Apply", sub)
    with st.lock:
        live = st.objects.get(key)
        if live is None and sub == "status":
            raise not_found(res, name)
        if body.get("apiVersion") != res.api_version or body.get("kind") != res.kind:
            gv = str(body.get("apiVersion") or "")
            raise bad_request(f"invalid object type: {gv if '/' in gv else '/' + gv}, Kind={body.get('kind') or ''}")
        check_name(meta, name, ns)
        if live is not None and meta.get("resourceVersion") not in (None, live["metadata"]["resourceVersion"]):
            raise modified(res, name)
        if live is None:
            validate_new(res, ns, name)
        cfg, ents = owned_view(body, sub), st.owners_copy(key)
        applied = set(leaves(cfg))
        conflicts = [(eid, p) for eid in sorted(ents) if eid != me for p in sorted(ents[eid]["paths"] & applied)
                     if get_path(live, p) != get_path(cfg, p)]
        if conflicts and query.get("force", "").lower() not in ("true", "t", "1"):
            raise apply_conflict(conflicts, ents)
        for eid, p in conflicts:  # forced: the applier takes the conflicting fields over
            ents[eid]["paths"].discard(p)
        others = set().union(*(e["paths"] for eid, e in ents.items() if eid != me))
        new = copy.deepcopy(live) if live else {"metadata": {}}
        for p in ents.get(me, {}).get("paths", set()) - applied - others:
            del_path(new, p)  # applied before, not any more, and owned by nobody else: removed
        for p in sorted(applied):
            set_path(new, p, copy.deepcopy(get_path(cfg, p)))
        ents.setdefault(me, {"apiVersion": res.api_version, "time": now()})["paths"] = applied
        server_meta(res, new, live, ns, name)
        return (201 if live is None else 200), st.write(key, live, new, ents, me)


def do_merge_patch(st, res, ns, name, sub, raw, manager):
    patch, meta = body_object(raw, "error decoding merge patch")
    key = (res.plural, ns, name)
    with st.lock:
        live = st.objects.get(key)
        if live is None:
            raise not_found(res, name)
        if meta.get("resourceVersion") not in (None, live["metadata"]["resourceVersion"]):
            raise modified(res, name)
        patched = merge_patch(copy.deepcopy(live), patch)
        check_name(patched["metadata"] if isinstance(patched.get("metadata"), dict) else {}, name, ns)
        # the main resource never changes status; /status changes nothing else
        new, status_from = (copy.deepcopy(live), patched) if sub == "status" else (patched, live)
        new.pop("status", None)
        if "status" in status_from:
            new["status"] = copy.deepcopy(status_from["status"])
        server_meta(res, new, live, ns, name)
        ents, actor = st.owners_copy(key), (manager, "Update", sub)
        take_updated_fields(ents, live, new, sub, actor, res.api_version)
        return 200, st.write(key, live, new, ents, actor)


def do_create(st, res, ns, raw, manager):
    body, meta = body_object(raw, "couldn't get version/kind; json parse error")
    if body.get("apiVersion") != res.api_version or body.get("kind") != res.kind:
        raise bad_request(f"the API version in the data ({body.get('apiVersion')}) and kind ({body.get('kind')}) do not match "
                          f"the expected {res.api_version} {res.kind}")
    if meta.get("namespace") and meta["namespace"] != ns:
        raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
    name = meta.get("name") or (meta["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
                                if meta.get("generateName") else "")
    if not name:
        raise invalid(res.group, res.kind, "", "metadata.name", "Required value: name or generateName is required", "FieldValueRequired")
    validate_new(res, ns, name)
    key = (res.plural, ns, name)
    with st.lock:
        if key in st.objects:
            raise status(409, "AlreadyExists", f"{res.plural}.{res.group} {q(name)} already exists",
                         {"name": name, "group": res.group, "kind": res.plural})
        new = copy.deepcopy(body)
        new.pop("status", None)  # status subresource: create never sets status
        server_meta(res, new, None, ns, name)
        ents, actor = {}, (manager, "Update", "")
        take_updated_fields(ents, None, new, "", actor, res.api_version)
        return 201, st.write(key, None, new, ents, actor)


def do_delete(st, res, ns, name):
    key = (res.plural, ns, name)
    with st.lock:
        live = st.objects.get(key)
        if live is None:
            raise not_found(res, name)
        if live["metadata"].get("finalizers"):  # mark as being deleted; answer with the object
            if live["metadata"].get("deletionTimestamp"):
                return 200, live
            new = copy.deepcopy(live)
            new["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0, generation=live["metadata"]["generation"] + 1)
            return 200, st.write(key, live, new, st.owners_copy(key), None)
        st.remove(key, live)
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",  # the CR store returns no object
                     "details": {"name": name, "group": res.group, "kind": res.plural, "uid": live["metadata"]["uid"]}}


def label_matcher(selector):
    reqs = []
    for part in filter(None, (p.strip() for p in selector.split(","))):
        m = re.fullmatch(r"(!?)\s*([A-Za-z0-9][-A-Za-z0-9_./]*)\s*(?:(==|=|!=)\s*([-A-Za-z0-9_.]*))?", part)
        if not m or (m[1] and m[3]):
            raise bad_request(f"unable to parse requirement: {part!r} (this stand-in supports only k=v, k==v, k!=v, k, !k)")
        reqs.append(m.groups())

    def match(obj):
        labels = obj["metadata"].get("labels") or {}
        return all((k in labels) != bool(neg) if op is None else (labels.get(k) == v) == (op != "!=") for neg, k, op, v in reqs)
    return match, bool(reqs)


def do_list(st, res, ns, query):
    try:
        limit = int(query.get("limit") or 0)
    except ValueError:
        raise bad_request(f"invalid limit: {query.get('limit')}")
    match, filtered = label_matcher(query.get("labelSelector", ""))
    token = query.get("continue")
    with st.lock:
        if token:
            try:
                t = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
                rv, start = int(t["rv"]), str(t["start"])
                assert t["v"] == "meta.k8s.io/v1", "unknown token version"
            except Exception as e:
                raise bad_request(f"invalid continue token: continue key is not valid: {e}")
            source = st.snapshots.get(rv)
            if source is None:
                raise status(410, "Expired", EXPIRED)
        else:
            rv, start, source = st.rv, "", st.objects
        # etcd order; keys are relative to the list's prefix: "name" in a namespace, "namespace/name" cluster-wide
        items = sorted((k[2] if ns else f"{k[1]}/{k[2]}", o) for k, o in source.items()
                       if k[0] == res.plural and ns in (None, k[1]) and match(o))
        items = [(k, o) for k, o in items if k >= start]
        page, meta = items[:limit] if limit else items, {"resourceVersion": str(rv)}
        if limit and len(items) > limit:
            tok = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": page[-1][0] + "\x00"}, separators=(",", ":"))
            meta["continue"] = base64.urlsafe_b64encode(tok.encode()).decode().rstrip("=")
            if not filtered:
                meta["remainingItemCount"] = len(items) - limit
            if rv not in st.snapshots:
                st.snapshots[rv] = copy.deepcopy(st.objects)
                if len(st.snapshots) > 64:
                    st.snapshots.pop(next(iter(st.snapshots)))
        return 200, {"apiVersion": res.api_version, "items": [copy.deepcopy(o) for _, o in page], "kind": res.kind + "List", "metadata": meta}


# ---- watch ----
class Watch:
    """One open watch: what it selects, and the events its connection's thread has yet to send."""

    def __init__(self, res, ns, match, after, seconds, bookmarks, path, query):
        self.res, self.ns, self.match = res, ns, match
        self.after = after  # changes at or below this resourceVersion are not sent (the cacheWatcher's start RV)
        self.seconds, self.bookmarks = seconds, bookmarks
        self.info = {"path": path, "query": query, "started": now()}
        self.cond = threading.Condition()
        self.queue = collections.deque()  # (type, object), in resourceVersion order
        self.end = None  # why the stream stops early: "done" (end it cleanly), "close" (end it, then the connection), "cut"

    def event(self, change):
        """What this watch sees of a change, as the watch cache filters it: an object that starts matching the
        selector is ADDED, one that stops matching is DELETED (its previous state at the change's resourceVersion)."""
        rv, kind, key, obj, prev = change
        if rv <= self.after or key[0] != self.res.plural or self.ns not in (None, key[1]):
            return None
        if kind == "DELETED":
            return ("DELETED", obj) if self.match(obj) else None
        now_in, was_in = self.match(obj), prev is not None and self.match(prev)
        if now_in:
            return ("MODIFIED" if was_in else "ADDED", obj)
        return ("DELETED", at_rv(prev, rv)) if was_in else None

    def offer(self, change):  # called with the state lock held
        e = self.event(change)
        if e:
            with self.cond:
                self.queue.append(e)
                self.cond.notify()

    def stop(self, how):
        with self.cond:
            self.end = self.end or how
            self.cond.notify()


def watch_options_errors(query):
    """metainternalversion validateWatchOptions, for a server with the WatchList feature gate off (as in 1.33)."""
    errs, match = [], query.get("resourceVersionMatch", "")
    rvm = "resourceVersionMatch"
    if "sendInitialEvents" in query:
        if match != "NotOlderThan":
            errs.append((rvm, "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan", "FieldValueForbidden"))
        errs.append(("sendInitialEvents", "Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
                     "FieldValueForbidden"))
    if match:
        if "sendInitialEvents" not in query:
            errs.append((rvm, "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                         "FieldValueForbidden"))
        if match != "NotOlderThan":
            errs.append((rvm, f'Unsupported value: {q(match)}: supported values: "NotOlderThan"', "FieldValueNotSupported"))
        if query.get("continue"):
            errs.append((rvm, "Forbidden: resourceVersionMatch is forbidden when continue is provided", "FieldValueForbidden"))
    return errs


def go_uint(text, bits, signed):  # strconv.ParseInt/ParseUint in base 10: (value, None) or (None, Go's error text)
    func = "strconv.ParseInt" if signed else "strconv.ParseUint"
    if not re.fullmatch(r"[+-]?[0-9]+" if signed else r"[0-9]+", text):
        return None, f"{func}: parsing {q(text)}: invalid syntax"
    v = int(text)
    if not (-(1 << (bits - 1)) <= v < (1 << (bits - 1)) if signed else v < (1 << bits)):
        return None, f"{func}: parsing {q(text)}: value out of range"
    return v, None


def do_watch(st, res, ns, query, path):
    """Start a watch: the Watch to stream, with its first events queued, or an ApiError before any streaming."""
    seconds = st.watch_max_seconds
    if "timeoutSeconds" in query:  # ListOptions decoding: a bad number is a 400
        t, err = go_uint(query["timeoutSeconds"], 64, True)
        if err:
            raise bad_request(err)
        seconds = max(t, 0) if t else seconds  # 0 means the server's default, as upstream
    match, _ = label_matcher(query.get("labelSelector", ""))
    errs = watch_options_errors(query)
    if errs:
        raise invalid_all("meta.k8s.io", "ListOptions", "", errs)
    text = query.get("resourceVersion", "")
    rv = 0
    if text not in ("", "0"):  # storage's ParseResourceVersion: an apiserver storage error, hence 422
        rv, err = go_uint(text, 64, False)
        if err:
            raise status(422, "Invalid", f"resourceVersion: Invalid value: {q(text)}: {err}")
    with st.lock:
        w = Watch(res, ns, match, rv or st.rv, seconds, query_flag(query, "allowWatchBookmarks"), path, query)
        if not rv:  # "" and "0": the current state as synthetic ADDED events (etcd key order), then changes
            w.queue.extend(("ADDED", o) for _, o in sorted(
                (k[2] if ns else f"{k[1]}/{k[2]}", o) for k, o in st.objects.items()
                if k[0] == res.plural and ns in (None, k[1]) and match(o)))
        elif rv < st.horizon:  # the history no longer reaches back that far: one ERROR event ends the stream
            w.queue.append(("ERROR", status(410, "Expired", f"too old resource version: {rv} ({st.horizon})").body))
            w.end = "done"
            return 200, w
        else:  # every change after rv, then live ones
            start = bisect.bisect_right(st.history, rv, key=lambda change: change[0])
            w.queue.extend(e for e in map(w.event, st.history[start:]) if e)
        st.watches.add(w)
        return 200, w


# ---- routing ----
def parse_path(st, path):
    """/apis/<group>/<version>/[namespaces/<ns>/]<plural>[/<name>[/status]] -> (Res, ns, name, subresource)."""
    parts = path.strip("/").split("/")
    if len(parts) < 4 or parts[0] != "apis":
        raise page_not_found()
    rest = parts[3:]
    if rest[0] == "namespaces" and len(rest) >= 3:
        ns, plural, tail = rest[1], rest[2], rest[3:]
    elif len(rest) == 1:  # cluster-wide list of a namespaced resource
        ns, plural, tail = None, rest[0], []
    else:
        raise page_not_found()
    if RESOURCES.get(plural, ())[:2] != (parts[1], parts[2]) or plural in st.missing or len(tail) > 2:
        raise page_not_found()
    res, name, sub = Res(plural), (tail[0] if tail else None), (tail[1] if len(tail) > 1 else "")
    if sub not in ("", "status"):
        raise not_found(res, name)
    return res, ns, name, sub


def handle_api(st, method, path, query, raw, headers):
    res, ns, name, sub = parse_path(st, path)
    if "dryRun" in query:
        raise unsupported("dryRun")
    manager = query.get("fieldManager") or (headers.get("User-Agent") or "").split("/")[0][:128]  # upstream's default
    if name is None:
        if method == "GET":
            return do_watch(st, res, ns, query, path) if query_flag(query, "watch") else do_list(st, res, ns, query)
        if method == "POST":
            if ns is None:
                raise page_not_found()
            return do_create(st, res, ns, raw, manager)
        raise unsupported(f"{method} on a collection")
    if method == "GET":  # ?watch on a named object is ignored, as upstream's GetResource does
        with st.lock:
            if (res.plural, ns, name) not in st.objects:
                raise not_found(res, name)
            return 200, copy.deepcopy(st.objects[(res.plural, ns, name)])
    if method == "PATCH":
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype not in PATCH_TYPES:
            raise status(415, "UnsupportedMediaType",
                         "the body of the request was in an unknown format - accepted media types include: " + ", ".join(PATCH_TYPES))
        if "force" in query and ctype != APPLY:
            raise invalid("meta.k8s.io", "PatchOptions", "", "force", "Forbidden: may not be specified for non-apply patch", "FieldValueForbidden")
        if ctype == APPLY:
            return do_apply(st, res, ns, name, sub, raw, query)
        if ctype == MERGE:
            return do_merge_patch(st, res, ns, name, sub, raw, manager)
        raise unsupported("application/json-patch+json")
    if method == "DELETE" and not sub:
        return do_delete(st, res, ns, name)
    raise unsupported(f"{method} on {'/status' if sub else 'an object'}")


def fault_error(st, f, path):
    code, msg = int(f["status"]), f.get("message") or "injected by the kube-apiserver stand-in"
    if code == 401:
        return ApiError(401, UNAUTHORIZED)
    if code == 409:
        try:
            res, _, name, _ = parse_path(st, path)
            return modified(res, name or "")
        except ApiError:
            return status(409, "Conflict", msg)
    if code == 410:
        return status(410, "Expired", EXPIRED)
    if code == 429:
        return ApiError(429, status(429, "TooManyRequests", "Too many requests, please try again later.", {"retryAfterSeconds": 1}).body,
                        headers=[("Retry-After", "1")])
    if code == 500:
        return status(500, "InternalError", f"Internal error occurred: {msg}", {"causes": [{"message": msg}]})
    return status(code, f.get("reason") or REASONS.get(code, ""), msg)


def handle_control(st, method, path, query, raw):
    body = json.loads(raw) if raw.strip() else None
    with st.lock:
        if path == "/_standin/objects" and method == "GET":
            return 200, [copy.deepcopy(st.objects[k]) for k in sorted(st.objects)]
        if path == "/_standin/objects" and method == "DELETE":
            for key in sorted(st.objects):  # one deletion each, so watches see them
                st.remove(key, st.objects[key])
            return 200, {"ok": True}
        if path == "/_standin/objects" and method == "POST":
            return seed(st, body, query)
        if path == "/_standin/requests" and method in ("GET", "DELETE"):
            if method == "DELETE":
                st.requests.clear()
            return 200, list(st.requests)
        if path == "/_standin/faults" and method in ("GET", "POST", "DELETE"):
            if method == "POST":
                if not isinstance(body, dict) or not {"method", "pathContains", "status"} <= body.keys():
                    return 400, {"error": "need method, pathContains, status (and optional count, message, reason)"}
                st.faults.append(dict(body, count=int(body.get("count", 1))))
            if method == "DELETE":
                st.faults.clear()
            return 200, copy.deepcopy(st.faults)
        if path == "/_standin/expire-continue" and method == "POST":
            st.snapshots.clear()
            st.rv += 1  # tokens issued from now on carry a newer resourceVersion than any expired one
            return 200, {"ok": True}
        if path == "/_standin/watches" and method == "GET":
            return 200, {"count": len(st.watches), "watches": sorted((w.info for w in st.watches), key=lambda i: i["started"])}
        if path == "/_standin/compact" and method == "POST":
            st.horizon, st.history = st.rv, []
            return 200, {"horizon": st.rv}
        if path == "/_standin/close-watches" and method == "POST":
            return 200, {"closed": st.close_watches("cut" if query_flag(query, "abrupt") else "close")}
        if path == "/_standin/tokens" and method == "POST":
            if not isinstance(body, dict) or not isinstance(body.get("tokens"), list):
                return 400, {"error": 'need {"tokens": [...]}'}
            st.tokens = set(map(str, body["tokens"]))
            return 200, {"ok": True}
    return 404, {"error": f"no control endpoint {method} {path}"}


def seed(st, obj, query):
    obj = obj if isinstance(obj, dict) else {}
    meta = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    plural = next((p for p, (g, v, k) in RESOURCES.items() if (f"{g}/{v}", k) == (obj.get("apiVersion"), obj.get("kind"))), None)
    if plural is None or not meta.get("name") or not meta.get("namespace"):
        return 400, {"error": "need a served apiVersion/kind, metadata.name and metadata.namespace"}
    res, key = Res(plural), (plural, meta["namespace"], meta["name"])
    live, new, ents = st.objects.get(key), copy.deepcopy(obj), {}
    server_meta(res, new, live, key[1], key[2])  # status is kept: tests seed it
    if query.get("fieldManager"):
        ents[(query["fieldManager"], "Apply", "")] = {"apiVersion": res.api_version, "time": now(), "paths": set(leaves(owned_view(new, "")))}
    st.owners.pop(key, None)
    return (201 if live is None else 200), st.write(key, live, new, ents, None)


# ---- HTTP ----
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length, except a watch's (chunked)
    server_version, sys_version = "kube-apiserver-standin", ""

    def log_message(self, *args):
        pass

    def read_body(self):
        if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(chunks)

    def send(self, code, body, ctype="application/json", headers=()):
        data = (body if isinstance(body, str) else encode(body) + "\n").encode()
        self.send_response(code)
        for k, v in [("Content-Type", ctype), ("Content-Length", str(len(data)))] + list(headers):
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def dispatch(self):
        st, url = self.server.state, urlsplit(self.path)
        path, query = url.path, dict(parse_qsl(url.query, keep_blank_values=True))
        raw = self.read_body()
        if path.startswith("/_standin/"):
            try:
                return self.send(*handle_control(st, self.command, path, query, raw))
            except Exception as e:  # a malformed control request still gets an answer
                return self.send(400, {"error": f"{type(e).__name__}: {e}"})
        if not path.startswith("/api"):
            e = page_not_found()
            return self.send(e.code, e.body, e.ctype, e.headers)
        try:
            logged_body = json.loads(raw) if raw else None
        except ValueError:
            logged_body = None
        ctype, headers = "application/json", []
        try:
            with st.lock:
                fault = next((f for f in st.faults if f["method"].upper() == self.command and f["pathContains"] in path), None)
                if fault:
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        st.faults.remove(fault)
                    raise fault_error(st, fault, path)
                auth = (self.headers.get("Authorization") or "").strip().split(" ")
                if len(auth) < 2 or auth[0].lower() != "bearer" or auth[1] not in st.tokens:
                    raise ApiError(401, UNAUTHORIZED)
            code, body = handle_api(st, self.command, path, query, raw, self.headers)
        except ApiError as e:
            code, body, ctype, headers = e.code, e.body, e.ctype, e.headers
        except Exception as e:
            traceback.print_exc()
            code, body = 500, status(500, "InternalError", f"Internal error occurred: {e}", {"causes": [{"message": str(e)}]}).body
        with st.lock:  # logged before answering, so a test reading the log after a response sees it
            st.requests.append({"method": self.command, "path": path, "query": query, "contentType": self.headers.get("Content-Type"),
                                "authorization": self.headers.get("Authorization"), "body": logged_body, "status": code})
        if isinstance(body, Watch):
            return self.stream(body)
        self.send(code, body, ctype, headers)

    def stream(self, w):
        """Serve a watch as upstream's WatchServer does: 200 and headers at once, then one JSON event per line, each
        written (and so flushed) as it comes, until the timeout, close-watches, or the client leaving."""
        st, chunked = self.server.state, self.request_version != "HTTP/1.0"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:  # HTTP/1.0 has no chunking: the body ends with the connection (as Go's server does)
            self.close_connection = True
        self.end_headers()
        start = last_sent = time.monotonic()
        end = None
        try:
            while end is None:
                with w.cond:
                    if not w.queue and w.end is None:
                        wake = [start + w.seconds, last_sent + st.bookmark_seconds if w.bookmarks else float("inf")]
                        w.cond.wait(max(0.0, min(0.2, min(wake) - time.monotonic())))  # 0.2: how often to look for a gone client
                    batch, end = list(w.queue), w.end
                    w.queue.clear()
                if end == "cut":
                    break
                for kind, obj in batch:
                    self.write_chunk(f'{{"type":{q(kind)},"object":{encode(obj)}}}\n'.encode(), chunked)
                    last_sent = time.monotonic()
                t = time.monotonic()
                if end is None and t >= start + w.seconds:
                    end = "done"
                elif end is None and w.bookmarks and t - last_sent >= st.bookmark_seconds:
                    with st.lock, w.cond:  # nothing queued: everything up to st.rv has been sent
                        rv = st.rv if not w.queue and st.rv >= w.after else None  # never behind the client's resourceVersion
                    if rv is not None:
                        bookmark = {"kind": w.res.kind, "apiVersion": w.res.api_version, "metadata": {"resourceVersion": str(rv)}}
                        self.write_chunk(f'{{"type":"BOOKMARK","object":{encode(bookmark)}}}\n'.encode(), chunked)
                    last_sent = t  # sent, or events are queued, or the next try is one period away
                if end is None and self.client_gone():
                    end = "gone"
            if end in ("done", "close") and chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away mid-write
            end = "gone"
        finally:
            with st.lock:
                st.watches.discard(w)
        if end != "done":  # closed by the control API (like a restarting apiserver or a cut connection), or gone
            self.close_connection = True
        if end == "cut":
            try:
                self.connection.shutdown(socket.SHUT_RDWR)  # no terminating chunk: the client sees a truncated body
            except OSError:
                pass

    def write_chunk(self, data, chunked):  # wfile is unbuffered: each write goes out at once
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)

    def client_gone(self):
        """True when the client closed its end (a watch has no other way to notice while idle). A client sends
        nothing while a watch streams, so readable means EOF, a TLS close_notify, or an unexpected byte."""
        conn = self.connection
        try:
            if not select.select([conn], [], [], 0)[0]:
                return False
            timeout = conn.gettimeout()
            conn.settimeout(0)
            try:
                if isinstance(conn, ssl.SSLSocket):  # TLS can't peek; bytes read here are lost, so the connection can't be reused
                    data = conn.recv(1024)
                    self.close_connection = self.close_connection or bool(data)
                    return not data
                return conn.recv(1, socket.MSG_PEEK) == b""
            finally:
                conn.settimeout(timeout)
        except (ssl.SSLWantReadError, BlockingIOError):  # only TLS records without application data so far
            return False
        except (OSError, ValueError):
            return True

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = dispatch


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # listen backlog; socketserver's 5 drops connections when many clients connect at once
    ssl_ctx = None

    def finish_request(self, request, client_address):
        if self.ssl_ctx is None:
            return super().finish_request(request, client_address)
        request.settimeout(30)  # the TLS handshake runs here, in the connection's own thread, not in accept()
        try:
            conn = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        conn.settimeout(None)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


def main():
    ap = argparse.ArgumentParser(description="kube-apiserver stand-in for tests (not Kubernetes)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--token", action="append", required=True, help="accepted bearer token (repeatable)")
    ap.add_argument("--tls-cert"), ap.add_argument("--tls-key")
    ap.add_argument("--crd-missing", action="append", default=[], choices=sorted(RESOURCES), metavar="PLURAL", help="type not served")
    ap.add_argument("--max-seconds", type=float, default=600, help="stop by itself after this long")
    ap.add_argument("--bookmark-seconds", type=float, default=1.0, help="BOOKMARK period on an idle watch with allowWatchBookmarks")
    ap.add_argument("--watch-max-seconds", type=float, default=30, help="a watch without timeoutSeconds ends after this long")
    args = ap.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    Server.address_family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    server = Server((args.host, args.port), Handler)
    server.state = State(args.token, args.crd_missing, args.bookmark_seconds, args.watch_max_seconds)
    if args.tls_cert:
        server.ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.ssl_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        server.ssl_ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.ssl_ctx.set_alpn_protocols(["http/1.1"])
    print(f"listening {server.server_address[1]}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop.wait(args.max_seconds)  # until a signal, or the safety net
    with server.state.lock:  # end open watches cleanly, as a terminating apiserver does
        server.state.close_watches("close")
    deadline = time.monotonic() + 2
    while server.state.watches and time.monotonic() < deadline:
        time.sleep(0.02)
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
