#!/usr/bin/env bash
# Installs the Debian 12 packages MLCapsule needs to build, test and run its demo.
# Runs apt-get as root (directly, or through sudo when not root). Idempotent.
# libopenblas0-pthread: libtorch and PyTorch take any libblas.so.3, and without Recommends apt picks
# the reference BLAS, which makes the lab's and the demo's training about 10x slower (measured:
# the demo's thief on a fresh root).
set -euo pipefail
PACKAGES=(
  cmake ninja-build g++ pkg-config git clang-format
  libgtest-dev libgmock-dev
  libonnx-dev libprotobuf-dev protobuf-compiler libonnx-testdata
  libdnnl-dev
  libfmt-dev nlohmann-json3-dev libcli11-dev libspdlog-dev
  libsodium-dev libseccomp-dev libcpp-httplib-dev libssl-dev libsqlite3-dev
  libpqxx-dev postgresql-15 openssl curl ca-certificates
  python3-torch python3-torchvision python3-onnx python3-numpy dataset-fashion-mnist
  libtorch-dev libopenblas0-pthread libcairo2-dev zlib1g-dev fonts-dejavu-core
  libtss2-dev swtpm swtpm-tools
  help2man dpkg-dev
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install_deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
echo "install_deps: installing ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
