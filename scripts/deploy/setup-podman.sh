#!/usr/bin/env bash
# Sets this Debian 12 host up to build and run pskit's container images with
# podman: the packages, /etc/containers/containers.conf, and a local
# debian:bookworm base image made from the Debian mirror (no container registry
# is reachable here). Idempotent: a second run changes nothing and takes
# seconds. Run as root. The facts behind each step are in HOST-NOTES.md.
#
#   scripts/deploy/setup-podman.sh
set -euo pipefail

log() { echo "setup-podman: $*"; }
die() { echo "setup-podman: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and writes /etc/containers)"

# podman with runc (crun refuses this host's cgroups v1), netavark +
# aardvark-dns (containers on a user-made network find each other by name:
# compose service names), podman-compose for deploy/compose, debootstrap to
# make the base image, tini (the images' PID 1 is copied from the base's
# package, this one is for checks on the host) and catatonit (the pause
# process `podman kube play` needs for a pod). iptables: netavark sets up
# every podman network's NAT with it; without it each network fails with
# "netavark: No such file or directory" (seen on a fresh host). curl:
# test-compose.sh asks the stack's Prometheus over HTTP with it.
# install-deps.sh installs those not yet installed (after apt-get update).
"$(dirname "$0")/../install-deps.sh" --packages \
  podman runc netavark aardvark-dns podman-compose debootstrap tini catatonit iptables curl

# containers.conf: runc as the runtime (cgroups v1), netavark as the network
# backend (name resolution between containers), and default ulimits that do
# not exceed the root shell's (it lacks CAP_SYS_RESOURCE, so podman's default
# of raising nofile to 1048576 fails every container start).
CONF=/etc/containers/containers.conf
WANT_CONF='# Written by pskit scripts/deploy/setup-podman.sh; see HOST-NOTES.md.
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]

[engine]
runtime = "runc"

[network]
network_backend = "netavark"'
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$WANT_CONF" ]; then
  log "writing $CONF"
  mkdir -p /etc/containers
  printf '%s\n' "$WANT_CONF" >"$CONF"
fi

# podman keeps the network backend it first used in its database; switching to
# netavark takes a reset (which deletes images and containers). Only when the
# backend in use is not netavark yet: a reset would wipe other users' work.
backend="$(podman info --format '{{.Host.NetworkBackend}}' 2>/dev/null || true)"
if [ "$backend" != "netavark" ]; then
  log "network backend is '${backend:-unknown}', not netavark: podman system reset -f"
  podman system reset -f
  backend="$(podman info --format '{{.Host.NetworkBackend}}')"
  [ "$backend" = "netavark" ] || die "podman still reports network backend '$backend' after a reset; check $CONF"
fi

# A debian:bookworm base image, since none can be pulled: debootstrap a
# minimal bookworm from the mirror apt already uses, import it, and tag it as
# docker.io/library/debian:bookworm so an unchanged `FROM debian:bookworm`
# (and the compose file's images) resolve locally.
if podman image exists localhost/debian:bookworm; then
  log "localhost/debian:bookworm exists"
else
  # The mirror: the first URIs line (not the security archive) of the deb822
  # sources file Debian 12 installs, else the first `deb` line of the older
  # /etc/apt/sources.list, else Debian's own mirror.
  SOURCES=/etc/apt/sources.list.d/debian.sources
  mirror=""
  if [ -f "$SOURCES" ]; then
    mirror="$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$SOURCES")"
  fi
  if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    # `deb [options] URI suite ...`: the URI is the first field after the
    # optional [...] block.
    mirror="$(awk '$1 == "deb" && $0 !~ /security/ {
        for (i = 2; i <= NF; i++) { if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; continue } print $i; exit } }' \
      /etc/apt/sources.list)"
  fi
  : "${mirror:=http://deb.debian.org/debian}"
  rootfs="$(mktemp -d /var/tmp/pskit-bookworm.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap bookworm from $mirror (a few minutes)"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  # Point the image's apt at the same mirror in the deb822 layout the
  # official image uses, and drop debootstrap's apt caches to keep it small.
  rm -f "$rootfs/etc/apt/sources.list"
  if [ -f "$SOURCES" ]; then
    cp "$SOURCES" "$rootfs/etc/apt/sources.list.d/debian.sources"
  else
    printf '%s\n' "Types: deb" "URIs: $mirror" "Suites: bookworm bookworm-updates" \
      "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
      >"$rootfs/etc/apt/sources.list.d/debian.sources"
  fi
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  log "importing it as localhost/debian:bookworm"
  tar -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - localhost/debian:bookworm >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi
if ! podman image exists docker.io/library/debian:bookworm; then
  podman tag localhost/debian:bookworm docker.io/library/debian:bookworm
fi
log "ready: $(podman --version), runtime $(podman info --format '{{.Host.OCIRuntime.Name}}'), network backend $backend"
