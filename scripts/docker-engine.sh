#!/bin/sh
# Make sure a Docker engine answers: install Debian's docker.io when dockerd is missing, and start
# it (as root, without iptables or a bridge: containers get only a loopback network) when it is
# not running. Elsewhere, with Docker Desktop or a running engine, this does nothing.
set -eu
if docker info >/dev/null 2>&1; then exit 0; fi
if ! command -v dockerd >/dev/null 2>&1; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io
fi
mkdir -p /var/log
nohup dockerd --iptables=false --bridge=none >/var/log/dockerd.log 2>&1 &
for _ in $(seq 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "error: dockerd did not start; see /var/log/dockerd.log" >&2
exit 1
