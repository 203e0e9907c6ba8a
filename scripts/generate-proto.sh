#!/usr/bin/env bash
# Regenerates the committed Swift code for the relay ⇄ agent protocol:
#   Sources/Wire/Proto/relay.proto → Sources/Wire/Generated/relay.pb.swift   (swift-protobuf)
#                                  → Sources/Wire/Generated/relay.grpc.swift (grpc-swift-2)
#
#   scripts/generate-proto.sh           regenerate both files in place
#   scripts/generate-proto.sh --check   regenerate into a temporary directory and fail if the
#                                       committed files differ (for CI)
#
# Uses Debian's protoc (installed via apt if missing) and the two protoc plugins, built once with
# SwiftPM into .build-protoc/plugins (about 2–3 minutes the first time, seconds afterwards).
# The plugin versions are pinned exactly so that regeneration is byte-for-byte reproducible; when
# bumping swift-protobuf, grpc-swift-2 or grpc-swift-protobuf in Package.swift, bump them here
# too and regenerate.
set -euo pipefail

SWIFT_PROTOBUF_VERSION="1.39.0"
GRPC_SWIFT_2_VERSION="2.4.3"        # holds GRPCCodeGen, which protoc-gen-grpc-swift-2 uses
GRPC_SWIFT_PROTOBUF_VERSION="2.4.1"

usage() {
  echo "usage: $0 [--check]" >&2
  exit 2
}

check=0
case "$#:${1:-}" in
  0:) ;;
  1:--check) check=1 ;;
  *) usage ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
proto_dir="$repo/Sources/Wire/Proto"
generated_dir="$repo/Sources/Wire/Generated"
files=(relay.pb.swift relay.grpc.swift)
scratch="$repo/.build-protoc"
plugins="$scratch/plugins"

# ---- protoc ----
if ! command -v protoc >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "generate-proto: installing protobuf-compiler" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
  echo "generate-proto: no Swift toolchain on PATH; install Swift 6.x (swift.org) and run this again" >&2
  exit 1
fi

# ---- protoc plugins (a throwaway package that only depends on the two generator packages) ----
mkdir -p "$plugins"
manifest="$(cat <<EOF
// swift-tools-version:6.1
// Written by scripts/generate-proto.sh: builds the protoc plugins. Do not edit.
import PackageDescription

let package = Package(
    name: "relay-protoc-plugins",
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", exact: "$SWIFT_PROTOBUF_VERSION"),
        .package(url: "https://github.com/grpc/grpc-swift-2", exact: "$GRPC_SWIFT_2_VERSION"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", exact: "$GRPC_SWIFT_PROTOBUF_VERSION"),
    ],
    targets: []
)
EOF
)"
# Rewrite the manifest only when it changes, so that an up-to-date build stays a no-op.
if [ ! -f "$plugins/Package.swift" ] || [ "$(cat "$plugins/Package.swift")" != "$manifest" ]; then
  printf '%s\n' "$manifest" >"$plugins/Package.swift"
fi

bin="$plugins/.build/release"
if [ ! -x "$bin/protoc-gen-swift" ] || [ ! -x "$bin/protoc-gen-grpc-swift-2" ]; then
  echo "generate-proto: building protoc-gen-swift and protoc-gen-grpc-swift-2 (first run: a few minutes)" >&2
fi
for product in protoc-gen-swift protoc-gen-grpc-swift-2; do
  swift build --package-path "$plugins" -c release --product "$product" --quiet
done

# ---- generate ----
out="$(mktemp -d "$scratch/out.XXXXXX")"
trap 'rm -rf "$out"' EXIT

protoc \
  --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
  --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" \
  --proto_path="$proto_dir" \
  --swift_out="$out" \
  --swift_opt=Visibility=Public \
  --grpc-swift-2_out="$out" \
  --grpc-swift-2_opt=Visibility=Public \
  relay.proto

for file in "${files[@]}"; do
  if [ ! -f "$out/$file" ]; then
    echo "generate-proto: protoc did not produce $file" >&2
    exit 1
  fi
done

if ((check)); then
  stale=()
  for file in "${files[@]}"; do
    if [ ! -f "$generated_dir/$file" ]; then
      echo "generate-proto: Sources/Wire/Generated/$file is missing" >&2
      stale+=("$file")
    elif ! diff -u --label "committed/$file" --label "regenerated/$file" \
      "$generated_dir/$file" "$out/$file" >&2; then
      stale+=("$file")
    fi
  done
  if ((${#stale[@]} > 0)); then
    echo "generate-proto: Sources/Wire/Generated is out of date (${stale[*]}): run scripts/generate-proto.sh and commit the result" >&2
    exit 1
  fi
  echo "generate-proto: Sources/Wire/Generated is up to date" >&2
else
  mkdir -p "$generated_dir"
  for file in "${files[@]}"; do
    mv -f "$out/$file" "$generated_dir/$file"
  done
  echo "generate-proto: regenerated Sources/Wire/Generated/{${files[0]},${files[1]}}" >&2
fi
