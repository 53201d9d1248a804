/*
 * What the floor's C programs share: the clock the children stamp their lines with, and
 * the wait for every child's start (its byte on the ready pipe, its stamp in the log).
 */
#ifndef FLOOR_H
#define FLOOR_H

#include <stdio.h>
#include <time.h>
#include <unistd.h>

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

/* Waits for the start byte of each of `n` children on `ready` (whose write ends must all
 * be closed in the caller), then answers the last start's stamp in `log`; -1 when a child
 * died before its byte. */
static inline long long wait_for_starts(int ready, int n, const char *log)
{
    char byte;
    for (int i = 0; i < n; i++)
        if (read(ready, &byte, 1) != 1)
            return -1;
    return newest_stamp(log);
}

#endif
