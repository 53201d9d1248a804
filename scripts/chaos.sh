#!/usr/bin/env bash
# Runs the chaos test (tests/chaos.rs) for longer than CI does: warden SIGKILLed at random
# moments and restarted on the same state_dir for MINUTES minutes, while children
# crash-loop beside an outboard child and a pool. Prints the seed; replay one with
# WARDEN_CHAOS_SEED=0x... scripts/chaos.sh MINUTES.
#
#   scripts/chaos.sh [MINUTES]      (default 10)
set -euo pipefail
minutes="${1:-10}"
case "$minutes" in
  ''|*[!0-9]*) echo "usage: scripts/chaos.sh [MINUTES]" >&2; exit 2 ;;
esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WARDEN_CHAOS_SECS=$((minutes * 60)) exec cargo test -p warden --test chaos -- --nocapture
