/* The C floor: the least work a process exporter could do per scrape.
 *
 * For every numeric pid under /proc, the same kernel work procsnap asks for: read stat,
 * status and io (one pread each into a buffer; a trivial byte sum so the reads are not
 * optimized away), fstatat(PID/fd) for st_size (the fd count on Linux >= 6.2) and
 * prlimit(RLIMIT_NOFILE). No parsing, no output per process.
 *
 *   fresh : openat / pread / close for every file, prlimit, every iteration
 *   kept  : files stay open across iterations and are pread at offset 0; a read that
 *           fails (the process exited) closes them. Bounded by an fd budget taken from
 *           RLIMIT_NOFILE (soft raised to hard); past it, files are read fresh. prlimit
 *           for a pid when first seen, then every 16th iteration, as procsnap does.
 *
 * Usage:
 *   floor fresh|kept ITERATIONS   one JSON object with per-iteration times
 *   floor serve                   one iteration per stdin line ("fresh" / "kept"),
 *                                 one JSON line per iteration on stdout
 *
 * Built by bench/run.py with `cc -O2`; not a committed binary.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NFILES 3
static const char *const FILES[NFILES] = {"stat", "status", "io"};
#define NOFILE_EVERY 16

struct kept {
    int fd[NFILES];      /* -1: not open */
    uint32_t seen;       /* iteration that last saw this pid */
    int limit_known;     /* prlimit was read since the pid was (re)seen */
};

static char buf[65536];
static char dents[1 << 16];
static int procfd = -1;
static struct kept *table;     /* indexed by pid */
static long pid_max;
static long fd_budget;         /* how many more fds kept mode may hold */
static uint32_t generation;
static uint64_t byte_sum;      /* printed: keeps the reads observable */

static uint64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull
           + ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

static void sum_bytes(ssize_t n)
{
    uint64_t s = 0;
    for (ssize_t i = 0; i < n; i++)
        s += (unsigned char)buf[i];
    byte_sum += s;
}

static void read_fresh(const char *pidname, const char *file)
{
    char path[300];
    snprintf(path, sizeof path, "%s/%s", pidname, file);
    int fd = openat(procfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    if (n > 0)
        sum_bytes(n);
    close(fd);
}

static void close_kept(struct kept *k)
{
    for (int f = 0; f < NFILES; f++) {
        if (k->fd[f] >= 0) {
            close(k->fd[f]);
            k->fd[f] = -1;
            fd_budget++;
        }
    }
}

/* Returns 1 if the file was read through a kept fd. */
static int read_kept(struct kept *k, const char *pidname, int f)
{
    if (k->fd[f] < 0) {
        if (fd_budget <= 0) {
            read_fresh(pidname, FILES[f]);
            return 0;
        }
        char path[300];
        snprintf(path, sizeof path, "%s/%s", pidname, FILES[f]);
        k->fd[f] = openat(procfd, path, O_RDONLY | O_CLOEXEC);
        if (k->fd[f] < 0)
            return 0;
        fd_budget--;
    }
    ssize_t n = pread(k->fd[f], buf, sizeof buf, 0);
    if (n < 0) {              /* ESRCH: the process is gone (or the pid reused) */
        close_kept(k);
        read_fresh(pidname, FILES[f]);
        return 0;
    }
    sum_bytes(n);
    return 1;
}

struct result {
    long procs;
    long kept_reads;
};

static struct result iterate(int kept)
{
    struct result r = {0, 0};
    generation++;
    if (lseek(procfd, 0, SEEK_SET) < 0) {
        perror("lseek /proc");
        exit(1);
    }
    for (;;) {
        long nread = syscall(SYS_getdents64, procfd, dents, sizeof dents);
        if (nread <= 0)
            break;
        for (long off = 0; off < nread;) {
            struct dirent64 *d = (struct dirent64 *)(dents + off);
            off += d->d_reclen;
            const char *name = d->d_name;
            if (name[0] < '1' || name[0] > '9')
                continue;
            long pid = 0;
            const char *p = name;
            for (; *p >= '0' && *p <= '9'; p++)
                pid = pid * 10 + (*p - '0');
            if (*p)
                continue;
            r.procs++;
            struct rlimit lim;
            if (kept && pid < pid_max) {
                struct kept *k = &table[pid];
                k->seen = generation;
                for (int f = 0; f < NFILES; f++)
                    r.kept_reads += read_kept(k, name, f);
                if (!k->limit_known || (pid + generation) % NOFILE_EVERY == 0) {
                    if (prlimit((pid_t)pid, RLIMIT_NOFILE, NULL, &lim) == 0)
                        byte_sum += lim.rlim_cur;
                    k->limit_known = 1;
                }
            } else {
                for (int f = 0; f < NFILES; f++)
                    read_fresh(name, FILES[f]);
                if (prlimit((pid_t)pid, RLIMIT_NOFILE, NULL, &lim) == 0)
                    byte_sum += lim.rlim_cur;
            }
            char path[300];
            struct stat st;
            snprintf(path, sizeof path, "%s/fd", name);
            if (fstatat(procfd, path, &st, 0) == 0)
                byte_sum += (uint64_t)st.st_size;
        }
    }
    if (kept) {
        /* drop the files of pids that are gone */
        for (long pid = 1; pid < pid_max; pid++)
            if (table[pid].seen != generation && table[pid].seen != 0) {
                close_kept(&table[pid]);
                table[pid].seen = 0;
                table[pid].limit_known = 0;
            }
    }
    return r;
}

static void setup(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    fd_budget = (rl.rlim_cur == RLIM_INFINITY ? 1048576 : (long)rl.rlim_cur) - 64;
    pid_max = 4194304;
    FILE *fp = fopen("/proc/sys/kernel/pid_max", "r");
    if (fp) {
        if (fscanf(fp, "%ld", &pid_max) != 1)
            pid_max = 4194304;
        fclose(fp);
    }
    pid_max += 1;
    table = calloc((size_t)pid_max, sizeof *table);
    if (!table) {
        perror("calloc");
        exit(1);
    }
    for (long i = 0; i < pid_max; i++)
        for (int f = 0; f < NFILES; f++)
            table[i].fd[f] = -1;
    procfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (procfd < 0) {
        perror("open /proc");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: floor fresh|kept ITERATIONS | floor serve\n");
        return 2;
    }
    setup();
    if (strcmp(argv[1], "serve") == 0) {
        char line[64];
        setvbuf(stdout, NULL, _IOLBF, 0);
        while (fgets(line, sizeof line, stdin)) {
            int kept = strncmp(line, "kept", 4) == 0;
            if (!kept && strncmp(line, "fresh", 5) != 0)
                continue;
            uint64_t c0 = cpu_ns(), t0 = now_ns(CLOCK_MONOTONIC);
            struct result r = iterate(kept);
            uint64_t t1 = now_ns(CLOCK_MONOTONIC), c1 = cpu_ns();
            printf("{\"mode\": \"%s\", \"wall_ns\": %llu, \"cpu_ns\": %llu, \"procs\": %ld, "
                   "\"kept_reads\": %ld, \"sum\": %llu}\n",
                   kept ? "kept" : "fresh", (unsigned long long)(t1 - t0),
                   (unsigned long long)(c1 - c0), r.procs, r.kept_reads,
                   (unsigned long long)byte_sum);
        }
        return 0;
    }
    int kept = strcmp(argv[1], "kept") == 0;
    if (!kept && strcmp(argv[1], "fresh") != 0) {
        fprintf(stderr, "floor: unknown mode %s\n", argv[1]);
        return 2;
    }
    long iters = argc > 2 ? atol(argv[2]) : 5;
    if (iters < 1 || iters > 100000)
        iters = 5;
    uint64_t *wall = calloc((size_t)iters, sizeof *wall), *cpu = calloc((size_t)iters, sizeof *cpu);
    long *procs = calloc((size_t)iters, sizeof *procs);
    for (long i = 0; i < iters; i++) {
        uint64_t c0 = cpu_ns(), t0 = now_ns(CLOCK_MONOTONIC);
        struct result r = iterate(kept);
        wall[i] = now_ns(CLOCK_MONOTONIC) - t0;
        cpu[i] = cpu_ns() - c0;
        procs[i] = r.procs;
    }
    printf("{\"mode\": \"%s\", \"iterations_ns\": [", kept ? "kept" : "fresh");
    for (long i = 0; i < iters; i++)
        printf("%s%llu", i ? ", " : "", (unsigned long long)wall[i]);
    printf("], \"cpu_ns\": [");
    for (long i = 0; i < iters; i++)
        printf("%s%llu", i ? ", " : "", (unsigned long long)cpu[i]);
    printf("], \"procs\": [");
    for (long i = 0; i < iters; i++)
        printf("%s%ld", i ? ", " : "", procs[i]);
    printf("], \"sum\": %llu}\n", (unsigned long long)byte_sum);
    return 0;
}
