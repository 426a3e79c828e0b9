#!/usr/bin/env bash
# The Debian base every test server image starts from, built into DIR:
# bookworm (minbase), no docs, manuals or translations, and no service started
# by a package. Run as root. ../support/server-image.sh caches DIR as a tarball
# (with its /dev, for the chroot) and each server's rootfs.sh installs its
# packages into a copy of it.
#
# Usage: rootfs-base.sh DIR DEBIAN_MIRROR
#
# The SHA-256 of this file is part of the key of every cached tarball: any
# change here rebuilds them all on the next run.
set -euo pipefail
dir=$1
mirror=$2

debootstrap --variant=minbase bookworm "$dir" "$mirror"

cat >"$dir/etc/dpkg/dpkg.cfg.d/excludes" <<'CFG'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
CFG
# Packages must not try to start services inside the chroot or the image.
printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
chmod 755 "$dir/usr/sbin/policy-rc.d"
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
  "$dir"/usr/share/locale/*
