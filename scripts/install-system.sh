#!/usr/bin/env bash
# Install the Debian packages the test suite uses for real, if missing (CI runs as root on a
# fresh machine; a developer without root gets a clear message instead).
set -euo pipefail
need=()
command -v rsync >/dev/null 2>&1 || need+=(rsync)   # store merges
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)   # sync over ssh
[ -x /usr/sbin/sshd ] || need+=(openssh-server)   # the sync tests start their own sshd
command -v make >/dev/null 2>&1 || need+=(make)     # the quick start builds a C program
command -v cc >/dev/null 2>&1 || need+=(gcc)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "nixlet tests need: ${need[*]} (install them with apt-get, as root)" >&2
  exit 1
fi
echo "installing ${need[*]}"
apt-get update -qq
# Installing openssh-server must not start a system sshd (on port 22, every address): the
# tests start their own, on 127.0.0.1. A policy-rc.d answering 101 tells the package's
# scripts not to start services; one we add is removed afterwards.
policy=/usr/sbin/policy-rc.d
added_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
fi
trap 'if [ -n "$added_policy" ]; then rm -f "$policy"; fi' EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
