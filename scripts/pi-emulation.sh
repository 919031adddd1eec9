#!/usr/bin/env bash
# Prove captcha-edge on an emulated 64-bit Raspberry Pi: Debian bookworm arm64 (what 64-bit
# Raspberry Pi OS is built on, same Python 3.11) run under qemu-user on this x86 Debian machine.
#
#   sudo scripts/pi-emulation.sh                 # everything (CI runs this, as root)
#   sudo scripts/pi-emulation.sh --rootfs-only   # just build / check the cached arm64 rootfs
#   CAPTCHA_EDGE_SKIP_PI=1 scripts/pi-emulation.sh   # explicit skip (printed, exit 0)
#
# What it does, in order (each step prints a "==> " header; a summary comes last):
#   1. host: apt-get installs what a bare Debian/Ubuntu host lacks: qemu-user-static,
#      binfmt-support, mmdebstrap, arch-test (mmdebstrap needs it for a foreign architecture; it is
#      only a Recommends, so --no-install-recommends skipped it), python3-venv for the x86
#      reference venv; mounts binfmt_misc when it is not mounted; fails loudly when aarch64
#      binaries cannot be run.
#   2. rootfs: `mmdebstrap --arch=arm64 --variant=apt bookworm` with python3, venv, headers, gcc,
#      cached under $CAPTCHA_EDGE_PI_CACHE (default ~/.cache/captcha-edge/pi-rootfs), keyed by the
#      package list; a rerun reuses it (and ccache reuses the emulated Cython compile).
#   3. inside the rootfs (chroot, in a private mount + pid namespace, so every mount and every
#      emulated process goes away with it; QEMU_CPU=cortex-a72 = Pi 4, never qemu's `max`):
#      a venv with OUR RUNTIME FROM THIS CHECKOUT, NO EXTRAS (the Cython decoder compiles on
#      aarch64), the decoder suite (Cython and pure-Python engines), the runtime tests that need no
#      TensorFlow, `captcha-edge predict --json` and `eval` on ../shared/data/captcha_images_v2 with
#      the bundled int8 model, raw int8 output tensors for bit-exactness, the int8/float32 invoke
#      ratio (emulated), and a second venv with tflite-runtime 2.14 + numpy<2.
#   4. host: the same raw int8 outputs from an x86 venv with the same ai-edge-litert version,
#      compared element by element (the count of differing values is printed); decoded texts, and
#      `eval` counts over all the shared captchas, must match exactly.
#
# Environment:
#   CAPTCHA_EDGE_SKIP_PI=1       skip everything (the skip is printed); nothing else skips.
#   CAPTCHA_EDGE_PI_CACHE=DIR    cache folder (rootfs, pip caches, x86 venv).
#   CAPTCHA_EDGE_PI_CPU=NAME     qemu CPU model: cortex-a72 (Pi 4, default) or cortex-a76 (Pi 5).
#   CAPTCHA_EDGE_PI_MODEL=FILE   int8 model (default: the bundled runtime/models/default_int8.tflite).
#   CAPTCHA_EDGE_PI_FLOAT_MODEL=FILE  float32 twin of that model for the invoke ratio (default:
#                                runtime/models/default_float32.tflite if shipped, else the test
#                                fixture pair tests/data/tiny_{int8,float32}.tflite, labelled so).
#   CAPTCHA_EDGE_PI_RATIO_CASES=DIR  also measure the int8/float32 invoke ratio of every pair
#                                DIR/NAME_int8.tflite + DIR/NAME_float32.tflite (issue 12's
#                                regression cases; one summary line per pair).
#   CAPTCHA_EDGE_PI_N=64         images used for bit-exactness and predict --json.
#   CAPTCHA_EDGE_PI_REQUIRE_BITEXACT=1  fail unless every raw int8 output value equals x86's
#                                (texts must always match).
#   CAPTCHA_EDGE_PI_DATA=DIR     captchas (default ../shared/data/captcha_images_v2 beside the repo).
set -Eeuo pipefail

# shellcheck source=lib/rootfs.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/rootfs.sh"   # SCRIPT_DIR REPO SELF GUEST_REPO say; SUITE MIRRORS

ARCH=arm64
# ccache: the Cython decoder takes minutes to compile under emulation; reruns of the same source reuse
# the object compiled (under emulation, on aarch64) before.
PACKAGES="python3,python3-venv,python3-dev,gcc,libc6-dev,ca-certificates,ccache"
QEMU_CPU_MODEL="${CAPTCHA_EDGE_PI_CPU:-cortex-a72}"
CACHE="${CAPTCHA_EDGE_PI_CACHE:-$HOME/.cache/captcha-edge/pi-rootfs}"
N_IMAGES="${CAPTCHA_EDGE_PI_N:-64}"
DATA="${CAPTCHA_EDGE_PI_DATA:-$REPO/../shared/data/captcha_images_v2}"
MODEL="${CAPTCHA_EDGE_PI_MODEL:-$REPO/runtime/models/default_int8.tflite}"
FLOAT_MODEL="${CAPTCHA_EDGE_PI_FLOAT_MODEL:-}"
# Binary wheels only for the heavy packages (all have aarch64 cp311 wheels); building any of them
# from source under emulation would take hours.
ONLY_BINARY="numpy,pillow,ai-edge-litert,tflite-runtime,cython"
# Same ranges as pyproject's [dev] extra; only what the suites import.
TEST_DEPS=("pytest>=8,<10" "hypothesis>=6.100,<7")
TFLITE_RUNTIME_SPEC="tflite-runtime==2.14.*"

GUEST_OUT=/work/out

die() { printf '\nPI EMULATION FAILED: %s\n' "$*" >&2; exit 1; }
trap 'printf "\nPI EMULATION FAILED: line %s of %s: %s (exit %s)\n" "$LINENO" "${BASH_SOURCE[0]}" "$BASH_COMMAND" "$?" >&2' ERR

# ----------------------------------------------------------------------------------------------
# Inner part: runs inside `unshare --mount --pid --fork` (see run_guest), so the mounts below are
# private to this namespace and vanish with it, and every emulated process dies with its init.
# ----------------------------------------------------------------------------------------------
if [[ "${1:-}" == "__inner" ]]; then
  shift
  MOUNTED=()
  cleanup_inner() {
    local i
    for (( i=${#MOUNTED[@]}-1; i>=0; i-- )); do umount -l "${MOUNTED[i]}" 2>/dev/null || true; done
  }
  trap cleanup_inner EXIT
  mnt() { local target="${*: -1}"; mount "$@"; MOUNTED+=("$target"); }

  # A fresh procfs for this pid namespace (never the host's), then a Cortex-A72 cpuinfo over it:
  # qemu-user passes the host's x86 /proc/cpuinfo through and LiteRT's cpuinfo init segfaults.
  mnt -t proc proc "$ROOTFS/proc"
  mnt --bind "$REPO/tests/pi/cpuinfo-cortex-a72" "$ROOTFS/proc/cpuinfo"
  # The CPU list LiteRT's cpuinfo reads next (it logs errors without it): 4 cores, like a Pi 4/5.
  mnt -t tmpfs -o size=1m,mode=0755 sysfs-cpus "$ROOTFS/sys"
  mkdir -p "$ROOTFS/sys/devices/system/cpu"
  for f in possible present online; do echo 0-3 > "$ROOTFS/sys/devices/system/cpu/$f"; done
  for dev in null zero full random urandom tty; do
    [[ -e "$ROOTFS/dev/$dev" ]] || touch "$ROOTFS/dev/$dev"
    mnt --bind "/dev/$dev" "$ROOTFS/dev/$dev"
  done
  mkdir -p "$ROOTFS/dev/shm" "$ROOTFS/work/shared" "$ROOTFS/var/cache/pip"
  mnt -t tmpfs -o size=256m tmpfs "$ROOTFS/dev/shm"
  mkdir -p "$ROOTFS/var/cache/ccache"
  mnt --bind "$CACHE/pip-$ARCH" "$ROOTFS/var/cache/pip"
  mnt --bind "$CACHE/ccache-$ARCH" "$ROOTFS/var/cache/ccache"
  if [[ -d "$DATA" ]]; then
    mkdir -p "$ROOTFS/work/shared/data/captcha_images_v2"
    mnt --bind -o ro "$DATA" "$ROOTFS/work/shared/data/captcha_images_v2"
  fi

  QEMU_CPU="$QEMU_CPU_MODEL" chroot "$ROOTFS" /usr/bin/env -i \
    HOME=/root LANG=C.UTF-8 LC_ALL=C.UTF-8 \
    PATH=/usr/lib/ccache:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CCACHE_DIR=/var/cache/ccache CCACHE_MAXSIZE=200M \
    QEMU_CPU="$QEMU_CPU_MODEL" \
    PIP_CACHE_DIR=/var/cache/pip PIP_CERT=/etc/ssl/certs/host-ca.crt \
    SSL_CERT_FILE=/etc/ssl/certs/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180 PIP_ONLY_BINARY="$ONLY_BINARY" PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    N_IMAGES="$N_IMAGES" GUEST_REPO="$GUEST_REPO" GUEST_OUT="$GUEST_OUT" \
    HAVE_FLOAT="${HAVE_FLOAT:-0}" RATIO_WHAT="${RATIO_WHAT:-}" TFLITE_RUNTIME_SPEC="$TFLITE_RUNTIME_SPEC" \
    TEST_DEPS="${TEST_DEPS[*]}" \
    /bin/bash -Eeuo pipefail "$GUEST_REPO/tests/pi/guest.sh" || exit $?   # guest.sh names the failed step
  exit 0
fi

# ----------------------------------------------------------------------------------------------
# Outer part
# ----------------------------------------------------------------------------------------------
if [[ "${CAPTCHA_EDGE_SKIP_PI:-}" == "1" ]]; then
  echo "==> Raspberry Pi emulation SKIPPED: CAPTCHA_EDGE_SKIP_PI=1 is set (nothing was proven on arm64)"
  exit 0
fi
# shellcheck source=lib/host.sh
source "$SCRIPT_DIR/lib/host.sh"
ROOTFS="$(rootfs_dir "$CACHE" "$ARCH" "$PACKAGES")"   # exported to the inner part (below)
parse_rootfs_args "$@"
require_root_x86 "apt-get, binfmt_misc, mounts, chroot"

GUEST_PID=""
X86_SRC=""
cleanup_outer() {
  local rc=$?
  [[ -n "$X86_SRC" ]] && rm -rf "$X86_SRC"
  stop_namespace "$GUEST_PID"
  # Belt and braces: nothing of ours may stay mounted or running on the host.
  if grep -q " $ROOTFS" /proc/self/mountinfo 2>/dev/null; then
    echo "warning: unmounting leftovers under $ROOTFS" >&2
    grep " $ROOTFS" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l || true
  fi
  local p
  for p in /proc/[0-9]*; do
    if [[ "$(readlink "$p/root" 2>/dev/null)" == "$ROOTFS" ]]; then
      echo "warning: killing leftover emulated process ${p#/proc/}" >&2
      kill -KILL "${p#/proc/}" 2>/dev/null || true
    fi
  done
  exit "$rc"
}
trap cleanup_outer EXIT
trap 'exit 130' INT TERM

# Copy what a clone holds (tracked + untracked-but-not-ignored files), never host build outputs
# (.so, build/, .venv), so the extension really is compiled where it is installed.
copy_checkout() {
  if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
      | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$1"
  else
    tar -C "$REPO" --exclude=.git --exclude=.venv --exclude=build --exclude='*.so' \
      --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -xf - -C "$1"
  fi
}

# True when some process runs chrooted in $1 (e.g. another checkout's run, with its private mounts).
in_use() {
  local p
  for p in /proc/[0-9]*; do [[ "$(readlink "$p/root" 2>/dev/null)" == "$1" ]] && return 0; done
  return 1
}

# Every host package this script uses, named explicitly: nothing may come from a Recommends or
# from having been installed by hand (scripts/bare-check.sh proves the list on a bare machine).
HOST_PACKAGES=(qemu-user-static binfmt-support mmdebstrap arch-test)
say "1/6 host: ${HOST_PACKAGES[*]}"
need=()
for pkg in "${HOST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
# The x86 reference venv (step 6) is made with /usr/bin/python3 when there is one.
HOST_PY=/usr/bin/python3; [[ -x "$HOST_PY" ]] || HOST_PY="$(command -v python3 || true)"
[[ -n "$HOST_PY" ]] && "$HOST_PY" -c "import venv, ensurepip" 2>/dev/null || need+=(python3-venv)
if (( ${#need[@]} )); then
  echo "installing: ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
else
  echo "already installed"
fi
dpkg-query -W -f='  ${Package} ${Version}\n' "${HOST_PACKAGES[@]}"

say "2/6 host: binfmt_misc for aarch64"
if [[ ! -e /proc/sys/fs/binfmt_misc/status ]]; then
  echo "binfmt_misc is not mounted; mounting it"
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "cannot mount binfmt_misc on this machine, so it cannot emulate arm64. Run on a host (or privileged container) that allows it, or set CAPTCHA_EDGE_SKIP_PI=1 to skip explicitly."
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
  update-binfmts --enable qemu-aarch64 || true
fi
[[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] && grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
  || die "qemu-aarch64 is not registered in binfmt_misc (update-binfmts --enable qemu-aarch64 failed)"
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
  || die "qemu-aarch64 binfmt entry lacks the F flag, so a chroot cannot find the emulator"
sed -n 's/^/  /; /interpreter\|flags/p' /proc/sys/fs/binfmt_misc/qemu-aarch64
cpus="$(qemu-aarch64-static -cpu help || true)"   # exits 1 after printing the list
grep -qw -- "$QEMU_CPU_MODEL" <<<"$cpus" \
  || die "qemu-aarch64-static does not know CPU model '$QEMU_CPU_MODEL'"

say "3/6 rootfs: Debian $SUITE $ARCH ($PACKAGES)"
mkdir -p "$CACHE" "$CACHE/pip-$ARCH" "$CACHE/pip-x86_64" "$CACHE/ccache-$ARCH"
# One run per cache at a time: a second run would rebuild the guest files under the first one.
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
  echo "waiting for another pi-emulation run using $CACHE ..."
  flock -w 3600 9 || die "another run has held $CACHE/.lock for an hour"
fi
rm -rf "$CACHE"/.rootfs-build.*          # an interrupted build (we hold the cache lock)
if [[ -f "$ROOTFS/.captcha-edge-complete" ]]; then
  echo "reusing cached rootfs $ROOTFS"
else
  echo "building $ROOTFS (about 7-15 min: every package's maintainer scripts run under emulation)"
  tmp="$(mktemp -d "$CACHE/.rootfs-build.XXXXXX")"
  rmdir "$tmp"
  # In a private mount namespace: mmdebstrap's own /proc, /sys, /dev mounts cannot outlive it.
  unshare --mount --propagation private -- nice -n 10 mmdebstrap --arch="$ARCH" --variant=apt --mode=root \
    --include="$PACKAGES" --aptopt='Acquire::Retries "3"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$SUITE" "$tmp" "${MIRRORS[@]}" \
    || { rm -rf "$tmp"; die "mmdebstrap failed (see above)"; }
  touch "$tmp/.captcha-edge-complete"
  rm -rf "$ROOTFS"
  mv "$tmp" "$ROOTFS"
  for old in "$CACHE"/rootfs-*; do   # other package lists: stale (we hold the cache lock)
    if [[ "$old" != "$ROOTFS" && -d "$old" ]] && ! grep -q " $old/" /proc/self/mountinfo \
       && ! in_use "$old"; then
      echo "removing stale rootfs $old"; rm -rf "$old"
    fi
  done
fi
echo "rootfs size: $(du -sh "$ROOTFS" 2>/dev/null | cut -f1)"
probe="$(QEMU_CPU="$QEMU_CPU_MODEL" chroot "$ROOTFS" /usr/bin/env -i QEMU_CPU="$QEMU_CPU_MODEL" \
  /usr/bin/python3 -c 'import platform, sys; print(platform.machine(), sys.version.split()[0])')" \
  || die "cannot run the rootfs's aarch64 python3 under qemu"
echo "  emulated python: $probe"
[[ "$probe" == aarch64* ]] || die "the rootfs's python3 does not report aarch64 ($probe)"
if (( ROOTFS_ONLY )); then echo "rootfs ready"; exit 0; fi

say "4/6 guest files: this checkout, DNS and CA bundle for pip"
[[ -f "$MODEL" ]] || die "int8 model not found: $MODEL (the runtime's bundled runtime/models/default_int8.tflite has not landed, or set CAPTCHA_EDGE_PI_MODEL)"
[[ -d "$DATA" ]] || die "captchas not found: $DATA (expected ../shared/data/captcha_images_v2 beside the repo, or set CAPTCHA_EDGE_PI_DATA)"
# Never delete through a mount (the shared captchas are bind-mounted under work/ during a run).
if grep -q " $ROOTFS/" /proc/self/mountinfo; then die "something is still mounted under $ROOTFS; not cleaning it"; fi
rm -rf "$ROOTFS/work" "$ROOTFS/opt/pi-build" "$ROOTFS/opt/pi-venv" "$ROOTFS/opt/pi-venv-tflite"
mkdir -p "$ROOTFS$GUEST_REPO" "$ROOTFS$GUEST_OUT"
copy_checkout "$ROOTFS$GUEST_REPO"
cp "$MODEL" "$ROOTFS$GUEST_OUT/model_int8.tflite"
# The int8/float32 ratio needs a float32 twin of an int8 model: the one given, else the bundled
# model's twin if the repo ships one, else the test fixture pair (same CRNN graph, both exported
# from one Keras model by scripts/make_fixture_model.py), labelled as such.
RATIO_INT8="$MODEL"; RATIO_WHAT="$(basename "$MODEL")"
if [[ -z "$FLOAT_MODEL" && -f "$REPO/runtime/models/default_float32.tflite" && -z "${CAPTCHA_EDGE_PI_MODEL:-}" ]]; then
  FLOAT_MODEL="$REPO/runtime/models/default_float32.tflite"
fi
if [[ -z "$FLOAT_MODEL" ]]; then
  RATIO_INT8="$REPO/tests/data/tiny_int8.tflite"; FLOAT_MODEL="$REPO/tests/data/tiny_float32.tflite"
  RATIO_WHAT="test fixture pair tests/data/tiny_{int8,float32}.tflite (no float32 twin of $(basename "$MODEL") given)"
fi
HAVE_FLOAT=0
if [[ -f "$FLOAT_MODEL" && -f "$RATIO_INT8" ]]; then
  cp "$RATIO_INT8" "$ROOTFS$GUEST_OUT/ratio_int8.tflite"
  cp "$FLOAT_MODEL" "$ROOTFS$GUEST_OUT/ratio_float32.tflite"
  HAVE_FLOAT=1
elif [[ -n "${CAPTCHA_EDGE_PI_FLOAT_MODEL:-}" ]]; then
  die "float32 model not found: $FLOAT_MODEL (CAPTCHA_EDGE_PI_FLOAT_MODEL)"
fi
CASES="${CAPTCHA_EDGE_PI_RATIO_CASES:-}"
if [[ -n "$CASES" ]]; then
  [[ -d "$CASES" ]] || die "CAPTCHA_EDGE_PI_RATIO_CASES is not a folder: $CASES"
  mkdir -p "$ROOTFS$GUEST_OUT/ratio-cases"
  n_cases=0
  for f in "$CASES"/*_int8.tflite; do
    [[ -f "${f%_int8.tflite}_float32.tflite" ]] || die "no float32 twin of $f (expected ${f%_int8.tflite}_float32.tflite)"
    cp "$f" "${f%_int8.tflite}_float32.tflite" "$ROOTFS$GUEST_OUT/ratio-cases/"
    n_cases=$((n_cases + 1))
  done
  (( n_cases > 0 )) || die "no NAME_int8.tflite in CAPTCHA_EDGE_PI_RATIO_CASES=$CASES"
fi
export HAVE_FLOAT RATIO_WHAT
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
CA=/etc/ssl/certs/ca-certificates.crt
[[ -f "$CA" ]] || die "no CA bundle at $CA for pip inside the rootfs"
cp "$CA" "$ROOTFS/etc/ssl/certs/host-ca.crt"
echo "copied $(cd "$ROOTFS$GUEST_REPO" && find . -type f | wc -l) files to $GUEST_REPO; model $(basename "$MODEL"); ratio models: $RATIO_WHAT"

say "5/6 emulated Raspberry Pi (QEMU_CPU=$QEMU_CPU_MODEL): install, tests, predict, eval"
export ROOTFS REPO CACHE DATA QEMU_CPU_MODEL N_IMAGES ARCH
unshare --mount --pid --fork --kill-child --propagation private -- "$SELF" __inner &
GUEST_PID=$!
guest_rc=0
wait "$GUEST_PID" || guest_rc=$?
GUEST_PID=""
if grep -q " $ROOTFS" /proc/self/mountinfo; then die "mounts under $ROOTFS survived the namespace"; fi
if (( guest_rc != 0 )); then
  echo "partial summary:"; cat "$ROOTFS$GUEST_OUT/summary.txt" 2>/dev/null || true
fi
(( guest_rc == 0 )) || die "a step inside the emulated Pi failed (exit $guest_rc; see the last section above)"

say "6/6 x86 reference: same images, same ai-edge-litert version, compared element by element"
OUT="$ROOTFS$GUEST_OUT"
LITERT_VERSION="$(cat "$OUT/litert_version")"
X86_VENV="$CACHE/x86-venv"
X86_SRC="$(mktemp -d)"
copy_checkout "$X86_SRC"
rm -rf "$X86_VENV"
"$HOST_PY" -m venv "$X86_VENV"
PIP_CACHE_DIR="$CACHE/pip-x86_64" PIP_ONLY_BINARY="$ONLY_BINARY" \
  "$X86_VENV/bin/pip" install -q "$X86_SRC" "ai-edge-litert==$LITERT_VERSION"
"$X86_VENV/bin/python" -c 'import platform, sys; from importlib.metadata import version as v; print("  x86:", platform.machine(), sys.version.split()[0], "ai-edge-litert", v("ai-edge-litert"), "numpy", v("numpy"))'
"$X86_VENV/bin/python" "$REPO/tests/pi/dump_outputs.py" --model "$MODEL" --images "$DATA" \
  --n "$N_IMAGES" --out "$OUT/x86_64.npz"
bitexact_rc=0
# Decoded texts must match (else this fails); raw int8 values are compared and reported, and must
# match bit for bit only with CAPTCHA_EDGE_PI_REQUIRE_BITEXACT=1 (ARM and x86 kernels may round one
# value in thousands differently by 1 LSB: measured so, on cortex-a72 and cortex-a76 alike).
"$X86_VENV/bin/python" "$REPO/tests/pi/compare_outputs.py" "$OUT/x86_64.npz" "$OUT/aarch64.npz" \
  ${CAPTCHA_EDGE_PI_REQUIRE_BITEXACT:+--require-identical} > "$OUT/bitexact.txt" || bitexact_rc=$?
cat "$OUT/bitexact.txt"
# Every integer route's file (tests/data/routes/) and the default graph's (tests/data/graphs/: the
# conv head with the contrast stretch), dumped on the Pi by guest.sh: same texts here.
routes_rc=0
ROUTES_LINE=""
for f in "$REPO"/tests/data/routes/*_int8.tflite "$REPO"/tests/data/graphs/*_int8.tflite; do
  name="$(basename "${f%_int8.tflite}")"
  "$X86_VENV/bin/python" "$REPO/tests/pi/dump_outputs.py" --model "$f" --images "$DATA" \
    --n "$N_IMAGES" --out "$OUT/route-${name}_x86_64.npz"
  verdict="$("$X86_VENV/bin/python" "$REPO/tests/pi/compare_outputs.py" \
    "$OUT/route-${name}_x86_64.npz" "$OUT/route-${name}_aarch64.npz" | head -n 1)" || routes_rc=1
  echo "  route $name: $verdict"
  ROUTES_LINE+="${ROUTES_LINE:+; }$name: $verdict"
done
X86_IMGS=("$DATA"/*.png)
if [[ "$HAVE_FLOAT" == 1 ]]; then   # the same ratio natively, for contrast (labelled x86)
  "$X86_VENV/bin/python" "$REPO/tests/pi/invoke_ratio.py" --int8 "$OUT/ratio_int8.tflite" \
    --float32 "$OUT/ratio_float32.tflite" --image "${X86_IMGS[0]}" \
    --label "x86_64 host, native" > "$OUT/ratio_x86.txt" 2>/dev/null || true
  cat "$OUT/ratio_x86.txt"
fi
# The whole shared set through the user-facing CLI on both sides: same counts or the Pi reads differently.
"$X86_VENV/bin/captcha-edge" eval "$DATA" --model "$MODEL" --json > "$OUT/eval_x86_64.json"
evalcmp_rc=0
"$X86_VENV/bin/python" - "$OUT/eval_x86_64.json" "$OUT/eval_aarch64.json" > "$OUT/eval_compare.txt" <<'EOF' || evalcmp_rc=$?
import json, sys
x, a = (json.load(open(p)) for p in sys.argv[1:])
keys = ("images", "correct", "edits", "chars", "unreadable")
same = all(x[k] == a[k] for k in keys)
print(f"{'same' if same else 'DIFFERENT'} on x86 and the emulated Pi: "
      + ", ".join(f"{k} {x[k]}" + ("" if x[k] == a[k] else f" vs {a[k]}") for k in keys))
sys.exit(0 if same else 1)
EOF
cat "$OUT/eval_compare.txt"

say "SUMMARY (emulated Raspberry Pi: Debian $SUITE $ARCH, qemu-user $(dpkg-query -W -f='${Version}' qemu-user-static), QEMU_CPU=$QEMU_CPU_MODEL)"
cat "$OUT/summary.txt"
echo "  bit-exactness:  $(head -n1 "$OUT/bitexact.txt")"
echo "  eval x86 vs Pi: $(cat "$OUT/eval_compare.txt")"
echo "  int8 routes:    $ROUTES_LINE"
if [[ -s "$OUT/ratio_x86.txt" ]]; then
  echo "  same ratio, x86: $(sed -n 's/.*: \([0-9.]*\)$/\1/p' "$OUT/ratio_x86.txt") natively on this host (for contrast: emulation distorts it)"
fi
echo "  total time:     $(( $(date +%s) - T0 )) s"
(( bitexact_rc == 0 )) || die "decoded texts (or, with CAPTCHA_EDGE_PI_REQUIRE_BITEXACT=1, raw int8 outputs) differ between the emulated Pi and x86"
(( evalcmp_rc == 0 )) || die "captcha-edge eval counts differ between the emulated Pi and x86"
(( routes_rc == 0 )) || die "an integer route's or graph's file decodes differently on the emulated Pi and x86 (tests/data/routes, tests/data/graphs)"
if [[ -s "$OUT/failures" ]]; then die "$(tr '\n' ';' < "$OUT/failures")"; fi
echo "PI EMULATION PASSED"
