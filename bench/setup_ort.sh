#!/usr/bin/env bash
# Installs onnxruntime-node@1.30.0 into bench/node_modules (once).
#   bench/setup_ort.sh           install if missing
#   bench/setup_ort.sh --force   reinstall
set -euo pipefail
VERSION=1.30.0
case "${1:-}" in
  -h|--help)
    sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'
    exit 0 ;;
  --force) FORCE=1 ;;
  "") FORCE=0 ;;
  *) echo "setup_ort.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
command -v node >/dev/null || { echo "setup_ort.sh: node not found on PATH" >&2; exit 1; }
command -v npm  >/dev/null || { echo "setup_ort.sh: npm not found on PATH" >&2; exit 1; }
PKG=node_modules/onnxruntime-node/package.json
if [[ "$FORCE" == 0 && -f "$PKG" ]]; then
  have="$(node -p "require('./$PKG').version")"
  if [[ "$have" == "$VERSION" ]]; then
    echo "onnxruntime-node $have already installed in $HERE/node_modules"
    exit 0
  fi
  echo "onnxruntime-node $have found, want $VERSION: reinstalling"
fi
# Without ONNXRUNTIME_NODE_INSTALL=skip the package's install script tries to download
# extra (GPU) binaries and fails offline; the CPU library ships inside the package.
ONNXRUNTIME_NODE_INSTALL=skip npm install --no-save --no-audit --no-fund "onnxruntime-node@$VERSION"
node -e "require('onnxruntime-node'); console.log('onnxruntime-node', require('onnxruntime-node/package.json').version, 'OK')"
