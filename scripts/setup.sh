#!/usr/bin/env bash
# Installs the system packages HUDS builds and tests with (idempotent): libclang for RocksDB's bindings,
# a C++ compiler for RocksDB itself, fuse3 for mounts, python3 for the test-vector generator, chromium for
# the gateway's page test, nginx and wrk for `huds bench gateway`.
set -euo pipefail
need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# The gateway's status-page test drives headless Chromium; `huds bench gateway` runs nginx and wrk.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

# pjdfstest (the Rust port, pinned) runs against a read-write volume mount in tests/devnet.rs; its tests switch
# to the users nobody and tests.
if [ ! -x /var/tmp/pjdfstest/bin/pjdfstest ]; then
  CARGO_TARGET_DIR=/var/tmp/pjdfstest-target cargo install pjdfstest --version 0.2.2 --locked --root /var/tmp/pjdfstest
fi
if [ "$(id -u)" -eq 0 ] && ! id tests >/dev/null 2>&1; then
  useradd -M -s /usr/sbin/nologin tests
fi
