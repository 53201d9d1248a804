#!/usr/bin/env bash
# Runs the fuzz targets for a bounded time each (default 60 s): the outboard IPC frame
# decoder and the hub's hello/request/reply decoders. Not part of CI. Needs cargo-fuzz
# (installed here on first use) and clang's libFuzzer runtime that rustc ships; the
# stable toolchain is told to accept the sanitizer flags.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(frame_decoder hub_decoders)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
  echo "== $target ($seconds s)"
  cargo fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
