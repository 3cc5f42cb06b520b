#!/usr/bin/env bash
# Every zoo model matches PyTorch: max |diff| <= 1e-4 x output range, at batch 1 and a larger
# batch (test_data_set_1), with 1 and 2 threads and with the reference kernels.
set -euo pipefail
BIN="$1"; ZOO="$2"
if [[ ! -d "$ZOO" ]]; then echo "SKIP: $ZOO was not exported (zoo_export skipped)"; exit 77; fi
"$BIN" conformance "$ZOO" --range-tol 1e-4
"$BIN" conformance "$ZOO" --range-tol 1e-4 --threads 2
"$BIN" conformance "$ZOO" --range-tol 1e-4 --reference
