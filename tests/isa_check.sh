#!/usr/bin/env bash
# The binary must run on any x86-64 CPU: AVX (ymm/zmm) instructions may appear only in functions
# cloned for run-time dispatch (GCC target_clones: names ending in .avx2/.avx512*). oneDNN is a
# shared library and generates its kernels at run time, so it is not part of this check.
set -uo pipefail
BIN="$1"
if ! command -v objdump >/dev/null; then echo "SKIP: objdump is not installed"; exit 77; fi
if [[ "$(uname -m)" != "x86_64" ]]; then echo "SKIP: not x86-64"; exit 77; fi
offenders=$(objdump -d --no-show-raw-insn "$BIN" | awk '/^[0-9a-f]+ <.*>:$/ {fn=$2} /[yz]mm[0-9]/ {print fn}' \
  | sort -u | grep -v -E '\.(avx2|avx512[a-z]*)>:$')
if [[ -n "$offenders" ]]; then
  echo "functions using AVX without run-time dispatch:"; echo "$offenders"; exit 1
fi
echo "isa: baseline x86-64 outside the dispatched clones"
