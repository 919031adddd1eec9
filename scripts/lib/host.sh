# shellcheck shell=bash
# Host-side helpers shared by scripts/pi-emulation.sh and scripts/bare-check.sh (sourced by their
# outer, host part; the caller defines SELF, its own path, and die MESSAGE).

# parse_rootfs_args "$@": sets ROOTFS_ONLY (0/1); --help prints the calling script's header
# comment (line 2 up to `set -Eeuo`) and exits.
parse_rootfs_args() {
  ROOTFS_ONLY=0
  case "${1:-}" in
    --rootfs-only) ROOTFS_ONLY=1 ;;
    -h|--help) sed -n '2,/^set -Eeuo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
}

# require_root_x86 WHAT: root (for WHAT: apt-get, mounts, chroot ...) on an x86_64 host.
require_root_x86() {
  [[ $(id -u) -eq 0 ]] || die "must run as root ($1); try: sudo $SELF"
  [[ "$(uname -m)" == "x86_64" ]] || die "this script runs on an x86_64 host (found $(uname -m))"
}

# stop_namespace PID: end an `unshare --pid --fork` child and everything in its namespace.
# unshare ignores SIGTERM while it waits, and the namespace's init ignores it too: SIGKILL the
# init, which takes every process (and every mount of the namespace) with it.
stop_namespace() {
  local pid="$1" init
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  init="$(cat "/proc/$pid/task/$pid/children" 2>/dev/null || pgrep -P "$pid" || true)"
  if [[ -n "$init" ]]; then kill -KILL $init 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
}
