#!/usr/bin/env bash
# Generates the man pages from the built command's own --help with help2man: mlcapsule.1 and one
# mlcapsule-COMMAND.1 per top-level command (gzipped, as Debian installs them).
# Usage: gen_man.sh BIN_DIR OUT_DIR VERSION INCLUDE_FILE
set -euo pipefail
BIN_DIR="$1"; OUT="$2"; VERSION="$3"; INCLUDE="$4"
# Run through PATH so the pages say "mlcapsule", not the build path (CLI11 prints argv[0]).
export PATH="$BIN_DIR:$PATH"
export LC_ALL=C.UTF-8
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
rm -rf "$OUT"; mkdir -p "$OUT"

# The commands and their one-line descriptions, from the "Subcommands:" block of --help.
mlcapsule --help | awk '/^Subcommands:/ {on=1; next} on && /^$/ {exit}
  on && /^  [a-z]/ {name=$1; $1=""; sub(/^ +/, ""); print name "\t" $0}' > "$TMP/commands"
[[ -s "$TMP/commands" ]] || { echo "gen_man: no commands found in mlcapsule --help" >&2; exit 1; }

{ echo "[SEE ALSO]"
  cut -f1 "$TMP/commands" | sed 's/.*/.BR mlcapsule-& (1),/' | sed '$ s/,$//'
  echo
  echo "The full documentation is in /usr/share/doc/mlcapsule (docs/cli.md there is the CLI reference)."
} > "$TMP/main.h2m"
cat "$INCLUDE" "$TMP/main.h2m" > "$TMP/main-all.h2m"
help2man -N --version-string="$VERSION" --include="$TMP/main-all.h2m" \
  -n "guarded offline deployment of machine learning models" mlcapsule > "$TMP/mlcapsule.1"
gzip -9n -c "$TMP/mlcapsule.1" > "$OUT/mlcapsule.1.gz"

while IFS=$'\t' read -r cmd desc; do
  # A short NAME line: drop the "Provider: " style prefix and any parenthesised detail.
  short="$(sed -E 's/^(Provider|Client|Security evaluator): //; s/ \([^)]*\)//g; s/[;:].*$//' <<< "$desc")"
  printf '[SEE ALSO]\n.BR mlcapsule (1)\n' > "$TMP/sub.h2m"
  cat "$INCLUDE" "$TMP/sub.h2m" > "$TMP/sub-all.h2m"
  if ! help2man -N --version-string="$VERSION" --help-option="$cmd --help" \
    --include="$TMP/sub-all.h2m" -n "$short" mlcapsule > "$TMP/page.1"; then
    echo "gen_man: warning: no page for '$cmd' (its --help failed)" >&2
    continue
  fi
  # help2man names the page after the program: make it mlcapsule-COMMAND(1).
  upper="$(tr '[:lower:]' '[:upper:]' <<< "$cmd")"
  sed -E "s/^\.TH MLCAPSULE /.TH MLCAPSULE-$upper /; s/^mlcapsule \\\\- /mlcapsule-$cmd \\\\- /" \
    "$TMP/page.1" > "$TMP/mlcapsule-$cmd.1"
  gzip -9n -c "$TMP/mlcapsule-$cmd.1" > "$OUT/mlcapsule-$cmd.1.gz"
done < "$TMP/commands"
echo "gen_man: $(ls "$OUT" | wc -l) pages in $OUT"
