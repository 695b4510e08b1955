#!/usr/bin/env bash
# Installs every build and test dependency of wquant from Debian 12 packages
# (x86-64 host plus the aarch64 cross toolchain and qemu-user for the Arm tests).
# Idempotent: a second run installs nothing new.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

host_pkgs=(build-essential cmake ninja-build pkg-config
  libxsimd-dev libtbb-dev libhwy-dev libflatbuffers-dev flatbuffers-compiler
  libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev
  g++-aarch64-linux-gnu qemu-user python3 python3-matplotlib time lld valgrind
  libonnx-dev libprotobuf-dev)
arm_pkgs=(libc6:arm64 libstdc++6:arm64 libtbb-dev:arm64 libhwy-dev:arm64 libgtest-dev:arm64 libgmock-dev:arm64
  libflatbuffers-dev:arm64 libstdc++-12-dev:arm64)

# Installed means "ii" for the architecture asked for: NAME:ARCH, or for a bare NAME the
# native architecture (or "all"). `dpkg -s NAME` cannot say: once NAME:arm64 is installed
# beside NAME:amd64 it fails ("ambiguous package name"), which made every run update apt.
native=$(dpkg --print-architecture)
installed() {
  local name=${1%%:*} arch=$native
  if [ "$name" != "$1" ]; then arch=${1#*:}; fi
  dpkg-query -W -f='${Architecture} ${db:Status-Abbrev}\n' "$name" 2>/dev/null |
    awk -v a="$arch" '$2 == "ii" && ($1 == a || $1 == "all") { found = 1 } END { exit !found }'
}
missing=()
for p in "${host_pkgs[@]}" "${arm_pkgs[@]}"; do
  installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# onnxruntime-node for the ONNX runtime tests (tests/ort/package-lock.json pins it).
# --ignore-scripts skips its post-install step, which downloads extra GPU binaries; the
# CPU runtime ships in the package. Installed only when the lock's version is not there.
# The machine's Node.js serves; Debian's is installed only where there is none.
if ! command -v npm >/dev/null; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends nodejs npm
fi
ort_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/ort"
ort_want=$(sed -n 's/.*"onnxruntime-node": "\([0-9.]*\)".*/\1/p' "$ort_dir/package.json")
ort_have=""  # (a missing file must not stop the script under set -e / pipefail)
if [ -f "$ort_dir/node_modules/onnxruntime-node/package.json" ]; then
  ort_have=$(sed -n 's/.*"version": "\([0-9.]*\)".*/\1/p' "$ort_dir/node_modules/onnxruntime-node/package.json" | head -1)
fi
if [ "$ort_have" != "$ort_want" ]; then
  (cd "$ort_dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
fi
