#!/usr/bin/env bash
# Configures and builds MLCapsule in build/ (Release, warnings on) with 2 jobs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cmake --preset default >/dev/null
cmake --build --preset default
