#!/usr/bin/env bash
# Installs the Debian packages mrprov builds and tests with, only those missing.
# Runs apt-get through sudo when not root. Safe to run repeatedly.
#   scripts/install-deps.sh          what `make run` and `make test` need
#   scripts/install-deps.sh --bench  also what `make bench` needs
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  liblua5.4-dev lua5.4 lua-cjson lua-yaml
  libmicrohttpd-dev libssh2-1-dev libcurl4-openssl-dev libsqlite3-dev libssl-dev
  lua-busted lua-socket lua-check lua-sql-postgres
  openssh-server openssh-client postgresql
  curl sqlite3 openssl cppcheck shellcheck
  python3 python3-yaml
  clang libclang-rt-14-dev valgrind
  chromium chromium-driver prometheus dpkg-dev
)
if [ "${1:-}" = "--bench" ]; then
  packages+=(wrk python3-fastapi python3-uvicorn)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
