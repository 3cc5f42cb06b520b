#!/usr/bin/env bash
# docs/cli.md matches `--help`: every command and subcommand `mlcapsule --help` lists (walked
# recursively) is named in docs/cli.md, and so is every long option its --help prints. A command
# or option added without documentation fails here, naming it.
# Usage: cli_docs_test.sh MLCAPSULE SOURCE_DIR
set -uo pipefail
MLC="$1"; DOC="$2/docs/cli.md"
[[ -f "$DOC" ]] || { echo "FAIL: $DOC is missing"; exit 1; }
failures=0; commands=0; options=0
# The subcommands listed in the "Subcommands:" block of a --help text.
subcommands() { awk '/^Subcommands:/ {on=1; next} on && /^$/ {exit} on && /^  [a-z]/ {print $1}'; }
walk() {  # walk CMD...: check this command's help, then its subcommands'
  local help
  help="$("$MLC" "$@" --help 2>&1)" || { echo "FAIL: mlcapsule $* --help exits non-zero"; failures=$((failures + 1)); return; }
  if [[ $# -gt 0 ]]; then
    commands=$((commands + 1))
    # `lab` is handed to mlcapsule-lab, whose commands docs/lab.md documents.
    [[ "$1" == lab ]] && return
    # Named in full ("lease sync") or, inside its parent's section, without the parent ("admin
    # provider add" as "provider add").
    grep -qF -- "$*" "$DOC" || { [[ $# -gt 1 ]] && grep -qF -- "${*:2}" "$DOC"; } ||
      { echo "FAIL: 'mlcapsule $*' is not in docs/cli.md"; failures=$((failures + 1)); }
  fi
  local opt
  # Options are the lines that start with one (a footer may quote another tool's options).
  for opt in $(grep -E -- '^ +(-[A-Za-z0-9], ?)?--[a-z]' <<< "$help" | grep -oE -- '--[a-z][a-z0-9-]+' | sort -u); do
    [[ "$opt" == --help ]] && continue
    options=$((options + 1))
    grep -qF -- "$opt" "$DOC" || { echo "FAIL: option $opt of 'mlcapsule $*' is not in docs/cli.md"; failures=$((failures + 1)); }
  done
  local sub
  for sub in $(subcommands <<< "$help"); do walk "$@" "$sub"; done
}
walk
echo "cli_docs: $commands commands and $options options checked, $failures missing"
[[ $commands -gt 20 && $failures -eq 0 ]]
