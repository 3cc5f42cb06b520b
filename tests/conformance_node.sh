#!/usr/bin/env bash
# ONNX's node tests: no failures, and no test made only of the required operators may be skipped
# for anything but an element type (tools/conformance_audit.py).
set -uo pipefail
BIN="$1"; DATA="$2"; AUDIT="$3"
if [[ ! -d "$DATA" ]]; then echo "SKIP: $DATA is absent (apt-get install libonnx-testdata)"; exit 77; fi
OUT="$(mktemp)"; trap 'rm -f "$OUT"' EXIT
"$BIN" conformance "$DATA" > "$OUT"; status=$?
grep -E "^(FAIL|conformance:)" "$OUT"
[[ $status -eq 0 ]] || { echo "conformance failed with status $status"; exit 1; }
if /usr/bin/python3 -c "import onnx" 2>/dev/null; then
  /usr/bin/python3 "$AUDIT" "$OUT" || exit 1
else
  echo "note: python3-onnx absent, audit of skip reasons not run"
fi
