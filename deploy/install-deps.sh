#!/usr/bin/env bash
# Installs every package reptrace needs to build, test and run its demo on Debian bookworm.
# Idempotent: packages already present are left alone; apt-get runs only when one is missing.
#
#   deploy/install-deps.sh                the whole set
#   deploy/install-deps.sh --build-only   only what building the binaries and the hook needs
#                                         (the container images' build stage, deploy/docker/)
set -euo pipefail

BUILD_PACKAGES=(
  build-essential cmake pkg-config
  libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev
  libabsl-dev libpqxx-dev libpq-dev uuid-dev nlohmann-json3-dev
  libcurl4-openssl-dev  # the agent lists its node's pods from the Kubernetes API
  libyaml-cpp-dev  # reptracectl config set -f FILE.yaml
)
PACKAGES=(
  "${BUILD_PACKAGES[@]}"
  libgtest-dev libgmock-dev libbenchmark-dev
  # run the local stack and the tests
  postgresql postgresql-client curl python3 nginx redis-server redis-tools wrk iptables iproute2
  openssl  # the TLS tests make a self-signed certificate
  nodejs   # tests/integration/reflection: a third-party gRPC reflection client (npm)
  # optional: real fuzzing of agent/protocol (-DREPTRACE_FUZZ=ON): clang and libFuzzer
  clang libclang-rt-14-dev
)

build_only=false
if [ "${1:-}" = "--build-only" ]; then
  build_only=true
  PACKAGES=("${BUILD_PACKAGES[@]}")
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# npm comes with nodejs where that is NodeSource's package (which conflicts with Debian's
# npm); Debian's nodejs needs Debian's npm beside it.
if [ "$build_only" = false ] && ! command -v npm >/dev/null 2>&1; then
  missing+=(npm)
fi

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present$([ "$build_only" = true ] || echo ' (and npm)')"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
# policy-rc.d keeps Debian's postinst scripts from starting system nginx/redis/postgresql
# services we do not want: reptrace starts its own instances on private ports.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
