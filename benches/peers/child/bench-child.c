/*
 * bench-child: the workload process that the floor, runit and warden all run in
 * benches/peers (and the chaos benchmark). Static, no dynamic loader, so its own exec cost is
 * as small as it gets and the same for every supervisor.
 *
 *   bench-child sleeper LOG TAG           start line, then pause() until killed
 *   bench-child crasher LOG TAG MIN_MS [MAX_MS]
 *                                         start line, live a random MIN..MAX ms, write an
 *                                         exit line, exit 1
 *
 * Lines are appended to LOG with one O_APPEND write each (so the lines of a thousand
 * children never interleave):
 *
 *   TAG PID MONO_NS start
 *   TAG PID MONO_NS exit
 *
 * MONO_NS is CLOCK_MONOTONIC in ns, the clock of the driver (time.monotonic_ns()).
 * Right after the start line, "\n" goes to the fd named by $BENCH_NOTIFY_FD if set (the
 * floor programs block on it).
 *
 * runit and s6 run a fixed ./run (runit with no argument, s6 with the service's name):
 * when argv[0]'s basename is "run", the arguments are read from ./child.args (one line,
 * split on blanks), so ./run can be a symlink to this binary and no shell sits in between.
 *
 * Build: gcc -O2 -static -o bench-child bench-child.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void fail(const char *why)
{
    dprintf(2, "bench-child: %s\n", why);
    _exit(111);
}

static long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void log_line(const char *log, const char *tag, const char *what)
{
    char line[256];
    int n = snprintf(line, sizeof line, "%s %d %lld %s\n", tag, (int)getpid(), mono_ns(), what);
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        fail("cannot open the log");
    if (write(fd, line, (size_t)n) != n)
        fail("short write to the log");
    close(fd);
}

/* Splits ./child.args into argv-like words (run mode, for runit). */
static int args_from_file(char **words, int max)
{
    static char buf[4096];
    int fd = open("child.args", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fail("run mode: no ./child.args");
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        fail("run mode: empty ./child.args");
    buf[n] = 0;
    int count = 0;
    char *save = NULL;
    for (char *w = strtok_r(buf, " \t\n", &save); w && count < max; w = strtok_r(NULL, " \t\n", &save))
        words[count++] = w;
    return count;
}

int main(int argc, char **argv)
{
    char *words[8];
    int count;
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    /* runit passes no argument, s6-supervise the service's name */
    if (strcmp(base, "run") == 0 && argc <= 2) {
        count = args_from_file(words, 8);
    } else {
        count = argc - 1 < 8 ? argc - 1 : 8;
        memcpy(words, argv + 1, sizeof(char *) * (size_t)count);
    }
    if (count < 3)
        fail("usage: bench-child sleeper LOG TAG | crasher LOG TAG MIN_MS [MAX_MS]");
    const char *mode = words[0], *log = words[1], *tag = words[2];
    int crasher = strcmp(mode, "crasher") == 0;
    if (!crasher && strcmp(mode, "sleeper") != 0)
        fail("mode is sleeper or crasher");

    log_line(log, tag, "start");
    const char *notify = getenv("BENCH_NOTIFY_FD");
    if (notify && *notify) {
        int fd = atoi(notify);
        if (fd > 2) {
            (void)!write(fd, "\n", 1);
            close(fd);
        }
    }
    if (!crasher) {
        for (;;)
            pause();
    }
    long lo = count > 3 ? atol(words[3]) : 0;
    long hi = count > 4 ? atol(words[4]) : lo;
    if (hi < lo)
        hi = lo;
    srandom((unsigned)(getpid() ^ mono_ns()));
    long ms = lo + (hi > lo ? random() % (hi - lo + 1) : 0);
    struct timespec d = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&d, &d) < 0 && errno == EINTR)
        ;
    log_line(log, tag, "exit");
    _exit(1);
}
