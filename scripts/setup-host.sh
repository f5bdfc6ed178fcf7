#!/usr/bin/env bash
# Host setup for ciliumpy: everything a fresh Debian bookworm host needs to run the
# agent and the tests. Idempotent: every step checks before it acts, so a second run
# changes nothing. Called by `make agent` and `make test` (the README's two commands).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${CILIUMPY_VENV:-$ROOT/.venv}
IMAGE=${CILIUMPY_IMAGE:-ciliumpy/busybox}
STATE=/var/lib/ciliumpy-host
log() { printf '[setup] %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { echo "setup-host.sh must run as root" >&2; exit 1; }
mkdir -p "$STATE"

# --- apt packages -----------------------------------------------------------
# prometheus: for promtool (`promtool check metrics` on /metrics in the tests)
# chromium: a real browser for the service map page's test (headless, --dump-dom)
# dnsmasq-base, bind9-dnsutils: a real resolver (run by the DNS tests in their own
# namespaces, never as a service) and dig
APT_PKGS=(docker.io docker-compose python3-bpfcc bpfcc-tools linux-headers-amd64 busybox-static
          iperf3 nftables iproute2 iptables tcpdump procps psmisc python3-venv python3-pip
          systemd jq curl wrk nginx-light prometheus chromium
          dnsmasq-base bind9-dnsutils)
# Consul is only in bullseye: add that suite with a low pin so nothing else comes from it.
if [ ! -f /etc/apt/sources.list.d/bullseye.sources ]; then
  log "adding Debian bullseye (pinned to priority 100) for consul"
  cat > /etc/apt/sources.list.d/bullseye.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat > /etc/apt/preferences.d/bullseye-pin <<'PIN'
Package: *
Pin: release n=bullseye
Pin-Priority: 100
PIN
  rm -f "$STATE/apt-updated"
fi
missing=()
for p in "${APT_PKGS[@]}" consul; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  if [ ! -f "$STATE/apt-updated" ]; then apt-get update -q; touch "$STATE/apt-updated"; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  # only promtool is wanted from prometheus: not a server listening on :9090
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

# --- kernel headers for bcc -------------------------------------------------
KDIR=/lib/modules/$(uname -r)
if [ ! -e "$KDIR/build" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1)
  [ -n "$hdr" ] || { echo "no Debian linux-headers-*-amd64 under /usr/src" >&2; exit 1; }
  log "linking $KDIR/{build,source} to $hdr"
  mkdir -p "$KDIR"
  ln -sfn "$hdr" "$KDIR/build"
  ln -sfn "${common:-$hdr}" "$KDIR/source"
fi

# --- bpffs ------------------------------------------------------------------
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
  log "mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi

# --- venv -------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV (Debian python3, system site packages for bcc)"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
stamp="$VENV/.installed-$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  log "installing ciliumpy (editable) and test tools into the venv"
  "$VENV/bin/pip" install -q --upgrade pip
  # "compat" editable mode: a plain path in a .pth file instead of setuptools' import
  # finder, which every Python start (each `ciliumpy` command) paid ~10 ms to import;
  # the default mode if a future setuptools no longer offers it
  "$VENV/bin/pip" install -q -e "$ROOT[test]" --config-settings editable_mode=compat \
    || "$VENV/bin/pip" install -q -e "$ROOT[test]"
  rm -f "$VENV"/.installed-*; touch "$stamp"
fi

# --- dockerd ----------------------------------------------------------------
if ! /usr/bin/docker version >/dev/null 2>&1; then
  log "starting dockerd (log: /var/log/ciliumpy-dockerd.log)"
  "$ROOT/scripts/start-dockerd.sh"
fi

# --- busybox image ----------------------------------------------------------
if ! /usr/bin/docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "building image $IMAGE from busybox-static"
  "$ROOT/scripts/build-busybox-image.sh" "$IMAGE"
fi
log "host ready"
