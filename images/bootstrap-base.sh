#!/usr/bin/env bash
# Make a Debian bookworm base image from Debian's packages, without any image
# registry: debootstrap a minimal root filesystem, then `docker import` it.
#
# Does nothing when the image already exists. The last line of output is the
# image tag, so callers can do: OL_BASE_IMAGE=$(images/bootstrap-base.sh | tail -n1)
#
# Settings (environment):
#   OL_BASE_TAG     tag to create      (default openlambda/base:bookworm)
#   DEBIAN_MIRROR   Debian mirror URL  (default: the first Debian mirror in this
#                   host's apt sources; there is no built-in fallback)
set -euo pipefail

TAG="${OL_BASE_TAG:-openlambda/base:bookworm}"

log() { echo "bootstrap-base: $*" >&2; }

if docker image inspect "$TAG" >/dev/null 2>&1; then
    log "image $TAG exists; nothing to do"
    echo "$TAG"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    log "debootstrap needs root; run this script as root (sudo $0)"
    exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq debootstrap >&2
fi

mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    # Use the host's own mirror when it has one (it is known to be reachable).
    mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -oE 'https?://[^ ]+' | head -n1 || true)
fi
if [ -z "$mirror" ]; then
    log "no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/;"
    log "set DEBIAN_MIRROR to the URL of a Debian mirror this machine can reach"
    log "(the same URL apt uses, ending in /debian) and run this script again"
    exit 1
fi

rootfs=$(mktemp -d /tmp/ol-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

log "debootstrapping bookworm from $mirror into $rootfs (a few minutes)"
debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >&2

# Trim what a container never needs.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
echo "deb $mirror bookworm main" > "$rootfs/etc/apt/sources.list"

log "importing into docker as $TAG"
tar -C "$rootfs" -c . | docker import \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV LANG=C.UTF-8' \
    --message "openlambda base: debootstrap bookworm minbase" \
    - "$TAG" >&2

log "done"
echo "$TAG"
