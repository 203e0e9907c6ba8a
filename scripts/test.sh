#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/generate-proto.sh --check   # the committed generated code matches relay.proto
swift build --build-tests
swift test "$@"
