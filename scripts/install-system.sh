#!/usr/bin/env bash
# Install the Debian packages the test suite uses for real, if missing (CI runs as root on a
# fresh machine; a developer without root gets a clear message instead).
set -euo pipefail
need=()
command -v rsync >/dev/null 2>&1 || need+=(rsync)   # store merges
command -v make >/dev/null 2>&1 || need+=(make)     # the quick start builds a C program
command -v cc >/dev/null 2>&1 || need+=(gcc)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "nixlet tests need: ${need[*]} (install them with apt-get, as root)" >&2
  exit 1
fi
echo "installing ${need[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
