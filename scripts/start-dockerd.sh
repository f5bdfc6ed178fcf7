#!/usr/bin/env bash
# Starts the host's dockerd for ciliumpy if none answers, and waits until it does.
# Flags: no default bridge (ciliumpy needs none), no iptables rules or masquerading
# (dockerd leaves the host firewall alone); Docker's default socket; log in
# /var/log/ciliumpy-dockerd.log. Used by setup-host.sh and by the dockerd-restart test.
set -euo pipefail
DOCKER_SOCK=${DOCKER_SOCK:-/run/docker.sock}
if /usr/bin/docker -H "unix://$DOCKER_SOCK" version >/dev/null 2>&1; then
  exit 0
fi
mkdir -p /run/docker/plugins
# dockerd outlives this script: it must not keep any descriptor the caller holds open
# (a lock taken with `flock LOCK make test`, for one, would then be held forever)
(
  for fd in /proc/self/fd/*; do
    fd=${fd##*/}
    if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
  done
  exec nohup /usr/sbin/dockerd --host="unix://$DOCKER_SOCK" --bridge=none --iptables=false \
       --ip-masq=false --pidfile=/run/docker.pid >>/var/log/ciliumpy-dockerd.log 2>&1
) &
for _ in $(seq 1 120); do
  /usr/bin/docker -H "unix://$DOCKER_SOCK" version >/dev/null 2>&1 && exit 0
  sleep 0.5
done
tail -20 /var/log/ciliumpy-dockerd.log >&2
exit 1
