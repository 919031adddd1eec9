#!/usr/bin/env bash
# Bare-machine proof: run the README's commands on a Debian bookworm amd64 root filesystem that
# holds only what a new user has, so that a missing install step cannot hide behind packages a
# used machine happens to have (a green CI on a used machine once hid `arch-test`).
#
#   sudo scripts/bare-check.sh                  # rootfs (cached), then make demo, make test, runtime venv
#   sudo scripts/bare-check.sh --rootfs-only    # just build / check the cached rootfs
#   BARE_STEPS="test" sudo scripts/bare-check.sh   # a subset of: demo test runtime
#
# What it does (each step prints a "==> " header and its time; a summary comes last):
#   1. host: apt-get installs mmdebstrap (the only host package this script needs).
#   2. rootfs: `mmdebstrap --variant=apt bookworm` (amd64) with exactly the packages README's
#      "Two commands on a fresh machine" names: $USER_PACKAGES. No Recommends are installed, so a
#      package that only comes in through a Recommends on a desktop machine is missing here too.
#      Cached under $CAPTCHA_EDGE_BARE_CACHE (default ~/.cache/captcha-edge/bare-rootfs), keyed by
#      the package list; every run works on a fresh copy of it.
#   3. a fresh copy of this checkout (what `git clone` gives: tracked + untracked-not-ignored
#      files, no .venv, no build outputs) at /work/captcha-edge in the copy, with ../shared beside
#      it read-only when this checkout has one, as in CI.
#   4. inside it (chroot, private mount + pid namespace), as a new user would type them:
#      `make demo`, `make test`, and the runtime-only install (`scripts/check_runtime_venv.sh`:
#      a venv with no extras, no TensorFlow). Each step's time is printed; a failure is reported
#      as one "MISSING:" line when the log shows a missing command, header or module.
#
# Environment:
#   CAPTCHA_EDGE_BARE_CACHE=DIR  cache folder (rootfs, pip cache shared by the runs).
#   BARE_STEPS="demo test runtime"  which steps to run (default: all three).
#   BARE_RESULT=FILE             also write the summary as JSON to FILE (relative names only).
# The host's CA bundle and resolv.conf are copied in so pip reaches PyPI through whatever this
# host's network needs; nothing else of the host enters the rootfs.
set -Eeuo pipefail

ARCH=amd64
# README, "Two commands on a fresh machine": python3-venv, a C compiler (gcc, python3-dev), and
# git + make to clone and run; ca-certificates for pip over HTTPS.
USER_PACKAGES="python3,python3-venv,python3-dev,gcc,make,git,ca-certificates"
CACHE="${CAPTCHA_EDGE_BARE_CACHE:-$HOME/.cache/captcha-edge/bare-rootfs}"
STEPS="${BARE_STEPS:-demo test runtime}"
# shellcheck source=lib/rootfs.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/rootfs.sh"   # SCRIPT_DIR REPO SELF GUEST_REPO say; SUITE MIRRORS

die() { printf '\nBARE CHECK FAILED: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# Inside the chroot: the README's commands, one step at a time, each timed and logged.
# ---------------------------------------------------------------------------------------------
if [[ "${1:-}" == "__guest" ]]; then
  cd "$GUEST_REPO"
  : > /work/out/summary.tsv
  missing() {  # one line naming what the log shows as missing, if anything
    grep -hoE "command not found: [^ ]+|[^ :]+: command not found|[^ :]+: No such file or directory|fatal error: [^ ]+: No such file|ensurepip is not available|No module named '?[A-Za-z0-9_.]+'?|error: command '[^']+' failed|Unable to locate package [^ ]+|not found: [^ ]+" "$1" \
      | sort -u | head -3 | tr '\n' ';' || true
  }
  rc_all=0
  for s in $STEPS; do
    case "$s" in
      demo) cmd=(make demo) ;;
      test) cmd=(make test) ;;
      runtime) cmd=(bash scripts/check_runtime_venv.sh) ;;
      *) echo "unknown step $s"; exit 2 ;;
    esac
    printf '\n--> [bare] %s\n' "${cmd[*]}"
    t=$(date +%s); rc=0
    "${cmd[@]}" > "/work/out/$s.log" 2>&1 || rc=$?
    dt=$(( $(date +%s) - t ))
    tail -n 15 "/work/out/$s.log"
    if (( rc == 0 )); then
      printf '%s\tPASSED\t%s\t\n' "$s" "$dt" >> /work/out/summary.tsv
    else
      m="$(missing "/work/out/$s.log")"
      printf '%s\tFAILED (exit %s)\t%s\t%s\n' "$s" "$rc" "$dt" "${m:+MISSING: $m}" >> /work/out/summary.tsv
      rc_all=1
    fi
  done
  exit "$rc_all"
fi

if [[ "${1:-}" == "__inner" ]]; then   # in a private mount + pid namespace: mounts die with it
  mount -t proc proc "$ROOT/proc"
  mount -t sysfs sysfs "$ROOT/sys"
  mount --rbind /dev "$ROOT/dev"
  mount -t tmpfs -o size=512m tmpfs "$ROOT/dev/shm"
  mkdir -p "$ROOT/root/.cache/pip"
  mount --bind "$CACHE/pip" "$ROOT/root/.cache/pip"
  if [[ -n "${SHARED:-}" ]]; then
    mkdir -p "$ROOT/work/shared"
    mount --bind -o ro "$SHARED" "$ROOT/work/shared"
  fi
  exec chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin CI=true \
    PIP_CERT=/etc/ssl/certs/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
    PIP_NO_INPUT=1 PYTHONUNBUFFERED=1 BARE_STEPS="$STEPS" GUEST_REPO="$GUEST_REPO" \
    /bin/bash -Eeuo pipefail "$GUEST_REPO/scripts/bare-check.sh" __guest   # the checkout's copy
fi

# ---------------------------------------------------------------------------------------------
# Outer part (host)
# ---------------------------------------------------------------------------------------------
# shellcheck source=lib/host.sh
source "$SCRIPT_DIR/lib/host.sh"
BASE="$(rootfs_dir "$CACHE" "$ARCH" "$USER_PACKAGES")"
parse_rootfs_args "$@"
require_root_x86 "apt-get, mounts, chroot"

ROOT=""
GUEST_PID=""
cleanup() {
  local rc=$?
  stop_namespace "$GUEST_PID"
  if [[ -n "$ROOT" && -d "$ROOT" ]]; then
    if grep -q " $ROOT/" /proc/self/mountinfo; then
      echo "warning: $ROOT still has mounts; leaving it in place" >&2
    else
      rm -rf "$ROOT"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "1/4 host: mmdebstrap"
if ! dpkg-query -W -f='${Status}' mmdebstrap 2>/dev/null | grep -q "ok installed"; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap
fi
dpkg-query -W -f='  ${Package} ${Version}\n' mmdebstrap

say "2/4 rootfs: Debian $SUITE $ARCH with only: $USER_PACKAGES"
mkdir -p "$CACHE" "$CACHE/pip"
exec 9>"$CACHE/.lock"
flock -w 3600 9 || die "another bare check has held $CACHE/.lock for an hour"
rm -rf "$CACHE"/.rootfs-build.* "$CACHE"/run.*
if [[ -f "$BASE/.captcha-edge-complete" ]]; then
  echo "reusing cached rootfs $BASE"
else
  tmp="$(mktemp -d "$CACHE/.rootfs-build.XXXXXX")"; rmdir "$tmp"
  unshare --mount --propagation private -- nice -n 10 mmdebstrap --arch="$ARCH" --variant=apt \
    --mode=root --include="$USER_PACKAGES" --aptopt='Acquire::Retries "3"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    "$SUITE" "$tmp" "${MIRRORS[@]}" || { rm -rf "$tmp"; die "mmdebstrap failed (see above)"; }
  touch "$tmp/.captcha-edge-complete"
  for old in "$CACHE"/rootfs-*; do [[ -d "$old" ]] && rm -rf "$old"; done
  mv "$tmp" "$BASE"
fi
echo "rootfs $(du -sh "$BASE" | cut -f1); python: $(chroot "$BASE" python3 --version)"
echo "packages beyond the base system: $(chroot "$BASE" dpkg-query -W -f='${Package}\n' | wc -l) installed in all"
if (( ROOTFS_ONLY )); then echo "rootfs ready"; exit 0; fi

say "3/4 a fresh copy of the rootfs and of this checkout"
ROOT="$(mktemp -d "$CACHE/run.XXXXXX")"
cp -a "$BASE/." "$ROOT/"
mkdir -p "$ROOT$GUEST_REPO" "$ROOT/work/out"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
  | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$ROOT$GUEST_REPO"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/host-ca.crt"
SHARED=""
[[ -d "$REPO/../shared" ]] && SHARED="$(cd "$REPO/../shared" && pwd)"
echo "copied $(cd "$ROOT$GUEST_REPO" && find . -type f | wc -l) files; ../shared: $([[ -n "$SHARED" ]] && echo "mounted read-only at /work/shared" || echo absent)"

say "4/4 inside the bare rootfs: $STEPS"
export ROOT CACHE SHARED STEPS GUEST_REPO
unshare --mount --pid --fork --kill-child --propagation private -- "$SELF" __inner &
GUEST_PID=$!
guest_rc=0
wait "$GUEST_PID" || guest_rc=$?
GUEST_PID=""

say "SUMMARY (Debian $SUITE $ARCH, only: $USER_PACKAGES)"
while IFS=$'\t' read -r step status secs note; do
  printf '  %-8s %-18s %5ss  %s\n' "$step" "$status" "$secs" "$note"
done < "$ROOT/work/out/summary.tsv"
echo "  total time: $(( $(date +%s) - T0 )) s"
rm -rf "$CACHE/last-run"; cp -a "$ROOT/work/out" "$CACHE/last-run"
echo "  full logs: $CACHE/last-run/<step>.log"
if [[ -n "${BARE_RESULT:-}" ]]; then
  python3 - "$ROOT/work/out/summary.tsv" "$BARE_RESULT" "$USER_PACKAGES" "$(( $(date +%s) - T0 ))" \
    "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'EOF'
import json, sys, datetime, os
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
out = {"when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
       "commit": sys.argv[5], "rootfs": "Debian bookworm amd64, mmdebstrap --variant=apt",
       "packages": sys.argv[3].split(","), "total_seconds": int(sys.argv[4]),
       "steps": [{"step": r[0], "status": r[1], "seconds": int(r[2]), "note": r[3] if len(r) > 3 else ""}
                 for r in rows]}
tmp = sys.argv[2] + ".tmp"
with open(tmp, "w") as f:
    json.dump(out, f, indent=1); f.write("\n")
os.replace(tmp, sys.argv[2])
EOF
fi
(( guest_rc == 0 )) || die "a step failed on the bare machine (logs: see above; full logs were in the run's /work/out)"
echo "BARE CHECK PASSED"
