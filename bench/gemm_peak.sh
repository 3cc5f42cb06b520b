#!/usr/bin/env bash
# Measures this machine's single-precision GEMM throughput (GFLOP/s) with OpenBLAS at 1 and 2
# threads (or the thread counts given), as a roof line for the engine's Conv/Gemm kernels.
#   bench/gemm_peak.sh [--n N] [--seconds S] [--threads "1 2"]
# Prints one JSON line per thread count: {"threads":T,"gflops":X,"gflops_best":Y,...}
# (gflops = median over repeated N x N x N sgemm calls; threads set by OPENBLAS_NUM_THREADS).
# Needs gcc and libopenblas-dev.
set -euo pipefail
N=2048
SECONDS_PER=2
THREADS="1 2"
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --n) N="${2:?--n needs a value}"; shift 2 ;;
    --seconds) SECONDS_PER="${2:?--seconds needs a value}"; shift 2 ;;
    --threads) THREADS="${2:?--threads needs a value}"; shift 2 ;;
    *) echo "gemm_peak.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$HERE/gemm_peak.c"
[[ -f "$SRC" ]] || { echo "gemm_peak.sh: missing $SRC" >&2; exit 1; }
command -v gcc >/dev/null || { echo "gemm_peak.sh: gcc not found" >&2; exit 1; }
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
if ! gcc -O2 -o "$TMP/gemm_peak" "$SRC" -lopenblas 2>"$TMP/cc.log"; then
  cat "$TMP/cc.log" >&2
  echo "gemm_peak.sh: build failed (is libopenblas-dev installed?)" >&2
  exit 1
fi
for t in $THREADS; do
  OPENBLAS_NUM_THREADS="$t" OMP_NUM_THREADS="$t" "$TMP/gemm_peak" "$N" "$SECONDS_PER"
done
