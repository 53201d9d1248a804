#!/usr/bin/env bash
# Side-by-side benchmark of warden against the physical floor of this machine (C loops
# around posix_spawn), runit, s6 and supervisord, on the same workload in ONE run, plus warden's chaos
# benchmark (1,000 crash-looping children). Writes benches/results/peers-<UTC time>.md.
#
#   benches/peers/run.sh [--rounds 3] [--kills 200] [--n 1000] [--chaos 60] ...
#   benches/peers/run.sh --help          every knob (see peers.py)
#
# A hand-run script, not CI: it compiles the C programs with gcc, installs the peers with
# apt-get if they are missing (see below), and builds warden with `cargo build --release`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${BENCH_BUILD:-$root/target/bench-peers}"

for arg in "$@"; do
  if [ "$arg" = "--help" ] || [ "$arg" = "-h" ]; then
    exec python3 "$here/peers.py" --help
  fi
done

command -v gcc >/dev/null || { echo "run.sh: gcc is needed (apt-get install gcc libc6-dev)" >&2; exit 2; }
# The peers, from the distribution (Debian/Ubuntu package names): only what is missing,
# never an init package (runit, not runit-init; s6, not s6-linux-init): each supervisor
# is just a child of this script. Set BENCH_NO_INSTALL=1 to run with what is there.
missing=()
command -v runsvdir >/dev/null || missing+=(runit)
command -v s6-svscan >/dev/null || missing+=(s6)
command -v supervisord >/dev/null || missing+=(supervisor)
if [ "${#missing[@]}" -gt 0 ] && [ -z "${BENCH_NO_INSTALL:-}" ]; then
  echo "run.sh: installing ${missing[*]} (apt-get, --no-install-recommends)" >&2
  sudo_=""
  [ "$(id -u)" = 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

mkdir -p "$build"
compile() { # OUT SRC [FLAGS]: rebuild when the source is newer
  local out="$1" src="$2"; shift 2
  if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then
    gcc -O2 -Wall "$@" -o "$out" "$src"
  fi
}
compile "$build/bench-child" "$here/child/bench-child.c" -static
compile "$build/restart" "$here/floor/restart.c"
compile "$build/fanout" "$here/floor/fanout.c"
compile "$build/fanout_kept" "$here/floor/fanout_kept.c" -pthread
compile "$build/census" "$here/census/census.c"

(cd "$root" && cargo build --release --bin warden)

exec python3 "$here/peers.py" --build "$build" --warden "$root/target/release/warden" \
  --out "$root/benches/results" "$@"
