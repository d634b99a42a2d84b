#!/usr/bin/env bash
# Installs what hmoe needs to build and test on Debian 12 (idempotent: installs
# only missing packages, and runs apt-get update only then).
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libopenblas-dev libboost-context-dev libxxhash-dev nlohmann-json3-dev libtomlplusplus-dev libcli11-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libopenmpi-dev openmpi-bin
  clang libclang-rt-14-dev
  clang-16  # the emulator's access counters (HMOE_EMU_COUNTERS) need clang >= 15
  python3 python3-pip fortunes-min fortunes
  doxygen  # the API reference and its test (ctest docs: undocumented public declarations fail)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi

# The CUDA toolkit is optional here (CPU builds do not need it); report what we see.
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup: CUDA toolkit found"
else
  echo "setup: no CUDA toolkit found (CPU-only build)"
fi

# Optional: the Python safetensors package, for the interoperability test (skipped
# when absent). PyPI may be unreachable; that is not an error.
if ! python3 -c 'import safetensors, numpy' >/dev/null 2>&1; then
  python3 -m pip install --quiet safetensors numpy >/dev/null 2>&1 ||
    python3 -m pip install --quiet --break-system-packages safetensors numpy >/dev/null 2>&1 ||
    echo "setup: python safetensors not installed (its interop test will be skipped)"
fi
