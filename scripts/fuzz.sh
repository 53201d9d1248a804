#!/usr/bin/env bash
# Runs the IPC frame decoder fuzz target for a bounded time (default 60 s). Not part of
# CI. Needs cargo-fuzz (installed here on first use) and clang's libFuzzer runtime that
# rustc ships; the stable toolchain is told to accept the sanitizer flags.
#   scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz run frame_decoder -- -max_total_time="$seconds" -rss_limit_mb=2048
