#!/usr/bin/env bash
# The Debian packages on a fresh Debian 12 (docs/install.md, "Tests"; plan: docs/dev/demo-plan.md
# §4.6). Builds the .deb files with cpack, makes a fresh bookworm root with mmdebstrap (variant
# apt: only Essential + apt), installs the packages there with `apt-get install`, which resolves
# their Depends from the Debian mirror (a missing Depends fails here), and then runs the installed
# /usr/bin binaries inside that root: `mlcapsule --version`, `mlcapsule-core --help`, the
# air-gapped capsule flow (keygen, pack, lease request/issue/install, run) on an ONNX model copied
# in, and `mlcapsule demo --strict` (with Fashion-MNIST installed). Opt-in ctest label
# `fresh-install` (not in the default preset).
#
# Needs: root, mmdebstrap (apt-get install --no-install-recommends mmdebstrap), unshare, chroot,
# and the network to deb.debian.org; exits 77 (skip) without them. The host's apt cache
# (/var/cache/apt/archives) seeds mmdebstrap's own download (Essential + apt); mmdebstrap empties
# the root's cache when it finishes, so step 3 downloads the packages' whole closure from the
# mirror (about 320 packages with the lab's libtorch; about 45 s here).
# Honest limits: same kernel as the host (memfd_secret, seccomp as here); not a booted system
# (no systemd as PID 1, so the server's unit is not started).
# Every mount is made inside a private mount namespace (unshare --mount) that dies with the
# command; the EXIT trap still unmounts anything left under the root before removing it.
#
# Usage: package_fresh_test.sh BUILD_DIR ONNX_NODE_DATA VERSION
#   MLC_FRESH_MIRROR   the Debian mirror (default http://deb.debian.org/debian)
#   MLC_FRESH_NO_LAB=1 do not install mlcapsule-lab (and its libtorch closure)
#   MLC_FRESH_KEEP=1   keep the temporary directory (the root) for inspection
set -uo pipefail
BUILD="$(realpath "$1")"; DATA="$2"; VERSION="$3"
MIRROR="${MLC_FRESH_MIRROR:-http://deb.debian.org/debian}"
M="$DATA/test_softmax_axis_1"
skip() { echo "SKIP: $*"; exit 77; }
[[ "$(id -u)" == 0 ]] || skip "needs root (mmdebstrap --mode=root, chroot)"
for c in mmdebstrap unshare chroot cpack dpkg-deb dpkg-shlibdeps; do
  command -v "$c" >/dev/null || skip "$c is absent (apt-get install --no-install-recommends mmdebstrap dpkg-dev)"
done
[[ -d "$M" ]] || skip "$DATA is absent"
[[ -f "$BUILD/CPackConfig.cmake" && -x "$BUILD/mlcapsule" && -x "$BUILD/mlcapsule-core" ]] || skip "$BUILD is not built"
host="$(sed -E 's|^[a-z]+://([^/:]+).*|\1|' <<< "$MIRROR")"
timeout 15 bash -c "exec 3<>/dev/tcp/$host/80" 2>/dev/null || skip "no network to $host"

T="$(mktemp -d /var/tmp/mlc-fresh.XXXXXX)"; R="$T/root"
# shellcheck source=lib/fresh_root.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/fresh_root.sh"
trap 'fresh_root_remove "$R" "$T"' EXIT
trap 'exit 130' INT TERM
fail() { echo "FAIL: $*"; [[ -f "$T/err" ]] && tail -40 "$T/err"; exit 1; }
now() { date +%s.%N; }
took() { printf '%s: %.1f s\n' "$1" "$(echo "$(now) - $2" | bc)"; }
# IN CMD...: run CMD in the root (tests/lib/fresh_root.sh: its own /proc, the host's /dev, a clean
# environment; the mounts live in a private mount namespace only).
IN() { fresh_root_run "$R" "$@"; }
expect_exit() { local want="$1"; shift; IN "$@" >"$T/out" 2>"$T/err"; local got=$?; [[ $got -eq $want ]] || fail "exit $got, expected $want: $*"; }

# 1. The packages.
t0=$(now)
cpack -G DEB --config "$BUILD/CPackConfig.cmake" -B "$T/pkgs" >"$T/out" 2>"$T/err" || fail "cpack -G DEB"
took "cpack -G DEB" "$t0"
arch="$(dpkg --print-architecture)"
debs=("$T/pkgs/mlcapsule_${VERSION}_$arch.deb")
[[ -f "${debs[0]}" ]] || fail "no mlcapsule_${VERSION}_$arch.deb: $(ls "$T/pkgs")"
LAB=0
if [[ -f "$T/pkgs/mlcapsule-lab_${VERSION}_$arch.deb" && "${MLC_FRESH_NO_LAB:-0}" != 1 ]]; then
  debs+=("$T/pkgs/mlcapsule-lab_${VERSION}_$arch.deb"); LAB=1
fi

# 2. A fresh Debian 12 root: Essential + apt, nothing else. The host's apt cache seeds the root's.
t0=$(now)
mmdebstrap --mode=root --variant=apt --aptopt='APT::Install-Recommends "false"' \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives/"' \
  --setup-hook='sync-in /var/cache/apt/archives/ /var/cache/apt/archives/' \
  bookworm "$R" "$MIRROR" >"$T/out" 2>"$T/err" || fail "mmdebstrap bookworm"
took "mmdebstrap --variant=apt bookworm" "$t0"
[[ -e "$R/usr/bin/mlcapsule" ]] && fail "the fresh root already has mlcapsule"
cp /etc/resolv.conf "$R/etc/resolv.conf"   # mmdebstrap removes its copy at the end

# 3. apt-get install the .deb files; apt resolves their Depends from the mirror. Recommends are
#    left out (openssl, dataset-fashion-mnist), so only Depends are proved.
t0=$(now)
mkdir -p "$R/tmp/pkgs"; cp "${debs[@]}" "$R/tmp/pkgs/"
expect_exit 0 apt-get update
expect_exit 0 apt-get install -y --no-install-recommends $(for d in "${debs[@]}"; do echo "/tmp/pkgs/$(basename "$d")"; done)
took "apt-get install $(for d in "${debs[@]}"; do basename "$d"; done | tr '\n' ' ')" "$t0"
echo "  packages set up: $(grep -c '^Setting up ' "$T/out"), downloaded from the mirror: $(grep -c '^Get:[0-9]* http' "$T/out")"
grep -m1 '^Need to get' "$T/out" | sed 's/^/  /'
IN dpkg-query -W -f='${Status}\n' mlcapsule 2>/dev/null | grep -q 'install ok installed' || fail "mlcapsule is not installed"
rm -rf "$R/tmp/pkgs" "$R/var/cache/apt/archives/"*.deb

# 4. The installed binaries, inside the fresh root.
expect_exit 0 /usr/bin/mlcapsule --version
grep -q "^mlcapsule $VERSION" "$T/out" || fail "--version says $(cat "$T/out")"
echo "  $(head -1 "$T/out")"
expect_exit 0 /usr/bin/mlcapsule-core --help
echo "mlcapsule-core --help: ok"
if [[ $LAB == 1 ]]; then expect_exit 0 /usr/bin/mlcapsule lab --help; echo "mlcapsule lab --help: ok"; fi

# 5. The air-gapped capsule flow with the installed mlcapsule, which starts the installed core.
t0=$(now)
mkdir -p "$R/root/model"; cp -r "$M/." "$R/root/model/"
cat > "$R/root/policy.json" <<'JSON'
{"version":1,"tee":{"accept":["software"]},"lease":{"max_queries":10,"max_days":1},"output":{"mode":"probabilities"}}
JSON
B=/usr/bin/mlcapsule
expect_exit 0 $B keygen --out keys
expect_exit 0 $B pack model/model.onnx --key keys/provider.key --policy policy.json --out m.capsule
expect_exit 0 $B lease request m.capsule --state state --out req.bin
expect_exit 0 $B lease issue --key keys/provider.key --capsule m.capsule --request req.bin \
  --license-id fresh-install --queries 5 --days 1 --out lease.bin
expect_exit 0 $B lease install m.capsule --state state lease.bin
expect_exit 0 $B run m.capsule --state state -i model/test_data_set_0/input_0.pb -o guarded.npy
expect_exit 0 $B infer model/model.onnx -i model/test_data_set_0/input_0.pb -o plain.npy
cmp -s "$R/root/plain.npy" "$R/root/guarded.npy" || fail "the installed core answered differently from the engine"
took "installed mlcapsule + mlcapsule-core in the fresh root (keygen, pack, lease, run)" "$t0"

# 6. `mlcapsule demo` from the packages (issue 8 item 3), with the Recommends it needs, installed
#    here explicitly: Fashion-MNIST (mlcapsule's) and OpenBLAS (mlcapsule-lab's; with apt's
#    reference BLAS the thief trains about 10x slower). With mlcapsule-lab the whole demo runs with
#    --strict (PRADA flags the thief, bob raises no alarm, thief A identified); without it the demo
#    runs up to the bill (--no-attack).
t0=$(now)
demo_deps=(dataset-fashion-mnist)
[[ $LAB == 1 ]] && demo_deps+=(libopenblas0-pthread)  # mlcapsule-lab's Recommends: fast BLAS
expect_exit 0 apt-get install -y --no-install-recommends "${demo_deps[@]}"
took "apt-get install ${demo_deps[*]}" "$t0"
t0=$(now)
demo_args=(--strict --out /root/demo)
[[ $LAB == 1 ]] || demo_args+=(--no-attack)
expect_exit 0 /usr/bin/mlcapsule demo "${demo_args[@]}"
[[ -s "$R/root/demo/summary.json" ]] || fail "the demo wrote no summary.json"
grep -q '"ok": true' "$R/root/demo/summary.json" || fail "the demo's summary.json does not say ok"
grep -q "/usr/share/mlcapsule/demo/victim-cnn.onnx" "$T/out" || fail "the demo did not use the packaged model"
tail -3 "$T/out" | sed 's/^/  /'
took "mlcapsule demo ${demo_args[*]} in the fresh root" "$t0"

# 7. The server's unit as installed (not started: no systemd as PID 1 here). The fresh root has
#    no systemd, so `systemd-analyze verify --root` cannot load it; install_tree verifies the unit.
U="$R/usr/lib/systemd/system/mlcapsule-server.service"
[[ -f "$U" ]] || fail "the package did not install mlcapsule-server.service"
grep -q '^ExecStart=/usr/bin/mlcapsule server ' "$U" || fail "the unit's ExecStart must name /usr/bin/mlcapsule"
echo "package on a fresh Debian 12: ok"
