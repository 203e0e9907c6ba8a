#!/usr/bin/env bash
# The main job, on embedded defaults: installs what is missing, builds artifact-mirror, packs a
# real Git repository (this checkout by default, or the URL/path given) as a Flux artifact,
# and verifies the artifact against Flux's unpack rules.
#
#   scripts/run.sh                          # pack this repository's current branch
#   scripts/run.sh <url-or-path> [pack options…]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product artifact-mirror
bin=.build/release/artifact-mirror
work=.relay-demo

if (($# > 0)); then
  source=$1; shift
  args=("$@")
else
  source=.
  if branch=$(git symbolic-ref --quiet --short HEAD); then
    args=(--branch "$branch")
  else
    args=(--commit "$(git rev-parse HEAD)")
  fi
fi

result=$("$bin" pack "$source" "${args[@]}" --cache "$work/mirrors" --output "$work/store" --json)
echo "$result"
path=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])' <<<"$result")
digest=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])' <<<"$result")
"$bin" verify "$path" --digest "$digest"
