#!/usr/bin/env python3
"""Side by side, in ONE run: the physical floor of this machine, runit, s6, supervisord,
pm2 and warden on the same workload (the static bench-child), and warden's chaos benchmark.

Started by run.sh (which compiles the C programs, installs the peers it can and builds
warden). A peer that is not installed is skipped and named in the output.
Standard library only. Every figure is measured here; nothing is copied from elsewhere.

Definitions, the same for all (CLOCK_MONOTONIC everywhere; bench-child stamps its
own start line with it):
  restart   a sleeper is SIGKILLed; latency = the replacement's start stamp - the kill
            stamp. 10 sleepers killed in rotation, one restart in flight at a time, each
            killed only after >= 1.1 s up (runit pauses 1 s after a run shorter than 1 s).
            The floor is a C loop: kill, waitpid, posix_spawn, block on the start pipe.
  fan-out   N sleepers (1,000); time = the last child's start stamp - the stamp taken just
            before the supervisor (or the C spawn loop) is launched. Beside the floor, the
            same loop doing the kernel work of warden's promises for each service
            (floor/fanout_kept.c: born in a cgroup of its own, an output pipe, a pidfd, a
            process record): what any supervisor keeping those promises pays here.
  memory    RSS (and PSS) of the supervisor's own processes with the N sleepers up.
  chaos     warden only: 1,000 crash-looping children (each lives a random MIN..MAX ms,
            writes an exit line, exits 1); restarts/s over the window, restart latency =
            a start stamp - the same child's previous exit stamp, and "nothing ran twice"
            checked twice: from the log (a start while the same child's previous instance
            has not written its exit line) and by a census of /proc (two live processes
            carrying the same WARDEN_ACTOR at one moment; the compiled `census` under
            SCHED_IDLE, so that the observer takes no CPU the restarts want).

Safety: everything started carries WARDEN_BENCH_RUN=<id> in its environment; at the end
of each measurement what is left with that marker is SIGKILLed by pid (never by name).
"""
import argparse
import ctypes
import datetime
import json
import math
import os
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

MARKER_VAR = "WARDEN_BENCH_RUN"


# --------------------------------------------------------------------------- helpers
def now_ns():
    return time.monotonic_ns()


def pct(values, p):
    """Nearest-rank percentile (None when empty)."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def say(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def cpu_idle_share(window_s=0.5):
    """The share of all CPUs' time that was idle (idle + iowait) over the next window_s."""
    def sample():
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]
    total0, idle0 = sample()
    time.sleep(window_s)
    total1, idle1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def settle(what, idle=0.85, max_s=20.0):
    """Waits (at most max_s) until the machine is quiet: the previous measurement's
    teardown (a thousand processes killed and reaped, runit's scanner, warden's stop) and
    whatever else ran must not land in the next one. Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_s:
        if cpu_idle_share() >= idle:
            break
    waited = time.monotonic() - t0
    if waited >= max_s:
        say("%s: the CPUs did not settle to %.0f%% idle in %.0f s; measuring anyway"
            % (what, idle * 100, max_s))
    return waited


def machine():
    """CPU model, memory and the Rust compiler, for the report's header."""
    cpu = next((line.split(":", 1)[1].strip() for line in (read("/proc/cpuinfo") or "").splitlines()
                if line.startswith("model name")), "unknown CPU")
    mem_kib = next((int(line.split()[1]) for line in (read("/proc/meminfo") or "").splitlines()
                    if line.startswith("MemTotal:")), 0)
    try:
        rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True,
                               timeout=10).stdout.strip() or "rustc unknown"
    except (OSError, subprocess.SubprocessError):
        rustc = "rustc unknown"
    return "%s, %.0f GiB, %s" % (cpu, mem_kib / 1048576, rustc)


def read(path, mode="r"):
    try:
        with open(path, mode) as f:
            return f.read()
    except OSError:
        return None


def stat_of(pid):
    """(state, ppid, start_time) of a pid from /proc/PID/stat, or None."""
    raw = read("/proc/%d/stat" % pid)
    if not raw:
        return None
    rest = raw.rsplit(")", 1)[1].split()
    return rest[0], int(rest[1]), int(rest[19])


def live(pid):
    st = stat_of(pid)
    return st is not None and st[0] not in ("Z", "X")


def environ_of(pid):
    raw = read("/proc/%d/environ" % pid, "rb")
    if not raw:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


def all_pids():
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def marked_pids(run_id):
    me = os.getpid()
    needle = ("%s=%s" % (MARKER_VAR, run_id)).encode()
    out = []
    for pid in all_pids():
        if pid == me:
            continue
        raw = read("/proc/%d/environ" % pid, "rb")
        if raw and needle in raw.split(b"\0") and live(pid):
            out.append(pid)
    return out


def reap_orphans():
    """We are a child subreaper: reap whatever was reparented to us."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def sweep(run_id, timeout=15.0):
    """SIGKILL, by pid, every live process of this run; returns how many were killed."""
    killed = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = marked_pids(run_id)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.05)
        reap_orphans()
    reap_orphans()
    return killed


def descendants(roots):
    children = {}
    for pid in all_pids():
        st = stat_of(pid)
        if st:
            children.setdefault(st[1], []).append(pid)
    out, todo = [], list(roots)
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def mem_kib(pid):
    """(RSS, PSS) in KiB."""
    rss = pss = 0
    for line in (read("/proc/%d/smaps_rollup" % pid) or "").splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


class ChildLog:
    """Incremental reader of the children's log: (tag, pid, mono_ns, what) tuples."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        out = []
        for line in lines:
            parts = line.decode(errors="replace").split()
            if len(parts) == 4:
                out.append((parts[0], int(parts[1]), int(parts[2]), parts[3]))
        return out


def wait_starts(log, tags, timeout, poll=0.005):
    """Waits until every tag has a start line: {tag: (pid, stamp)} of the first ones."""
    first = {}
    want = set(tags)
    deadline = time.monotonic() + timeout
    while len(first) < len(want) and time.monotonic() < deadline:
        for tag, pid, stamp, what in log.poll():
            if what == "start" and tag in want and tag not in first:
                first[tag] = (pid, stamp)
        if len(first) < len(want):
            time.sleep(poll)
    return first


# --------------------------------------------------------------------------- peers
class Peer:
    """One supervisor under test, one instance per measurement."""

    name = "?"

    def __init__(self, ctx, run_dir):
        self.ctx = ctx
        self.run_dir = run_dir
        self.proc = None
        os.makedirs(run_dir, exist_ok=True)

    def spawn(self, argv, logname):
        out = open(os.path.join(self.run_dir, logname), "ab")
        try:
            self.proc = subprocess.Popen(argv, cwd=self.run_dir, env=self.ctx.env,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()

    def own_pids(self):
        """The supervisor's processes: its root and descendants that are not bench-child."""
        return self.tree_without_children(self.proc.pid if self.proc else None)

    def tree_without_children(self, root):
        """root and its descendants, live, less the bench-child processes."""
        if root is None:
            return []
        child = os.path.realpath(self.ctx.child)
        pids = [root] + descendants([root])
        out = []
        for p in pids:
            try:
                if os.path.realpath("/proc/%d/exe" % p) == child:
                    continue
            except OSError:
                continue
            if live(p):
                out.append(p)
        return out


def service_dirs(root, services):
    """services: [(tag, argv)] -> one dir each under root, whose ./run is bench-child
    itself (runit's and s6's layout); returns root."""
    os.makedirs(root)
    for tag, argv in services:
        d = os.path.join(root, tag)
        os.makedirs(d)
        os.symlink(argv[0], os.path.join(d, "run"))
        with open(os.path.join(d, "child.args"), "w") as f:
            f.write(" ".join(argv[1:]) + "\n")
    return root


def stop_scanner(peer, sig, timeout):
    """Sends sig to a scanner (runsvdir, s6-svscan) and waits until its whole tree of
    supervise processes is gone."""
    tree = peer.own_pids()
    if peer.proc:
        peer.proc.send_signal(sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(live(p) for p in tree):
        reap_orphans()
        time.sleep(0.02)
    if peer.proc:
        peer.proc.wait(timeout=5)


class Runit(Peer):
    name = "runit"
    binary = "runsvdir"

    def prepare(self, services):
        self.svdir = service_dirs(os.path.join(self.run_dir, "service"), services)
        # runsvdir waits 1 s before scanning a dir modified in the current second: a
        # config written earlier, as on a real host, is the fair start.
        old = time.time() - 10
        os.utime(self.svdir, (old, old))

    def launch(self):
        self.spawn(["runsvdir", "-P", self.svdir], "runsvdir.out")

    def stop(self, timeout):
        stop_scanner(self, signal.SIGHUP, timeout)  # TERM to every runsv, which stop theirs

    @staticmethod
    def version():
        return "runit " + dpkg_version("runit")


class S6(Peer):
    """s6-svscan on a scan dir, one s6-supervise per service; ./run is bench-child."""

    name = "s6"
    binary = "s6-svscan"

    def prepare(self, services):
        self.scandir = service_dirs(os.path.join(self.run_dir, "scan"), services)
        # s6-svscan maintains at most 500 services unless told more (-c)
        self.max_services = max(500, len(services) + 10)

    def launch(self):
        self.spawn(["s6-svscan", "-c", str(self.max_services), self.scandir], "s6-svscan.out")

    def stop(self, timeout):
        # like s6-svscanctl -t: every s6-supervise brings its service down and exits
        stop_scanner(self, signal.SIGTERM, timeout)

    @staticmethod
    def version():
        return "s6 " + dpkg_version("s6")


class Supervisord(Peer):
    """supervisord (Python) with one [program:x] per service, restarted at once."""

    name = "supervisord"
    binary = "supervisord"

    def prepare(self, services):
        lines = ["[supervisord]", "nodaemon=true",
                 "logfile=%s" % os.path.join(self.run_dir, "supervisord.log"),
                 "pidfile=%s" % os.path.join(self.run_dir, "supervisord.pid"),
                 "loglevel=warn", "minfds=16384", ""]
        for tag, argv in services:
            lines += ["[program:%s]" % tag, "command=%s" % " ".join(argv),
                      "autostart=true", "autorestart=true",
                      # restart at once and never give up (as runit does)
                      "startsecs=0", "startretries=1000000000",
                      "stopsignal=TERM", "stopwaitsecs=10",
                      "stdout_logfile=NONE", "stderr_logfile=NONE", ""]
        self.config = os.path.join(self.run_dir, "supervisord.conf")
        with open(self.config, "w") as f:
            f.write("\n".join(lines))

    def launch(self):
        self.spawn(["supervisord", "-c", self.config], "supervisord.out")

    def stop(self, timeout):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass

    @staticmethod
    def version():
        return "supervisord " + dpkg_version("supervisor")


class Pm2(Peer):
    """pm2 (Node.js) in fork mode, each service a binary run with interpreter "none",
    restarted at once; its daemon runs in a PM2_HOME of its own."""

    name = "pm2"
    binary = "pm2"

    def prepare(self, services):
        self.home = os.path.join(self.run_dir, "pm2-home")
        os.makedirs(self.home)
        self.env = dict(self.ctx.env, PM2_HOME=self.home)
        apps = [{"name": tag, "script": argv[0], "args": argv[1:], "interpreter": "none",
                 "exec_mode": "fork", "autorestart": True, "restart_delay": 0,
                 "min_uptime": 0, "max_restarts": 1000000000,
                 "out_file": "/dev/null", "error_file": "/dev/null"} for tag, argv in services]
        self.config = os.path.join(self.run_dir, "ecosystem.json")
        with open(self.config, "w") as f:
            json.dump({"apps": apps}, f)

    def launch(self):
        # `pm2 start` starts the daemon (which detaches: as our subreaper's orphan it stays
        # a child of this harness) and returns once every app is launched
        out = open(os.path.join(self.run_dir, "pm2.out"), "ab")
        try:
            subprocess.run(["pm2", "start", self.config], cwd=self.run_dir, env=self.env,
                           stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                           check=True, timeout=600)
        finally:
            out.close()

    def daemon_pid(self):
        try:
            return int(read(os.path.join(self.home, "pm2.pid")).strip())
        except (TypeError, ValueError):
            return None

    def own_pids(self):
        pid = self.daemon_pid()
        return self.tree_without_children(pid if pid is not None and live(pid) else None)

    def stop(self, timeout):
        try:
            subprocess.run(["pm2", "kill"], cwd=self.run_dir, env=self.env,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        reap_orphans()

    @staticmethod
    def version():
        # from its package.json: `pm2 --version` may start a daemon
        bin_path = os.path.realpath(shutil.which("pm2") or "pm2")
        try:
            with open(os.path.join(os.path.dirname(bin_path), "..", "package.json")) as f:
                return "pm2 " + json.load(f)["version"]
        except (OSError, ValueError, KeyError):
            return "pm2 ?"


def dpkg_version(package):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                       capture_output=True, text=True)
    return r.stdout.strip() or "?"


class Warden(Peer):
    name = "warden"

    def prepare(self, services):
        self.port = free_port()
        self.token = secrets.token_hex(32)
        tok = os.path.join(self.run_dir, "admin.token")
        with open(tok, "w") as f:
            f.write(self.token + "\n")
        os.chmod(tok, 0o600)
        lines = ['state_dir = "state"', "",
                 "[admin]", 'listen = "127.0.0.1:%d"' % self.port, 'token_file = "admin.token"', "",
                 # restart as fast as warden allows and never give up (as runit does)
                 "[restart]", 'policy = "permanent"',
                 'backoff = { initial = "0ms", max = "0ms", multiplier = 1.0, jitter = 0.0 }',
                 'intensity = { max = 1000000000, within = "1s" }', ""]
        for tag, argv in services:
            lines += ["[[service]]", "name = %s" % json.dumps(tag),
                      "command = [%s]" % ", ".join(json.dumps(a) for a in argv), ""]
        self.config = os.path.join(self.run_dir, "warden.toml")
        with open(self.config, "w") as f:
            f.write("\n".join(lines))

    def launch(self):
        self.spawn([self.ctx.warden, "up", "-c", self.config], "warden.out")

    def stop(self, timeout):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass

    def actors(self):
        req = urllib.request.Request("http://127.0.0.1:%d/api/v1/actors" % self.port,
                                     headers={"Authorization": "Bearer " + self.token})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def version(self):
        r = subprocess.run([self.ctx.warden, "--version"], capture_output=True, text=True)
        return (r.stdout or r.stderr).strip() or "warden ?"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Ctx:
    def __init__(self, args):
        self.args = args
        self.build = args.build
        self.child = os.path.join(args.build, "bench-child")
        self.warden = args.warden
        self.run_id = secrets.token_hex(6)
        self.env = dict(os.environ)
        self.env[MARKER_VAR] = self.run_id
        self.env.pop("BENCH_NOTIFY_FD", None)
        self.work = tempfile.mkdtemp(prefix="warden-peers-", dir=args.work_base)
        self.seq = 0

    def run_dir(self, label):
        self.seq += 1
        return os.path.join(self.work, "%03d-%s" % (self.seq, label))


class Instance:
    """One supervisor instance for one measurement; always stopped and swept."""

    def __init__(self, ctx, cls, label, services_of_log):
        self.ctx = ctx
        self.peer = cls(ctx, ctx.run_dir("%s-%s" % (cls.name, label)))
        self.log_path = os.path.join(self.peer.run_dir, "children.log")
        self.log = ChildLog(self.log_path)
        self.peer.prepare(services_of_log(self.log_path))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        t0 = time.monotonic()
        try:
            self.peer.stop(60)
        finally:
            self.stop_s = time.monotonic() - t0
            self.swept = sweep(self.ctx.run_id)
        return False


# --------------------------------------------------------------------------- scenarios
def run_floor(ctx, program, label, count, workdir=False):
    """Runs the floor's C `program` (`program CHILD COUNT LOG [WORKDIR]`) in a run folder of
    its own and answers its JSON line; a failure raises, with what the program said."""
    d = ctx.run_dir(label)
    os.makedirs(d, exist_ok=True)
    argv = [os.path.join(ctx.build, program), ctx.child, str(count), os.path.join(d, "x.log")]
    out = subprocess.run(argv + ([d] if workdir else []), capture_output=True, text=True,
                         env=ctx.env)
    if out.returncode != 0:
        raise RuntimeError("%s failed (exit %d): %s" % (program, out.returncode, out.stderr.strip()))
    return json.loads(out.stdout)


def floor_restart(ctx, kills):
    return run_floor(ctx, "restart", "floor-restart", kills)["samples_ms"]


def floor_fanout(ctx, n):
    return run_floor(ctx, "fanout", "floor-fanout", n)["all_started_s"]


def floor_fanout_kept(ctx, n):
    """The fan-out floor with the kernel work of warden's promises (floor/fanout_kept.c):
    a cgroup, an output pipe, a pidfd and a process record per service. None when the
    program was not built (an older build folder) or failed (said in the output)."""
    if not os.access(os.path.join(ctx.build, "fanout_kept"), os.X_OK):
        return None
    try:
        result = run_floor(ctx, "fanout_kept", "floor-fanout-kept", n, workdir=True)
    except RuntimeError as e:
        say("the floor with warden's promises: %s" % e)
        return None
    ctx.kept_cgroups = bool(result.get("cgroups"))
    return result["all_started_s"]


def restart_latency(ctx, cls, kills, children=10, min_uptime_s=1.1, timeout_s=10.0):
    """Kill -> replacement's start line, sequential kills rotating over `children`."""
    tags = ["k%02d" % i for i in range(children)]
    samples = []
    failures = 0
    with Instance(ctx, cls, "restart",
                  lambda log: [(t, [ctx.child, "sleeper", log, t]) for t in tags]) as inst:
        inst.peer.launch()
        current = wait_starts(inst.log, tags, 60)
        if len(current) < children:
            raise RuntimeError("%s: only %d/%d children started" % (cls.name, len(current), children))
        for i in range(kills):
            tag = tags[i % children]
            pid, started = current[tag]
            wait = (started + int(min_uptime_s * 1e9) - now_ns()) / 1e9
            if wait > 0:
                time.sleep(wait)
            if environ_of(pid).get(MARKER_VAR) != ctx.run_id:
                raise RuntimeError("%s: pid %d is not ours" % (cls.name, pid))
            killed_at = now_ns()
            os.kill(pid, signal.SIGKILL)
            got = None
            deadline = time.monotonic() + timeout_s
            while got is None and time.monotonic() < deadline:
                for t, p, stamp, what in inst.log.poll():
                    if what == "start":
                        current[t] = (p, stamp)
                        if t == tag and p != pid:
                            got = stamp
                if got is None:
                    time.sleep(0.001)
            if got is None:
                failures += 1
            else:
                samples.append((got - killed_at) / 1e6)
    return samples, failures


def fanout(ctx, cls, n, settle_s=2.0):
    """Launch -> last start line of n sleepers; then the supervisor's RSS/PSS."""
    tags = ["f%04d" % i for i in range(n)]
    res = {}
    with Instance(ctx, cls, "fanout",
                  lambda log: [(t, [ctx.child, "sleeper", log, t]) for t in tags]) as inst:
        t0 = now_ns()
        inst.peer.launch()
        first = wait_starts(inst.log, tags, 240, poll=0.01)
        if len(first) < n:
            raise RuntimeError("%s: only %d/%d children started" % (cls.name, len(first), n))
        res["all_started_s"] = (max(s for _, s in first.values()) - t0) / 1e9
        if isinstance(inst.peer, Warden):
            # warden's own view: every service `running` (first poll that says so)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    actors = [a for a in inst.peer.actors() if a["kind"] == "service"]
                except OSError:
                    actors = []
                if len(actors) == n and all(a["state"] == "running" for a in actors):
                    res["api_all_running_s"] = (now_ns() - t0) / 1e9
                    break
                time.sleep(0.02)
        time.sleep(settle_s)
        pids = inst.peer.own_pids()
        rss = pss = 0
        for p in pids:
            r, s = mem_kib(p)
            rss += r
            pss += s
        res.update(procs=len(pids), rss_mib=rss / 1024.0, pss_mib=pss / 1024.0,
                   alive=sum(1 for pid, _ in first.values() if live(pid)))
    res["stop_s"] = inst.stop_s
    res["swept"] = inst.swept
    return res


# --------------------------------------------------------------------------- chaos
def census(ctx):
    """Live processes of this run grouped by WARDEN_ACTOR: {actor: [(pid, start_time)]}.
    The scan is the compiled `census` (benches/peers/census): the same scan in Python took
    ~140 ms of a core every 2 s, and the restarts in those windows made the chaos tail."""
    needle = "%s=%s" % (MARKER_VAR, ctx.run_id)
    out = subprocess.run([os.path.join(ctx.build, "census"), needle],
                         capture_output=True, text=True, check=True).stdout
    by_actor = {}
    for line in out.splitlines():
        actor, pid, start_time = line.split()
        if actor != "-":
            by_actor.setdefault(actor, []).append((int(pid), int(start_time)))
    return by_actor


def same_process_live(pid, start_time):
    st = stat_of(pid)
    return st is not None and st[0] not in ("Z", "X") and st[2] == start_time


def census_doubles(ctx):
    """Actors with two live instances at one moment. A scan of /proc is not atomic, so a
    pair seen in one scan is confirmed by reading A, then B, then A again: A live at the
    first and the last read was live while B was read, so both lived at once. Returns the
    doubles and how many actors the scan saw live (a scan that sees none checks nothing)."""
    doubles = []
    seen = census(ctx)
    for actor, procs in seen.items():
        if len(procs) < 2:
            continue
        a, b = procs[0], procs[1]
        if same_process_live(*a) and same_process_live(*b) and same_process_live(*a):
            doubles.append((actor, a[0], b[0]))
    return doubles, len(seen)


def log_doubles(events):
    """Starts of a child while its previous instance had not yet written its exit line."""
    live_pid = {}
    doubles = []
    for tag, pid, stamp, what in sorted(events, key=lambda e: e[2]):
        if what == "start":
            if tag in live_pid:
                doubles.append((tag, live_pid[tag], pid))
            live_pid[tag] = pid
        elif what == "exit" and live_pid.get(tag) == pid:
            del live_pid[tag]
    return doubles


def chaos(ctx, n, window_s, life_ms, census_every_s):
    """warden with n crash-looping children for window_s seconds (after all first started)."""
    lo, hi = life_ms
    tags = ["c%04d" % i for i in range(n)]
    res = {"n": n, "window_s": window_s, "life_ms": "%d-%d" % (lo, hi)}
    events = []
    censuses = 0
    doubles_proc = []
    with Instance(ctx, Warden, "chaos",
                  lambda log: [(t, [ctx.child, "crasher", log, t, str(lo), str(hi)])
                               for t in tags]) as inst:
        t0 = now_ns()
        inst.peer.launch()
        first = {}
        deadline = time.monotonic() + 120
        while len(first) < n and time.monotonic() < deadline:
            for e in inst.log.poll():
                events.append(e)
                if e[3] == "start" and e[0] not in first:
                    first[e[0]] = e[2]
            time.sleep(0.01)
        if len(first) < n:
            raise RuntimeError("chaos: only %d/%d children started" % (len(first), n))
        res["all_first_started_s"] = (max(first.values()) - t0) / 1e9
        begin = now_ns()
        end = begin + int(window_s * 1e9)
        next_census = time.monotonic()
        cpu0 = cpu_ticks(inst.peer.proc.pid)
        rss_max = 0
        census_seen_min = 0
        while now_ns() < end:
            events.extend(inst.log.poll())
            if time.monotonic() >= next_census:
                doubles, seen = census_doubles(ctx)
                doubles_proc += doubles
                census_seen_min = seen if censuses == 0 else min(census_seen_min, seen)
                censuses += 1
                rss_max = max(rss_max, mem_kib(inst.peer.proc.pid)[0])
                next_census = time.monotonic() + census_every_s
            time.sleep(0.05)
        cpu1 = cpu_ticks(inst.peer.proc.pid)
        events.extend(inst.log.poll())
        try:
            actors = inst.peer.actors()
            res["api_restarts_total"] = sum(a["restarts"] for a in actors if a["kind"] == "service")
            res["api_states"] = sorted({a["state"] for a in actors if a["kind"] == "service"})
        except OSError as e:
            res["api_error"] = str(e)
        res["warden_rss_max_mib"] = rss_max / 1024.0
        res["warden_cpu_pct_of_one_core"] = 100.0 * (cpu1 - cpu0) / CLK_TCK / window_s
    starts_in = [e for e in events if e[3] == "start" and begin <= e[2] < end]
    bucket_s = min(10.0, window_s)
    per_bucket = [0] * max(1, int(window_s // bucket_s))
    for e in starts_in:
        i = int((e[2] - begin) / (bucket_s * 1e9))
        if i < len(per_bucket):
            per_bucket[i] += 1
    last_exit = {}
    latencies = []
    for tag, pid, stamp, what in sorted(events, key=lambda e: e[2]):
        if what == "exit":
            last_exit[tag] = stamp
        elif tag in last_exit and begin <= stamp < end:
            latencies.append((stamp - last_exit.pop(tag)) / 1e6)
    doubles_log = log_doubles(events)
    res.update({
        "restarts_per_s": len(starts_in) / window_s,
        "warden_cpu_ms_per_restart": (res["warden_cpu_pct_of_one_core"] * window_s * 10.0
                                      / len(starts_in)) if starts_in else None,
        "restarts_per_s_min_10s": min(per_bucket) / bucket_s,
        "restart_p50_ms": pct(latencies, 50), "restart_p99_ms": pct(latencies, 99),
        "restart_max_ms": max(latencies) if latencies else None,
        "restart_samples": len(latencies),
        "censuses": censuses, "census_seen_min": census_seen_min,
        "doubles_census": doubles_proc[:10], "doubles_census_count": len(doubles_proc),
        "doubles_log": doubles_log[:10], "doubles_log_count": len(doubles_log),
        "stop_s": inst.stop_s, "swept": inst.swept,
    })
    return res


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    raw = read("/proc/%d/stat" % pid)
    if not raw:
        return 0
    rest = raw.rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


# --------------------------------------------------------------------------- report
def f(x, fmt="%.2f"):
    return "-" if x is None else fmt % x


def ratio(a, b):
    return None if a is None or not b else a / b


def report(args, ctx, rounds, chaos_runs, started, loads):
    lines = []
    add = lines.append
    names = ["floor"] + ctx.peer_names + ["warden"]
    keys = ("p50", "p99", "fan", "api", "rss", "pss")
    m = {}
    for name in names:
        for k in keys:
            m[name + "_" + k] = median([r.get(name + "_" + k) for r in rounds])
    add("# warden beside %s and the floor" % ", ".join(ctx.peer_names or ["no peer"]))
    add("")
    add("Generated by `benches/peers/run.sh %s` (started %s UTC, %d round(s); figures are "
        "medians of the rounds, per-round values below). Machine: %d cores (%s), Linux %s; load average "
        "at the rounds' starts: %s. Child: the static `bench-child`; work dir on %s. "
        "Open files limit (soft/hard) every supervisor started with: %s. Versions: %s."
        % (args.shown, started, len(rounds), os.cpu_count(), machine(), os.uname().release,
           "; ".join(loads), fs_type(ctx.work), "%d/%d" % resource.getrlimit(resource.RLIMIT_NOFILE),
           ", ".join(ctx.versions)))
    add("")
    heads = ["floor (C loop)"] + ctx.peer_names + ["warden", "warden / floor", "goal"]
    add("| | " + " | ".join(heads) + " |")
    add("|---" * (len(heads) + 1) + "|")

    def row(label, key, fmt, goal, warden_ratio=None):
        cells = [f(m[n + "_" + key], fmt) for n in names]
        cells.append(f(warden_ratio, "%.2fx") if warden_ratio is not None else "")
        add("| %s | %s | %s |" % (label, " | ".join(cells), goal))

    row("restart p50, kill -> new start line (ms)", "p50", "%.3f", "<= 1.15x floor",
        ratio(m["warden_p50"], m["floor_p50"]))
    row("restart p99 (ms)", "p99", "%.3f", "<= runit's p99",
        ratio(m["warden_p99"], m["floor_p99"]))
    row("%d services, launch -> last start line (s)" % args.n, "fan", "%.3f", "<= 1.25x floor",
        ratio(m["warden_fan"], m["floor_fan"]))
    kept = median([r.get("kept_fan") for r in rounds])
    if kept is not None:
        add("| the same, the floor with warden's promises kept (C loop: a cgroup%s, an output "
            "pipe, a pidfd and a process record per service) (s) | %s |%s %s | %s (warden / it) | |"
            % ("" if getattr(ctx, "kept_cgroups", False) else " (not writable here: none)",
               f(kept, "%.3f"), " - |" * len(ctx.peer_names), f(m["warden_fan"], "%.3f"),
               f(ratio(m["warden_fan"], kept), "%.2fx")))
    row("%d services, launch -> API says all `running` (s)" % args.n, "api", "%.3f", "",
        ratio(m["warden_api"], m["floor_fan"]))
    row("supervisor RSS with %d services (MiB)" % args.n, "rss", "%.1f", "warden <= 20 MiB")
    row("supervisor PSS with %d services (MiB)" % args.n, "pss", "%.1f", "")
    add("")
    add("RSS and PSS count the supervisor's own processes (for runit and s6 one supervise "
        "process per service besides the scanner), not the children.")
    add("")
    add("Per round (%s):" % " / ".join(names))
    add("")
    add("| round | load at start | restart p50 (ms) | restart p99 (ms) | fan-out (s) | fan-out of the floor with warden's promises (s) | RSS (MiB) |")
    add("|---|---|---|---|---|---|---|")
    for i, r in enumerate(rounds):
        cell = lambda key, fmt: " / ".join(f(r.get(n + "_" + key), fmt) for n in names)  # noqa: E731
        add("| %d | %s | %s | %s | %s | %s | %s |" % (
            i + 1, r.get("load"), cell("p50", "%.3f"), cell("p99", "%.3f"), cell("fan", "%.3f"),
            f(r.get("kept_fan"), "%.3f"), cell("rss", "%.1f")))
        if r.get("errors"):
            add("|  | errors: %s | | | | | |" % "; ".join(r["errors"]))
    for c in chaos_runs:
        add("")
        add("## Chaos: %d crash-looping children under warden, %.0f s" % (c["n"], c["window_s"]))
        add("")
        add("Each child lives a random %s ms, writes an exit line and exits 1; warden restarts "
            "at once (backoff 0). Load at start: %s." % (c["life_ms"], c.get("load")))
        add("")
        add("| restarts/s (window) | restarts/s (worst 10 s) | restart p50 / p99 / max, exit -> next start (ms) "
            "| ran twice (log / /proc census) | warden RSS max | warden CPU | warden CPU per restart |")
        add("|---|---|---|---|---|---|---|")
        add("| %.0f | %.0f | %s / %s / %s | %d / %d (%d censuses) | %.1f MiB | %.0f%% of a core | %s ms |" % (
            c["restarts_per_s"], c["restarts_per_s_min_10s"], f(c["restart_p50_ms"], "%.2f"),
            f(c["restart_p99_ms"], "%.2f"), f(c["restart_max_ms"], "%.1f"), c["doubles_log_count"],
            c["doubles_census_count"], c["censuses"], c["warden_rss_max_mib"],
            c["warden_cpu_pct_of_one_core"], f(c["warden_cpu_ms_per_restart"], "%.2f")))
        add("")
        add("Goal: >= 500 restarts/s sustained, p99 <= 5 ms, nothing run twice. Every census "
            "saw at least %d of the %d children live. API after the window: restarts summed %s, "
            "states %s." % (c["census_seen_min"], c["n"], c.get("api_restarts_total"),
                            c.get("api_states")))
        if c.get("doubles_log") or c.get("doubles_census"):
            add("")
            add("Doubles (first ones): log %s; census %s" % (c["doubles_log"], c["doubles_census"]))
    return "\n".join(lines) + "\n"


def fs_type(path):
    best, typ = "", "?"
    for line in (read("/proc/self/mounts") or "").splitlines():
        parts = line.split()
        if len(parts) >= 3 and (path == parts[1] or path.startswith(parts[1].rstrip("/") + "/")):
            if len(parts[1]) > len(best):
                best, typ = parts[1], parts[2]
    return typ


# --------------------------------------------------------------------------- main
def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", required=True, help="folder with bench-child, restart, fanout")
    ap.add_argument("--warden", required=True, help="the release warden binary")
    ap.add_argument("--out", required=True, help="results folder (a markdown file per run)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of floor/runit/warden (3)")
    ap.add_argument("--kills", type=int, default=200, help="kills per restart measurement (200)")
    ap.add_argument("--n", type=int, default=1000, help="services for fan-out (1000)")
    ap.add_argument("--chaos", type=float, default=60.0,
                    help="chaos window in s, 0 to skip (60)")
    ap.add_argument("--chaos-n", type=int, default=1000, help="crash-looping children (1000)")
    ap.add_argument("--chaos-life", default="500-2500",
                    help="each child's life, random MIN-MAX ms (500-2500: ~670 restarts/s offered)")
    ap.add_argument("--census-every", type=float, default=2.0, help="s between /proc censuses")
    ap.add_argument("--work-base", default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
                    help="where the temp work dir goes (tmpfs by default)")
    ap.add_argument("--peers", default="runit,s6,supervisord,pm2",
                    help="peers beside warden, in this order, those installed "
                         "(runit,s6,supervisord; pm2 too: npm install -g pm2)")
    ap.add_argument("--no-runit", action="store_true", help="skip runit")
    a = ap.parse_args(argv)
    paths = ("--build", "--warden", "--out")
    a.shown = " ".join(x for i, x in enumerate(argv)
                       if x not in paths and (i == 0 or argv[i - 1] not in paths))
    return a


def main(argv):
    args = parse_args(argv)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans of our supervisors come to us
    ctx = Ctx(args)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    rounds, chaos_runs, loads = [], [], []
    known = {cls.name: cls for cls in (Runit, S6, Supervisord, Pm2)}
    wanted = [w for w in args.peers.split(",") if w and not (args.no_runit and w == "runit")]
    for w in wanted:
        if w not in known:
            raise SystemExit("unknown peer %r (known: %s)" % (w, ", ".join(known)))
    others = [known[w] for w in wanted if shutil.which(known[w].binary)]
    missing = [w for w in wanted if not shutil.which(known[w].binary)]
    peers = others + [Warden]
    ctx.peer_names = [cls.name for cls in others]
    ctx.versions = [cls.version() for cls in others] + [Warden(ctx, ctx.run_dir("probe")).version()]
    say("%s; not installed, skipped: %s; work dir %s"
        % (", ".join(ctx.versions), ", ".join(missing) or "none", ctx.work))
    try:
        for i in range(args.rounds):
            r = {"load": loadavg(), "errors": []}
            loads.append(r["load"])
            settle("round %d floor" % (i + 1))
            s = floor_restart(ctx, args.kills)
            r["floor_p50"], r["floor_p99"] = pct(s, 50), pct(s, 99)
            r["floor_fan"] = floor_fanout(ctx, args.n)
            r["kept_fan"] = floor_fanout_kept(ctx, args.n)
            say("round %d floor: restart p50 %.3f p99 %.3f ms; fan-out %.3f s, with warden's "
                "promises %s s (load %s)" % (i + 1, r["floor_p50"], r["floor_p99"], r["floor_fan"],
                                             f(r["kept_fan"], "%.3f"), r["load"]))
            for cls in peers:
                key = cls.name
                settle("round %d %s" % (i + 1, key))
                try:
                    s, failures = restart_latency(ctx, cls, args.kills)
                    r[key + "_p50"], r[key + "_p99"] = pct(s, 50), pct(s, 99)
                    if failures:
                        r["errors"].append("%s: %d kills without a replacement" % (key, failures))
                    fo = fanout(ctx, cls, args.n)
                    r[key + "_fan"] = fo["all_started_s"]
                    r[key + "_rss"], r[key + "_pss"] = fo["rss_mib"], fo["pss_mib"]
                    r[key + "_api"] = fo.get("api_all_running_s")
                    say("round %d %s: restart p50 %.3f p99 %.3f ms; fan-out %.3f s (API %s); "
                        "RSS %.1f PSS %.1f MiB in %d procs; stop %.2f s, swept %d"
                        % (i + 1, key, r[key + "_p50"], r[key + "_p99"], fo["all_started_s"],
                           f(fo.get("api_all_running_s"), "%.3f"), fo["rss_mib"], fo["pss_mib"],
                           fo["procs"], fo["stop_s"], fo["swept"]))
                except Exception as e:  # noqa: BLE001 - a failed peer is reported, not fatal
                    r["errors"].append("%s: %s" % (key, e))
                    say("round %d %s FAILED: %s" % (i + 1, key, e))
                    sweep(ctx.run_id)
            rounds.append(r)
        if args.chaos > 0:
            lo, hi = (int(x) for x in args.chaos_life.split("-"))
            settle("chaos")
            load = loadavg()
            say("chaos: %d children, %.0f s, life %d-%d ms (load %s)" % (args.chaos_n, args.chaos, lo, hi, load))
            c = chaos(ctx, args.chaos_n, args.chaos, (lo, hi), args.census_every)
            c["load"] = load
            chaos_runs.append(c)
            say("chaos: %.0f restarts/s (worst 10 s: %.0f), p50 %s p99 %s max %s ms; ran twice: "
                "log %d, census %d of %d (each saw >= %d live); RSS %.1f MiB, CPU %.0f%%"
                % (c["restarts_per_s"], c["restarts_per_s_min_10s"], f(c["restart_p50_ms"]),
                   f(c["restart_p99_ms"]), f(c["restart_max_ms"]), c["doubles_log_count"],
                   c["doubles_census_count"], c["censuses"], c["census_seen_min"],
                   c["warden_rss_max_mib"],
                   c["warden_cpu_pct_of_one_core"]))
    finally:
        sweep(ctx.run_id)
        shutil.rmtree(ctx.work, ignore_errors=True)
    md = report(args, ctx, rounds, chaos_runs, started, loads)
    os.makedirs(args.out, exist_ok=True)
    name = "peers-%s.md" % datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M")
    with open(os.path.join(args.out, name), "w") as fh:
        fh.write(md)
    print(md)
    say("written: %s" % os.path.join(args.out, name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
