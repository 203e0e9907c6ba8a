#!/usr/bin/env bash
# Installs the Debian packages Relay needs to build and to run its tests. Safe to run again:
# it installs only what is missing.
#   build:  libgit2-dev zlib1g-dev pkg-config
#   tests:  git (git daemon, http-backend), lighttpd + lighttpd-mod-openssl (HTTP(S) git server),
#           openssh-server (sshd), openssl (test CA), ca-certificates, python3 (independent
#           tarball reader), tar, skopeo (an OCI client pulling from the agent's registry
#           endpoint), chromium (headless: the status page test), procps (ps/pkill in tests),
#           postgresql (a real server the tests start in their own directories: initdb,
#           postgres, psql; run as the postgres user under root), util-linux (runuser),
#           docker-registry (the CNCF distribution registry: a real OCI upstream for Helm chart
#           and OCI artifact sources), apache2-utils (htpasswd: its bcrypt user file)
# Packages are installed with --no-install-recommends, so everything a test loads at run time
# is named here explicitly (lighttpd's TLS module is only a Recommends of lighttpd).
set -euo pipefail

packages=(libgit2-dev zlib1g-dev libsqlite3-dev pkg-config git lighttpd lighttpd-mod-openssl openssh-server openssh-client openssl ca-certificates tar gzip curl skopeo chromium procps postgresql util-linux docker-registry apache2-utils jq)
command -v python3 >/dev/null 2>&1 || packages+=(python3)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} > 0)); then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
  echo "setup: no Swift toolchain on PATH; install Swift 6.x (swift.org) and run this again" >&2
  exit 1
fi
