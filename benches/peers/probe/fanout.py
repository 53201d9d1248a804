#!/usr/bin/env python3
"""Warden's fan-out alone, with the CPU each of its threads used (the probe behind
docs/benchmarks.md, "Where warden's spawn time goes"; run.sh gives the figures beside the floor and the peers).

    fanout.py WARDEN [N] [-- PREFIX...]   e.g. PREFIX = perf record -g -o x.data --

Starts `WARDEN up` with N (1000) static bench-child sleepers (target/bench-peers, built
by run.sh), prints launch -> last start line and, at that moment, the CPU time of each of
warden's threads (/proc/PID/task/TID/schedstat). For the typical machine's open files
limit run it under `ulimit -Sn 1024`. Everything it started carries WARDEN_BENCH_RUN=probe
and is SIGKILLed by pid at the end."""
import os, secrets, shutil, signal, socket, subprocess, sys, tempfile, time

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.abspath(os.path.join(here, "..", "..", ".."))
MARK = "WARDEN_BENCH_RUN=probe-%s" % secrets.token_hex(4)


def main():
    argv = sys.argv[1:]
    prefix = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    if not argv:
        raise SystemExit(__doc__)
    warden, n = os.path.abspath(argv[0]), int(argv[1]) if len(argv) > 1 else 1000
    child = os.path.join(root, "target", "bench-peers", "bench-child")
    work = tempfile.mkdtemp(dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None, prefix="probe")
    log = os.path.join(work, "starts.log")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with open(os.path.join(work, "admin.token"), "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    os.chmod(os.path.join(work, "admin.token"), 0o600)
    lines = ['state_dir = "state"', "", "[admin]", 'listen = "127.0.0.1:%d"' % port,
             'token_file = "admin.token"', "", "[restart]", 'policy = "permanent"',
             'backoff = { initial = "0ms", max = "0ms", multiplier = 1.0, jitter = 0.0 }',
             'intensity = { max = 1000000000, within = "1s" }', ""]
    for i in range(n):
        lines += ["[[service]]", 'name = "f%04d"' % i,
                  'command = ["%s", "sleeper", "%s", "f%04d"]' % (child, log, i), ""]
    with open(os.path.join(work, "warden.toml"), "w") as f:
        f.write("\n".join(lines))
    env = dict(os.environ)
    key, value = MARK.split("=")
    env[key] = value
    t0 = time.monotonic_ns()
    proc = subprocess.Popen(prefix + [warden, "up", "-c", "warden.toml"], cwd=work, env=env,
                            stdin=subprocess.DEVNULL, stdout=open(os.path.join(work, "warden.out"), "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        last, count = None, 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with open(log) as f:
                    stamps = [int(line.split()[2]) for line in f if line.strip()]
            except FileNotFoundError:
                stamps = []
            count = len(stamps)
            if count >= n:
                first, last = min(stamps), max(stamps)
                break
            time.sleep(0.01)
        per, total = {}, 0
        pid = proc.pid if not prefix else newest_named(os.path.basename(warden))
        for tid in os.listdir("/proc/%d/task" % pid) if pid else []:
            try:
                with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                    name = f.read().strip()
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    ns = int(f.read().split()[0])
            except OSError:
                continue
            name = "tokio-rt-worker" if name.startswith("tokio") else name
            per[name] = per.get(name, 0) + ns
            total += ns
        shown = ", ".join("%s %.0f" % (k, v / 1e6) for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v > 2e6)
        if last is None:
            print("fan-out FAILED: %d/%d started" % (count, n))
        else:
            print("fan-out %.3f s (first start line at %.3f s); warden CPU %.0f ms (%s); open files soft limit %d"
                  % ((last - t0) / 1e9, (first - t0) / 1e9, total / 1e6, shown,
                     __import__("resource").getrlimit(7)[0]))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        sweep()
        shutil.rmtree(work, ignore_errors=True)


def newest_named(name):
    """The pid of the newest process called `name` whose environment has our marker."""
    best = None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/comm" % pid) as f:
                if f.read().strip() != name[:15]:
                    continue
            with open("/proc/%s/environ" % pid, "rb") as f:
                if MARK.encode() in f.read().split(b"\0"):
                    best = max(best or 0, int(pid))
        except OSError:
            pass
    return best


def sweep():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                if MARK.encode() in f.read().split(b"\0"):
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


if __name__ == "__main__":
    main()
