#!/usr/bin/env bash
# Builds a tiny container image from Debian's busybox-static with `docker import`
# (no registry is reachable). Usage: build-busybox-image.sh IMAGE [DOCKER_HOST_SOCKET]
set -euo pipefail
IMAGE=${1:-ciliumpy/busybox}
SOCK=${2:-/run/docker.sock}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,var/www,root}
cp /bin/busybox "$tmp/bin/busybox"
for applet in $("$tmp/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$tmp/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$tmp/etc/passwd"
echo 'root:x:0:' > "$tmp/etc/group"
echo 'ciliumpy test page' > "$tmp/var/www/index.html"
tar -C "$tmp" -c . | /usr/bin/docker -H "unix://$SOCK" import \
  -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin' - "$IMAGE" >/dev/null
