# shellcheck shell=bash
# The Debian rootfs that scripts/bare-check.sh and scripts/pi-emulation.sh build with mmdebstrap
# and cache: the suite, its mirrors, and the cache folder's name. Sourced by their outer (host)
# part, before anything uses SUITE, MIRRORS or the rootfs folder (their inner parts get the
# folder through the environment).

SUITE=bookworm
MIRRORS=(
  "deb http://deb.debian.org/debian $SUITE main"
  "deb http://deb.debian.org/debian $SUITE-updates main"
  "deb http://deb.debian.org/debian-security $SUITE-security main"
)

# rootfs_dir CACHE ARCH PACKAGES: prints the folder of the cached rootfs, keyed by what shapes it
# (suite, architecture, variant, packages, mirrors), so that changing any of them builds a new one.
rootfs_dir() {
  local key
  key="$(printf '%s\n' "$SUITE" "$2" apt "$3" "${MIRRORS[@]}" v1 | sha256sum | cut -c1-12)"
  printf '%s\n' "$1/rootfs-$SUITE-$2-$key"
}
