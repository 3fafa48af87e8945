#!/usr/bin/env bash
# Installs the Debian 12 packages tpipe builds and tests with. Idempotent; uses sudo
# when not run as root.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config python3
  libopenblas-dev libdnnl-dev libcjson-dev libuv1-dev libutf8proc-dev libpcre2-dev
  libhttp-parser-dev libcurl4-openssl-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
