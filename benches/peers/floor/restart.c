/*
 * The floor of restart latency on this machine: the smallest possible supervisor of one
 * child. Loop: stamp, SIGKILL the child, reap it, posix_spawn the replacement (own process
 * group, as warden does), block on the readiness pipe until the replacement has written its
 * start line. Latency = the replacement's own start stamp - the kill stamp: the same
 * definition the driver uses for runit and warden.
 *
 *   restart CHILD KILLS LOG   -> one JSON line {"samples_ms": [...]}
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "floor.h"

/* The stamp of the newest start line of LOG (read from *offset on). */
static long long last_stamp(int fd, off_t *offset)
{
    char buf[8192];
    ssize_t n = pread(fd, buf, sizeof buf - 1, *offset);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    *offset += n;
    long long stamp = -1;
    for (char *line = buf; line && *line; ) {
        char tag[32], what[16];
        int pid;
        long long t;
        if (sscanf(line, "%31s %d %lld %15s", tag, &pid, &t, what) == 4 && strcmp(what, "start") == 0)
            stamp = t;
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return stamp;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: restart CHILD KILLS LOG\n");
        return 2;
    }
    const char *child = argv[1];
    int kills = atoi(argv[2]);
    const char *log = argv[3];
    unlink(log);
    int ready[2];
    if (pipe(ready) != 0)
        return 1;
    fcntl(ready[0], F_SETFD, FD_CLOEXEC);
    char notify[32];
    snprintf(notify, sizeof notify, "BENCH_NOTIFY_FD=%d", ready[1]);
    char *envp[] = { notify, NULL };
    char *args[] = { (char *)child, "sleeper", (char *)log, "floor", NULL };
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);

    pid_t pid;
    char byte;
    if (posix_spawn(&pid, child, NULL, &attr, args, envp) != 0) {
        perror("posix_spawn");
        return 1;
    }
    if (read(ready[0], &byte, 1) != 1)
        return 1;
    int logfd = open(log, O_RDONLY | O_CLOEXEC);
    off_t offset = 0;
    last_stamp(logfd, &offset);
    double *samples = calloc((size_t)kills, sizeof *samples);
    int got = 0;
    for (int i = 0; i < kills; i++) {
        usleep(20000); /* a quiet moment between kills, as the driver has */
        long long killed_at = mono_ns();
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        if (posix_spawn(&pid, child, NULL, &attr, args, envp) != 0) {
            perror("posix_spawn");
            return 1;
        }
        if (read(ready[0], &byte, 1) != 1)
            return 1;
        long long started_at = last_stamp(logfd, &offset);
        if (started_at > 0)
            samples[got++] = (double)(started_at - killed_at) / 1e6;
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    printf("{\"samples_ms\": [");
    for (int i = 0; i < got; i++)
        printf("%s%.4f", i ? ", " : "", samples[i]);
    printf("]}\n");
    return 0;
}
