# shellcheck shell=bash
# What scripts/bare-check.sh and scripts/pi-emulation.sh share from their first line on, sourced
# right after their `set -Eeuo pipefail` by every part of them (host, namespace and, for the bare
# check, the guest, which runs the copy in the rootfs's checkout):
#   - SCRIPT_DIR, REPO, SELF: the sourcing script's folder, its checkout, its own path;
#     GUEST_REPO: where the checkout's copy sits in the rootfs (../shared beside it, as in a
#     checkout); T0 and say MESSAGE: the clock and the "==> " step header with its time;
#   - the Debian rootfs they build with mmdebstrap and cache: the suite, its mirrors, and the
#     cache folder's name (rootfs_dir).

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
SELF="$SCRIPT_DIR/$(basename "${BASH_SOURCE[1]}")"
GUEST_REPO=/work/captcha-edge
T0=$(date +%s)

say() { printf '\n==> %s  [%ss]\n' "$*" "$(( $(date +%s) - T0 ))"; }

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
