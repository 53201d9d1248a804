#!/usr/bin/env python3
"""What warden's threads do over a window (e.g. during `run.sh --chaos 30`).

    threads.py PID SECONDS

Prints, per thread, the CPU it ran and the time it waited in the run queue (runnable but
not running) over the window (/proc/PID/task/TID/schedstat), then samples the supervision
thread (PID itself) every 0.5 ms: running/runnable, or blocked where its kernel stack
says (/proc/PID/task/PID/stack, root only), e.g. kernel_clone = waiting for a vfork'd
child to exec, synchronize_rcu under cgroup_procs_write = the cgroup move."""
import collections
import os
import sys
import time

SKIP = {"__schedule", "schedule", "schedule_timeout", "__wait_for_common",
        "wait_for_completion_state", "wait_for_completion_killable"}


def schedstat(pid):
    out = {}
    for tid in os.listdir("/proc/%s/task" % pid):
        try:
            with open("/proc/%s/task/%s/comm" % (pid, tid)) as f:
                name = f.read().strip()
            with open("/proc/%s/task/%s/schedstat" % (pid, tid)) as f:
                run, wait, _ = (int(x) for x in f.read().split())
        except OSError:
            continue
        out[tid] = (name, run, wait)
    return out


def main():
    pid, seconds = sys.argv[1], float(sys.argv[2])
    before = schedstat(pid)
    states = collections.Counter()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with open("/proc/%s/task/%s/stat" % (pid, pid)) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            frames = []
            if state != "R":
                with open("/proc/%s/task/%s/stack" % (pid, pid)) as f:
                    frames = [l.split()[1].split("+")[0] for l in f.read().splitlines()]
        except OSError:
            break
        where = " < ".join(fr for fr in frames[:5] if fr not in SKIP)
        states[state + " " + (where or "-")] += 1
        time.sleep(0.0005)
    after = schedstat(pid)
    print("over %.1f s:" % seconds)
    for tid, (name, run, wait) in sorted(after.items(), key=lambda kv: -(kv[1][1] - before.get(kv[0], ("", 0, 0))[1])):
        _, run0, wait0 = before.get(tid, (name, 0, 0))
        if run - run0 > 5e6:
            print("  %-18s ran %6.0f ms, waited in the run queue %6.0f ms" % (name, (run - run0) / 1e6, (wait - wait0) / 1e6))
    total = sum(states.values()) or 1
    print("supervision thread, %d samples:" % total)
    for key, count in states.most_common(10):
        print("  %5.1f%% %s" % (100.0 * count / total, key[:140]))


if __name__ == "__main__":
    main()
