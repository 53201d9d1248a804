/*
 * What the floor's C programs share: the clock the children stamp their lines with, and
 * the newest start stamp of a log (the last child's start).
 */
#ifndef FLOOR_H
#define FLOOR_H

#include <stdio.h>
#include <time.h>

static inline long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The newest stamp among the `TAG PID MONO_NS WHAT` lines of `log` (0 if none). */
static inline long long newest_stamp(const char *log)
{
    FILE *f = fopen(log, "r");
    long long last = 0, t;
    char tag[32], what[16];
    int pid;
    while (f && fscanf(f, "%31s %d %lld %15s", tag, &pid, &t, what) == 4)
        if (t > last)
            last = t;
    if (f)
        fclose(f);
    return last;
}

#endif
