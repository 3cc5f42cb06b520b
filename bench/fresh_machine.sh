#!/usr/bin/env bash
# Times one of the README's two commands on a fresh Debian 12 machine: a bookworm root made by
# mmdebstrap (--variant=apt: Essential + apt and nothing else), a clone of this repository's HEAD
# put in /root/mlcapsule, and `bash scripts/main.sh` (or `scripts/test.sh`) run there as root,
# from a clean environment: every Debian package comes from the mirror (apt's downloads are part
# of the figure), the build has no ccache, the demo runs on the machine's own two cores. The
# figure is the README's "from a fresh machine".
#
# Usage: bench/fresh_machine.sh [main|test]   (default main; needs root, mmdebstrap, unshare,
#        chroot and the network to the mirror; MLC_FRESH_MIRROR overrides deb.debian.org)
# Honest limits: the host's kernel (as any container); not a booted system; the root is made
# before the clock starts (that is the "machine", not the command).
set -euo pipefail
WHICH="${1:-main}"
[[ "$WHICH" == main || "$WHICH" == test ]] || { echo "usage: $0 [main|test]" >&2; exit 2; }
[[ "$(id -u)" == 0 ]] || { echo "needs root (mmdebstrap --mode=root, chroot)" >&2; exit 1; }
for c in mmdebstrap unshare chroot git; do
  command -v "$c" >/dev/null || { echo "$c is absent (apt-get install mmdebstrap git)" >&2; exit 1; }
done
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MIRROR="${MLC_FRESH_MIRROR:-http://deb.debian.org/debian}"
T="$(mktemp -d /var/tmp/mlc-fresh-machine.XXXXXX)"; R="$T/root"
# shellcheck source=../tests/lib/fresh_root.sh
source "$SRC/tests/lib/fresh_root.sh"
trap 'fresh_root_remove "$R" "$T"' EXIT
trap 'exit 130' INT TERM

echo "== making a fresh Debian 12 root (mmdebstrap --variant=apt bookworm; not timed)"
mmdebstrap --mode=root --variant=apt --aptopt='APT::Install-Recommends "false"' \
  bookworm "$R" "$MIRROR" >"$T/mmdebstrap.log" 2>&1 || { tail -20 "$T/mmdebstrap.log"; exit 1; }
cp /etc/resolv.conf "$R/etc/resolv.conf"
git clone -q "$SRC" "$R/root/mlcapsule"
echo "   root: $(du -sh --one-file-system "$R" | cut -f1), repository at $(git -C "$SRC" rev-parse --short HEAD)"

echo "== bash scripts/$WHICH.sh in the fresh root (log: $T/run.log)"
start=$(date +%s.%N)
set +e
fresh_root_run "$R" bash -c "cd mlcapsule && exec bash scripts/$WHICH.sh" >"$T/run.log" 2>&1
rc=$?
set -e
end=$(date +%s.%N)
cp "$T/run.log" "/var/tmp/mlc-fresh-machine-$WHICH.log"
tail -5 "$T/run.log"
printf '== scripts/%s.sh on a fresh Debian 12 root: exit %d, %.0f s (%.1f min)\n' "$WHICH" "$rc" \
  "$(echo "$end - $start" | bc)" "$(echo "($end - $start) / 60" | bc -l)"
grep -m1 '^Need to get' "$T/run.log" | sed 's/^/   apt: /' || true
echo "   the whole log: /var/tmp/mlc-fresh-machine-$WHICH.log"
exit "$rc"
