#!/usr/bin/env bash
# The README's first command: set everything up (Debian packages, build), then run the main job,
# `mlcapsule demo` (docs/demo.md): a Fashion-MNIST model packed into a capsule and licensed through
# the license server (SQLite, HTTPS on loopback), queries answered offline in the software TEE,
# usage synced and billed, then the model stolen by a second customer: PRADA flags the thief and
# the watermark identifies the copy that reproduces its answers. Everything it makes is in
# build/demo (replaced on each run); it prints the files and their purpose at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
scripts/install_deps.sh
scripts/build.sh
demo_start=$(date +%s)
build/mlcapsule demo --out build/demo --force
end=$(date +%s)
echo "scripts/main.sh: set-up (packages and build) $((demo_start - start)) s, demo $((end - demo_start)) s"
