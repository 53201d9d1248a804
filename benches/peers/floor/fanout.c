/*
 * The floor of fan-out on this machine: posix_spawn N children (each in its own process
 * group) from one loop, then block on the shared readiness pipe until every one has written
 * its start line. Time = the last start stamp - the stamp before the first spawn: the same
 * definition the driver uses for runit and warden (launch -> last start line).
 *
 *   fanout CHILD N LOG   -> one JSON line {"all_started_s": S, "n": N}
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

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: fanout CHILD N LOG\n");
        return 2;
    }
    const char *child = argv[1];
    int n = atoi(argv[2]);
    const char *log = argv[3];
    unlink(log);
    int ready[2];
    if (pipe(ready) != 0)
        return 1;
    fcntl(ready[0], F_SETFD, FD_CLOEXEC);
    char notify[32];
    snprintf(notify, sizeof notify, "BENCH_NOTIFY_FD=%d", ready[1]);
    char *envp[] = { notify, NULL };
    char *args[] = { (char *)child, "sleeper", (char *)log, "fan", NULL };
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    pid_t *pids = calloc((size_t)n, sizeof *pids);

    long long t0 = mono_ns();
    for (int i = 0; i < n; i++) {
        if (posix_spawn(&pids[i], child, NULL, &attr, args, envp) != 0) {
            perror("posix_spawn");
            return 1;
        }
    }
    close(ready[1]);
    long long last = wait_for_starts(ready[0], n, log);
    if (last < 0)
        return 1;
    for (int i = 0; i < n; i++)
        kill(pids[i], SIGKILL);
    for (int i = 0; i < n; i++)
        waitpid(pids[i], NULL, 0);
    printf("{\"all_started_s\": %.4f, \"n\": %d}\n", (double)(last - t0) / 1e9, n);
    return 0;
}
