/*
 * The fan-out floor with warden's promises kept: the same loop as fanout.c, plus the
 * kernel work that warden's robustness promises need for every service, done the way
 * warden does it and nothing else (no actors, no events, no log lines, no API):
 *
 *   - a cgroup per service, made ahead of the spawns by a second thread (warden's
 *     `warden-cgroups`), opened O_PATH relative to the instance's cgroup at each spawn;
 *   - an output pipe per service, grown to 1 MiB and watched by an epoll (warden's log
 *     reader, here on the records thread);
 *   - clone3(CLONE_VM | CLONE_VFORK | CLONE_FILES | CLONE_PIDFD | CLONE_INTO_CGROUP |
 *     CLONE_CLEAR_SIGHAND): the child is born in its cgroup, shares the descriptor table
 *     until its first step, `close_range(SLOT + 1, ~0, CLOSE_RANGE_UNSHARE)`, which
 *     copies only the low descriptors (the pipe's end waits in a reserved low slot, as
 *     in warden), then takes its own process group and the pipe on 1 and 2; its pidfd is
 *     watched by an epoll (warden's exit watch);
 *   - a process record per child written by a third thread (warden's `warden-records`):
 *     /proc/PID/stat and /proc/PID/status read, one new file created and written.
 *
 * Same definition of time as fanout.c: the last start stamp - the stamp before the first
 * spawn. The driver runs it beside fanout.c to say how much of warden's fan-out the
 * promises themselves cost on this machine.
 *
 *   fanout_kept CHILD N LOG WORKDIR   -> {"all_started_s": S, "n": N, "cgroups": 0|1}
 *
 * WORKDIR holds the records. Cgroups are used when the process's own cgroup v2 folder
 * is writable (as warden's `cgroup = "auto"`); otherwise the run says "cgroups": 0.
 * FANOUT_KEPT_SKIP=cgroup,records,pipe (any of them) leaves those parts out, to see what
 * each one costs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "floor.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#define CLONE_CLEAR_SIGHAND_ 0x100000000ULL
#define CLONE_INTO_CGROUP_ 0x200000000ULL

struct clone_args_v2 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls,
        set_tid, set_tid_size, cgroup;
};

/* The reserved low descriptor the next child's output end is placed in. */
#define SLOT 10
#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

/* clone3 with the child on its own stack, running `fn(arg)` there and never returning
 * (x86-64: the kernel starts the child with rsp at the top of the given stack). */
static long clone3_run(struct clone_args_v2 *ca, void (*fn)(void *), void *arg)
{
    long ret;
    register void (*r8)(void *) __asm__("r8") = fn;
    register void *r9 __asm__("r9") = arg;
    __asm__ volatile("syscall\n\t"
                     "test %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "mov %%r9, %%rdi\n\t"
                     "call *%%r8\n\t"
                     "mov $60, %%eax\n\t"
                     "mov $127, %%edi\n\t"
                     "syscall\n\t"
                     "1:\n\t"
                     : "=a"(ret)
                     : "a"((long)SYS_clone3), "D"(ca), "S"(sizeof *ca), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

struct start {
    const char *program;
    char **args, **envp;
};

/* The child, on its own stack, sharing memory with the waiting thread until its exec:
 * raw calls only, as after vfork(). */
static void child_main(void *arg)
{
    const struct start *s = arg;
    syscall(SYS_close_range, SLOT + 1, ~0U, CLOSE_RANGE_UNSHARE);
    syscall(SYS_setpgid, 0, 0);
    syscall(SYS_dup2, SLOT, 1);
    syscall(SYS_dup2, SLOT, 2);
    syscall(SYS_execve, s->program, s->args, s->envp);
}

static int n;
static char cgroup_base[4096];
static int cgroup_base_fd = -1;
static int cgroups_made; /* how many cgroups the cgroups thread has made (atomic) */

static void *make_cgroups(void *unused)
{
    (void)unused;
    char name[32];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "s%05d", i);
        mkdirat(cgroup_base_fd, name, 0755);
        __atomic_store_n(&cgroups_made, i + 1, __ATOMIC_RELEASE);
    }
    return NULL;
}

/* The records queue: pids written by the spawning loop, read by the records thread. */
static int queue[2];
static const char *workdir;
static int watch; /* epoll of pipes and pidfds */

static int read_file(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, buf, size - 1);
    close(fd);
    if (got < 0)
        return -1;
    buf[got] = 0;
    return 0;
}

static void *write_records(void *unused)
{
    (void)unused;
    int pid;
    char path[256], stat[1024], status[4096], record[512];
    while (read(queue[0], &pid, sizeof pid) == (ssize_t)sizeof pid) {
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        if (read_file(path, stat, sizeof stat) != 0)
            continue;
        snprintf(path, sizeof path, "/proc/%d/status", pid);
        if (read_file(path, status, sizeof status) != 0)
            continue;
        /* start time: field 22; pgid: field 5 (after the comm's closing paren) */
        char *p = strrchr(stat, ')');
        unsigned long long start = 0;
        int pgid = 0;
        for (int field = 2; p && *p; p++) {
            if (*p == ' ') {
                field++;
                if (field == 5)
                    pgid = atoi(p + 1);
                if (field == 22) {
                    start = strtoull(p + 1, NULL, 10);
                    break;
                }
            }
        }
        char *uid = strstr(status, "\nUid:");
        int len = snprintf(record, sizeof record,
                           "{\"path\":\"/s%d\",\"pid\":%d,\"pgid\":%d,\"start_time\":%llu,"
                           "\"uid\":%d}",
                           pid, pid, pgid, start, uid ? atoi(uid + 5) : -1);
        snprintf(path, sizeof path, "%s/s@%d.json", workdir, pid);
        unlink(path);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0) {
            if (write(fd, record, (size_t)len) != len)
                perror("record");
            close(fd);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: fanout_kept CHILD N LOG WORKDIR\n");
        return 2;
    }
    const char *child = argv[1];
    n = atoi(argv[2]);
    /* two descriptors kept per child (the pipe's read end, the pidfd), as warden keeps:
     * the soft limit is raised to the hard one, as warden raises its own */
    struct rlimit files;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        setrlimit(RLIMIT_NOFILE, &files);
    }
    const char *log = argv[3];
    workdir = argv[4];
    unlink(log);

    /* the instance's cgroup, below this process's own (as warden-<instance>) */
    char own[4096] = "", line[4096];
    FILE *f = fopen("/proc/self/cgroup", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "0::", 3) == 0) {
            line[strcspn(line, "\n")] = 0;
            snprintf(own, sizeof own, "%s", line + 3);
        }
    if (f)
        fclose(f);
    const char *skip = getenv("FANOUT_KEPT_SKIP");
    skip = skip ? skip : "";
    int records = strstr(skip, "records") == NULL, pipes = strstr(skip, "pipe") == NULL;
    const char *mounts[] = { "/sys/fs/cgroup/unified", "/sys/fs/cgroup" };
    for (int m = 0; m < 2 && cgroup_base_fd < 0 && !strstr(skip, "cgroup"); m++) {
        char probe[4096];
        snprintf(probe, sizeof probe, "%s/cgroup.controllers", mounts[m]);
        if (access(probe, F_OK) != 0)
            continue;
        snprintf(cgroup_base, sizeof cgroup_base, "%s%s/floor-%d", mounts[m],
                 strcmp(own, "/") == 0 ? "" : own, getpid());
        if (mkdir(cgroup_base, 0755) == 0)
            cgroup_base_fd = open(cgroup_base, O_PATH | O_DIRECTORY | O_CLOEXEC);
    }

    int ready[2];
    if (pipe(ready) != 0 || pipe2(queue, O_CLOEXEC) != 0) {
        perror("pipe");
        return 1;
    }
    fcntl(ready[0], F_SETFD, FD_CLOEXEC);
    if (ready[1] >= SLOT) {
        fprintf(stderr, "fanout_kept: descriptor %d, at or above the slot, is open\n", ready[1]);
        return 1;
    }
    /* the slot is held from the start, so that no pipe is ever given its number */
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0 || (null != SLOT && dup3(null, SLOT, O_CLOEXEC) != SLOT)) {
        perror("reserving the slot");
        return 1;
    }
    if (null != SLOT)
        close(null);
    watch = epoll_create1(EPOLL_CLOEXEC);
    char notify[32];
    snprintf(notify, sizeof notify, "BENCH_NOTIFY_FD=%d", ready[1]);
    char *envp[] = { notify, NULL };
    char *args[] = { (char *)child, "sleeper", (char *)log, "fan", NULL };
    struct start start = { child, args, envp };
    size_t stack_size = 64 * 1024;
    char *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        return 1;
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    int *pidfds = calloc((size_t)n, sizeof *pidfds);

    long long t0 = mono_ns();
    pthread_t cgroups_thread, records_thread;
    if (cgroup_base_fd >= 0)
        pthread_create(&cgroups_thread, NULL, make_cgroups, NULL);
    pthread_create(&records_thread, NULL, write_records, NULL);
    for (int i = 0; i < n; i++) {
        int out[2] = { -1, -1 };
        if (pipes) {
            if (pipe2(out, O_CLOEXEC) != 0) {
                perror("pipe2");
                return 1;
            }
            fcntl(out[0], F_SETPIPE_SZ, 1 << 20);
            if (dup3(out[1], SLOT, O_CLOEXEC) != SLOT) {
                perror("dup3");
                return 1;
            }
            struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
            epoll_ctl(watch, EPOLL_CTL_ADD, out[0], &ev);
        } else if (dup3(2, SLOT, O_CLOEXEC) != SLOT) {
            perror("dup3");
            return 1;
        }
        int cg = -1;
        if (cgroup_base_fd >= 0) {
            char name[32];
            snprintf(name, sizeof name, "s%05d", i);
            if (__atomic_load_n(&cgroups_made, __ATOMIC_ACQUIRE) <= i)
                mkdirat(cgroup_base_fd, name, 0755); /* not made yet: make it here */
            cg = openat(cgroup_base_fd, name, O_PATH | O_DIRECTORY | O_CLOEXEC);
        }
        int pidfd = -1;
        struct clone_args_v2 ca = {
            .flags = CLONE_VM | CLONE_VFORK | CLONE_FILES | CLONE_PIDFD | CLONE_CLEAR_SIGHAND_ |
                     (cg >= 0 ? CLONE_INTO_CGROUP_ : 0),
            .pidfd = (uint64_t)(uintptr_t)&pidfd,
            .exit_signal = SIGCHLD,
            .stack = (uint64_t)(uintptr_t)stack,
            .stack_size = stack_size,
            .cgroup = (uint64_t)(cg >= 0 ? cg : 0),
        };
        long pid = clone3_run(&ca, child_main, &start);
        if (pid < 0) {
            perror("clone3");
            return 1;
        }
        if (cg >= 0)
            close(cg);
        if (out[1] >= 0)
            close(out[1]);
        pids[i] = (pid_t)pid;
        pidfds[i] = pidfd;
        struct epoll_event exit_ev = { .events = EPOLLIN, .data.u32 = (uint32_t)(n + i) };
        epoll_ctl(watch, EPOLL_CTL_ADD, pidfd, &exit_ev);
        int p = (int)pid;
        if (records && write(queue[1], &p, sizeof p) != (ssize_t)sizeof p) {
            perror("records queue");
            return 1;
        }
    }
    close(ready[1]);
    long long last = wait_for_starts(ready[0], n, log);
    if (last < 0) {
        fprintf(stderr, "fanout_kept: a child died before its start line\n");
        return 1;
    }
    close(queue[1]);
    pthread_join(records_thread, NULL);
    if (cgroup_base_fd >= 0)
        pthread_join(cgroups_thread, NULL);
    for (int i = 0; i < n; i++)
        syscall(SYS_pidfd_send_signal, pidfds[i], SIGKILL, NULL, 0);
    for (int i = 0; i < n; i++)
        waitpid(pids[i], NULL, 0);
    if (cgroup_base_fd >= 0) {
        char name[32];
        for (int i = 0; i < n; i++) {
            snprintf(name, sizeof name, "s%05d", i);
            unlinkat(cgroup_base_fd, name, AT_REMOVEDIR);
        }
        rmdir(cgroup_base);
    }
    printf("{\"all_started_s\": %.4f, \"n\": %d, \"cgroups\": %d}\n", (double)(last - t0) / 1e9,
           n, cgroup_base_fd >= 0);
    return 0;
}
