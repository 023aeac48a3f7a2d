#!/bin/sh
# Make the images' base locally, from Debian packages, for machines that reach no image registry:
# debootstrap a minimal Debian 12 (bookworm) with Python 3.11, then `docker import` it.
# Usage: base-image.sh [TAG]   (does nothing when TAG exists; default digitops/base:bookworm-py3.11)
set -eu
tag=${1:-digitops/base:bookworm-py3.11}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$tag" >/dev/null 2>&1; then exit 0; fi
command -v debootstrap >/dev/null || {
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase \
  --include=python3,python3-venv,python3-pip,ca-certificates,libgomp1 \
  bookworm "$root" "$mirror"
# Keep the image small: no package lists, caches, documentation or locales.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/tmp/*
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' - "$tag"
echo "made $tag"
