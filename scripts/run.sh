#!/usr/bin/env bash
# The main job, on embedded defaults: a real relay-server and a real relay-agent on loopback.
#
#   1. installs what is missing and builds relay-server, relay-agent and artifact-mirror (release);
#   2. first run only: creates development TLS certificates, an agent token and a Git
#      repository from the bundled example manifests (examples/podinfo-like), all under .relay-demo/;
#   3. starts the relay (tunnel on 127.0.0.1:8443, webhooks on 127.0.0.1:8080) and the agent
#      (Flux endpoint on 127.0.0.1:9090), and waits for the first artifact to arrive at the agent;
#   4. shows what Flux would pull: the OCI tags and manifest of the source, and its artifact URL;
#   5. commits a change to the example repository, sends the relay a GitLab push webhook,
#      and shows the new revision arriving at the agent and behind the `main` OCI tag;
#   6. sends the agent a Flux event (as notification-controller would) and shows it on the
#      relay's status timeline, and prints the status page's address;
#   7. stops both (RELAY_DEMO_KEEP=1 leaves them running; logs are in .relay-demo/*.log).
#
# Ports can be changed with RELAY_DEMO_TUNNEL_PORT, RELAY_DEMO_HTTP_PORT and RELAY_DEMO_FLUX_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
scripts/setup.sh
swift build -c release --product relay-server
swift build -c release --product relay-agent
bin="$root/.build/release"
demo="$root/.relay-demo"
tunnel_port=${RELAY_DEMO_TUNNEL_PORT:-8443}
http_port=${RELAY_DEMO_HTTP_PORT:-8080}
flux_port=${RELAY_DEMO_FLUX_PORT:-9090}
mkdir -p "$demo"

say() { printf '\n== %s\n' "$*"; }

# --- first run: certificates, token, example repository, configuration --------------------
"$bin/relay-server" dev-certs --dir "$demo/tls" >/dev/null
if [ ! -s "$demo/edge-1.token" ]; then
  "$bin/relay-server" hash-token --generate | head -n 1 > "$demo/edge-1.token"
  chmod 600 "$demo/edge-1.token"
fi
token_sha=$("$bin/relay-server" hash-token --token-file "$demo/edge-1.token")
webhook_token_file="$demo/webhook.token"
[ -s "$webhook_token_file" ] || "$bin/relay-server" hash-token --generate | head -n 1 > "$webhook_token_file"
reader_token_file="$demo/reader.token"
[ -s "$reader_token_file" ] || "$bin/relay-server" hash-token --generate | head -n 1 > "$reader_token_file"
reader_sha=$("$bin/relay-server" hash-token --token-file "$reader_token_file")
repo="$demo/example-repo"
git_demo() { git -C "$repo" -c user.name="Relay demo" -c user.email="demo@relay.invalid" "$@"; }
if [ ! -d "$repo/.git" ]; then
  mkdir -p "$repo"
  cp -R examples/podinfo-like/. "$repo/"
  git init -q -b main "$repo"
  git_demo add -A
  git_demo commit -q -m "Example manifests"
fi

cat > "$demo/relay.yaml" <<EOF
listen: 127.0.0.1:$tunnel_port
http: 127.0.0.1:$http_port
tls: {certFile: tls/server.pem, keyFile: tls/server-key.pem}
dataDir: relay-data
webhookTokenFile: webhook.token
sources:
  - name: example
    url: example-repo
    ref: {branch: main}
    interval: 1m
readers:
  - name: demo
    tokenSHA256: $reader_sha
agents:
  - name: edge-1
    tokenSHA256: $token_sha
    sources: [example]
EOF
cat > "$demo/agent.yaml" <<EOF
relay: 127.0.0.1:$tunnel_port
caFile: tls/ca.pem
tokenFile: edge-1.token
dataDir: agent-data
listen: 127.0.0.1:$flux_port
EOF

# --- run ------------------------------------------------------------------------------------
pids=()
cleanup() {
  if [ "${RELAY_DEMO_KEEP:-0}" = 1 ]; then
    echo "relay and agent keep running (pids ${pids[*]}); logs in $demo/*.log"
    return
  fi
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_for() {  # wait_for <seconds> <description> <command…>
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "timed out waiting for $what; last log lines:" >&2
      tail -n 20 "$demo/relay.log" "$demo/agent.log" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
}

say "starting relay-server (tunnel 127.0.0.1:$tunnel_port, webhooks http://127.0.0.1:$http_port)"
"$bin/relay-server" serve --config "$demo/relay.yaml" > "$demo/relay.log" 2>&1 &
pids+=($!)
wait_for 60 "the relay to package the example" curl -sf "http://127.0.0.1:$http_port/readyz"

say "starting relay-agent"
"$bin/relay-agent" run --config "$demo/agent.yaml" > "$demo/agent.log" 2>&1 &
pids+=($!)
head_commit=$(git_demo rev-parse HEAD)
has_revision() { "$bin/relay-agent" list --config "$demo/agent.yaml" --json | grep -q "main@sha1:$1"; }
wait_for 30 "the first artifact at the agent" has_revision "$head_commit"
echo "artifacts at the agent:"
"$bin/relay-agent" list --config "$demo/agent.yaml"

flux="http://127.0.0.1:$flux_port"
wait_for 10 "the Flux endpoint" curl -sf "$flux/readyz"
say "what Flux pulls from the agent (OCIRepository url: oci://127.0.0.1:$flux_port/example, insecure: true)"
echo "GET $flux/v2/example/tags/list"
curl -sf "$flux/v2/example/tags/list"; echo
show_manifest() {
  curl -sf "$flux/v2/example/manifests/main" | python3 -c '
import json, sys
m = json.load(sys.stdin)
layer = m["layers"][0]
print("  layer   ", layer["mediaType"], layer["digest"], layer["size"], "bytes")
for key, value in sorted(m["annotations"].items()):
    print("  " + key.rsplit(".", 1)[1].ljust(8), value)'
}
echo "GET $flux/v2/example/manifests/main"
show_manifest
digest=$(curl -sfI "$flux/v2/example/manifests/main" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
echo "  manifest $digest"

say "pushing a commit and sending the relay a GitLab push webhook"
# Always a different count than the one committed (a repeat would leave nothing to commit).
current=$(awk '/replicas:/ {print $2; exit}' "$repo/base/deployment.yaml")
replicas=$(( ${current:-1} % 6 + 2 ))
sed -i "s/replicas: [0-9]*/replicas: $replicas/" "$repo/base/deployment.yaml"
git_demo commit -q -am "Scale hello to $replicas replicas"
new_commit=$(git_demo rev-parse HEAD)
start_ms=$(date +%s%3N)
curl -sf -X POST "http://127.0.0.1:$http_port/hooks/gitlab" \
  -H "X-Gitlab-Token: $(cat "$webhook_token_file")" -H "Content-Type: application/json" \
  --data "{\"object_kind\":\"push\",\"ref\":\"refs/heads/main\",\"project\":{\"git_http_url\":\"$repo\"}}"
echo
wait_for 30 "the new revision at the agent" has_revision "$new_commit"
end_ms=$(date +%s%3N)
echo "revision main@sha1:$new_commit arrived at the agent $((end_ms - start_ms)) ms after the webhook:"
"$bin/relay-agent" list --config "$demo/agent.yaml"
echo "the OCI tag main now points at it:"
show_manifest

say "status back up: a Flux event at the agent, on the relay's timeline"
reader=$(cat "$reader_token_file")
since=$(curl -sf -H "Authorization: Bearer $reader" "http://127.0.0.1:$http_port/api/v1/timeline?limit=10000" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["next"])')
curl -sf -X POST "$flux/flux/events" -H "Content-Type: application/json" --data "{
  \"involvedObject\": {\"kind\": \"Kustomization\", \"namespace\": \"flux-system\", \"name\": \"example\"},
  \"severity\": \"info\", \"reason\": \"ReconciliationSucceeded\", \"reportingController\": \"kustomize-controller\",
  \"message\": \"Applied revision: main@sha1:$new_commit\", \"metadata\": {\"revision\": \"main@sha1:$new_commit\"}}"
echo
seen_event() {
  curl -sf -H "Authorization: Bearer $reader" "http://127.0.0.1:$http_port/api/v1/timeline?since=$since" | grep -q "$new_commit"
}
wait_for 10 "the event at the relay" seen_event
curl -sf -H "Authorization: Bearer $reader" "http://127.0.0.1:$http_port/api/v1/timeline?since=$since" | python3 -c '
import json, sys
for e in json.load(sys.stdin)["entries"]:
    ev = e.get("event") or {}
    print("  #%s  agent %s  journal seq %s  %s %s/%s: %s" % (e["id"], e["agent"], e["sequence"], ev.get("kind"), ev.get("namespace"), ev.get("name"), ev.get("message")))'
echo "status page: http://127.0.0.1:$http_port/?access_token=$reader   (RELAY_DEMO_KEEP=1 keeps it running)"
say "done: relay and agent logs are in $demo/relay.log and $demo/agent.log"
