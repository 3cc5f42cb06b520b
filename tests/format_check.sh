#!/usr/bin/env bash
# STYLE.md: the C++ sources are clang-format clean (.clang-format at the root).
set -uo pipefail
ROOT="$1"
if ! command -v clang-format >/dev/null; then echo "SKIP: clang-format is not installed"; exit 77; fi
cd "$ROOT"
mapfile -t files < <(find src fuzz \( -name '*.cc' -o -name '*.h' \) | sort)
bad=$(clang-format --dry-run "${files[@]}" 2>&1 | grep -c "warning:")
if [[ "$bad" -ne 0 ]]; then
  clang-format --dry-run "${files[@]}" 2>&1 | grep "warning:" | cut -d: -f1 | sort | uniq -c
  echo "format: $bad places differ from clang-format (run: clang-format -i on the files above)"
  exit 1
fi
echo "format: ${#files[@]} files clang-format clean"
