#!/usr/bin/env bash
# The README's second command: set everything up, build, and run the default test tier
# (every tier but slow, fuzz and fresh-install, which are opt-in; see README).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install_deps.sh
scripts/build.sh
ctest --preset default "$@"
