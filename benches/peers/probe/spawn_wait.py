#!/usr/bin/env python3
"""How long warden's supervision thread waits for each vfork'd child, and for whom.

    perf sched record -a -o sched.data -- python3 fanout.py WARDEN     (or: -- sleep 5 in chaos)
    perf sched timehist -i sched.data -w > timehist.txt
    spawn_wait.py timehist.txt PID COMM        (PID: warden's main thread, COMM: its name)

A spawn lasts from the parent waking its new child (`awakened: COMM[child]`, in clone3)
to the child waking the parent (exec released the vfork'd memory). Prints the spawn times
(p50/p90/p99/sum), split by whether the child ran on the parent's CPU, the supervision
thread's run time and run-queue delay, and for the spawns over 1 ms whose run filled the
child's CPU meanwhile (the child was runnable and waited behind them)."""
import bisect
import collections
import re
import sys

LINE = re.compile(r"\s*([\d.]+)\s+\[(\d+)\]\s+(.+?)\[([\d/]+)\]\s+(.*)")
WOKE = re.compile(r"awakened: (.+?)\[([\d/]+)\]")


def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


def main():
    path, main_tid, comm = sys.argv[1], sys.argv[2], sys.argv[3]
    events = []
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if m:
                events.append((float(m.group(1)), m.group(2), m.group(3), m.group(4), m.group(5)))
    new, done, parent_cpu, child_cpu = {}, {}, {}, {}
    runs = []
    run = delay = 0.0
    for t, cpu, name, who, rest in events:
        woke = WOKE.search(rest)
        if woke:
            target = woke.group(2)
            if who == main_tid and woke.group(1) == comm and "/" not in target and target != main_tid \
                    and target not in new:
                new[target], parent_cpu[target] = t, cpu
            if target == main_tid and who in new and who not in done:
                done[who], child_cpu[who] = t, cpu
            continue
        cols = rest.split()
        if len(cols) < 3:
            continue
        try:
            ran = float(cols[2]) / 1e3
        except ValueError:
            continue
        if who == main_tid:
            run += ran
            delay += float(cols[1]) / 1e3
        runs.append((t - ran, t, cpu, "supervision thread" if who == main_tid else re.sub(r"\d+", "", name)))
    ms = sorted((done[p] - new[p]) * 1e3 for p in done)
    print("spawns %d: p50 %.3f p90 %.3f p99 %.3f ms, sum %.1f ms" % (len(ms), pct(ms, 50), pct(ms, 90), pct(ms, 99), sum(ms)))
    for same in (True, False):
        part = sorted((done[p] - new[p]) * 1e3 for p in done if (child_cpu[p] == parent_cpu[p]) == same)
        print("  child on the %s CPU: %d, p50 %.3f p90 %.3f ms, sum %.1f ms"
              % ("parent's" if same else "other", len(part), pct(part, 50), pct(part, 90), sum(part)))
    print("supervision thread: ran %.1f ms, waited in the run queue %.1f ms" % (run * 1e3, delay * 1e3))
    runs.sort()
    starts = [r[0] for r in runs]
    behind = collections.Counter()
    slow = [p for p in done if done[p] - new[p] > 1e-3]
    for p in slow:
        a, b, cpu = new[p], done[p], child_cpu[p]
        for s, e, c, name in runs[bisect.bisect_left(starts, a - 0.05):]:
            if s > b:
                break
            if c == cpu and min(e, b) > max(s, a):
                behind[name] += min(e, b) - max(s, a)
    print("spawns over 1 ms: %d (%.1f ms); what ran on the child's CPU meanwhile:"
          % (len(slow), sum(done[p] - new[p] for p in slow) * 1e3))
    for name, v in behind.most_common(12):
        print("  %-28s %.1f ms" % (name, v * 1e3))


if __name__ == "__main__":
    main()
