/* The walk: one getdents64 pass over the procfs root, the per-pid reads, and the per-pid
 * cache (kept fds, identity of the static facts).
 *
 * Runs with the GIL released: system calls and parsing into C memory only, no Python
 * API. Errors are counted per errno; exporter/procfs.py is the oracle for which ones.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "collector.h"

#define DENTS_SIZE 32768
#define PS_KEEP_RESERVE 512 /* fds left to the rest of the process */

enum { K_STAT, K_STATUS, K_IO };

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Processes whose files are kept open, over all walkers of this process: they share one
 * RLIMIT_NOFILE, so they share one budget. */
static atomic_size_t walk_kept_processes;

/* ---- small helpers ----------------------------------------------------------------- */

static int walk_is_gone_errno(int err)
{
    return err == ENOENT || err == ESRCH;
}

static void walk_tally(ps_walker *w, int err)
{
    if (err == PS_MALFORMED) {
        w->malformed++;
        return;
    }
    if (err < 0 || err > PS_ERRNO_MAX)
        err = 0;
    w->errors[err]++;
}

/* An errno (or PS_MALFORMED) of the process being read. It waits in w->pending until
 * the process is kept or dropped: one that vanishes half-way is dropped quietly, with
 * the errors it caused. */
static void walk_count(ps_walker *w, int err)
{
    if (w->npending < PS_PENDING_MAX)
        w->pending[w->npending++] = err;
    else
        walk_tally(w, err);
}

static void walk_commit(ps_walker *w)
{
    int i;

    for (i = 0; i < w->npending; i++)
        walk_tally(w, w->pending[i]);
    w->npending = 0;
}

/* "PID/name" into dst (at least 16 + strlen(name) bytes). */
static void walk_path(char *dst, int pid, const char *name)
{
    char digits[12];
    int n = 0;

    do {
        digits[n++] = (char)('0' + pid % 10);
        pid /= 10;
    } while (pid > 0);
    while (n > 0)
        *dst++ = digits[--n];
    *dst++ = '/';
    strcpy(dst, name);
}

static ssize_t walk_pread(int fd, char *buf, size_t cap)
{
    ssize_t n;

    do
        n = pread(fd, buf, cap, 0);
    while (n < 0 && errno == EINTR);
    return n;
}

static int walk_openat(int dirfd, const char *path, int flags)
{
    int fd;

    do
        fd = openat(dirfd, path, flags | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    return fd;
}

static void walk_close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Make room for one more element in a growing array (doubling from first). 0 or -1. */
static int walk_grow(void **array, size_t len, size_t *cap, size_t first, size_t size)
{
    size_t n;
    void *grown;

    if (len < *cap)
        return 0;
    n = *cap ? 2 * *cap : first;
    if ((grown = realloc(*array, n * size)) == NULL)
        return -1;
    *array = grown;
    *cap = n;
    return 0;
}

/* Append n bytes to the text arena. 0 or -1 (ENOMEM). */
static int walk_arena_put(ps_walker *w, const char *p, size_t n, ps_span *out)
{
    if (n > w->arena_cap - w->arena_len) {
        size_t cap = w->arena_cap ? w->arena_cap : 65536;
        char *arena;
        while (cap - w->arena_len < n)
            cap *= 2;
        arena = realloc(w->arena, cap);
        if (arena == NULL)
            return -1;
        w->arena = arena;
        w->arena_cap = cap;
    }
    memcpy(w->arena + w->arena_len, p, n);
    out->at = w->arena_len;
    out->len = n;
    w->arena_len += n;
    return 0;
}

/* Field f of the last record := x (parsed from buf). 0 or -1 (ENOMEM). */
static int walk_set(ps_walker *w, ps_record *r, int f, const ps_num *x, const char *buf)
{
    r->num[f] = x->v;
    r->has |= 1u << f;
    if (x->big) {
        ps_big *b;
        if (walk_grow((void **)&w->bigs, w->nbigs, &w->cap_bigs, 16, sizeof(*w->bigs)) < 0)
            return -1;
        b = &w->bigs[w->nbigs];
        if (walk_arena_put(w, buf + x->off, x->len, &b->digits) < 0)
            return -1;
        b->rec = w->nrecords - 1;
        b->field = f;
        w->nbigs++;
        r->bigmask |= 1u << f;
    }
    return 0;
}

/* ---- the cache --------------------------------------------------------------------- */

static size_t walk_hash(ps_walker *w, int pid)
{
    return ((uint32_t)pid * 2654435761u) & (w->nbuckets - 1);
}

static int walk_cache_grow(ps_walker *w)
{
    size_t nb = w->nbuckets ? 2 * w->nbuckets : 1024, i;
    ps_entry **old = w->buckets, **buckets = calloc(nb, sizeof(*buckets));
    size_t oldn = w->nbuckets;

    if (buckets == NULL)
        return -1;
    w->buckets = buckets;
    w->nbuckets = nb;
    for (i = 0; i < oldn; i++) {
        ps_entry *e = old[i], *next;
        for (; e != NULL; e = next) {
            size_t h = walk_hash(w, e->pid);
            next = e->next;
            e->next = buckets[h];
            buckets[h] = e;
        }
    }
    free(old);
    return 0;
}

/* The entry of pid, created when new. NULL on ENOMEM. */
static ps_entry *walk_cache_get(ps_walker *w, int pid)
{
    ps_entry *e;
    size_t h;

    if (w->nentries >= w->nbuckets && walk_cache_grow(w) < 0)
        return NULL;
    h = walk_hash(w, pid);
    for (e = w->buckets[h]; e != NULL; e = e->next)
        if (e->pid == pid)
            break;
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e == NULL)
            return NULL;
        e->pid = pid;
        e->fd[K_STAT] = e->fd[K_STATUS] = e->fd[K_IO] = -1;
        e->next = w->buckets[h];
        w->buckets[h] = e;
        w->nentries++;
    }
    if (!e->keeps && w->is_procfs && atomic_load(&walk_kept_processes) < w->budget) {
        e->keeps = 1;
        atomic_fetch_add(&walk_kept_processes, 1);
    }
    return e;
}

static void walk_entry_close(ps_walker *w, ps_entry *e)
{
    walk_close_fd(&e->fd[K_STAT]);
    walk_close_fd(&e->fd[K_STATUS]);
    walk_close_fd(&e->fd[K_IO]);
    if (e->keeps) {
        e->keeps = 0;
        atomic_fetch_sub(&walk_kept_processes, 1);
    }
}

void walk_entry_free(ps_entry *e)
{
    free(e->comm);
    free(e->start_big);
    free(e);
}

/* Unlink the entries not recorded by the walk of generation gen (all when all is set)
 * onto w->evicted, closing their fds. Their Python objects are the caller's. */
static void walk_evict(ps_walker *w, int all)
{
    size_t i;

    for (i = 0; i < w->nbuckets; i++) {
        ps_entry **pp = &w->buckets[i];
        while (*pp != NULL) {
            ps_entry *e = *pp;
            if (all || e->gen != w->gen) {
                *pp = e->next;
                walk_entry_close(w, e);
                e->next = w->evicted;
                w->evicted = e;
                w->nentries--;
            } else {
                pp = &e->next;
            }
        }
    }
}

/* ---- reads of one process ------------------------------------------------------------ */

/* One pread of at most cap bytes at offset 0 of PID/name, through the kept fd of slot
 * (slot >= 0, e != NULL) when there is one. A failing kept fd (the process exited, the
 * pid may be reused) is closed and the file opened afresh, as Python would.
 * Bytes read, or -1 with *err. */
static ssize_t walk_read(ps_walker *w, ps_entry *e, int slot, int pid, const char *name,
                         char *buf, size_t cap, int *err)
{
    char path[48];
    ssize_t n;
    int fd;

    if (slot >= 0 && e->fd[slot] >= 0) {
        n = walk_pread(e->fd[slot], buf, cap);
        if (n >= 0)
            return n;
        walk_close_fd(&e->fd[slot]);
    }
    walk_path(path, pid, name);
    fd = walk_openat(w->rootfd, path, O_RDONLY);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    n = walk_pread(fd, buf, cap);
    if (n < 0) {
        *err = errno;
        close(fd);
        return -1;
    }
    if (slot >= 0 && e->keeps)
        e->fd[slot] = fd;
    else
        close(fd);
    return n;
}

/* Is the process gone? (PID/stat no longer exists) */
static int walk_gone(ps_walker *w, int pid)
{
    char path[48];

    walk_path(path, pid, "stat");
    return faccessat(w->rootfd, path, F_OK, 0) != 0;
}

/* A secondary file failed with err: 1 when the process vanished (drop it quietly),
 * else the errno is counted and 0 returned (the field is None). */
static int walk_failed(ps_walker *w, int pid, int err)
{
    if (walk_is_gone_errno(err) && walk_gone(w, pid))
        return 1;
    walk_count(w, err);
    return 0;
}

/* Calls each(w, name, arg) for every entry of the open directory fd, from its offset, in
 * getdents64 order; each returns 0, or -1 with errno set to stop. 0 or -1 with *err. */
static int walk_each_entry(ps_walker *w, int fd, int (*each)(ps_walker *, const char *, void *),
                           void *arg, int *err)
{
    for (;;) {
        long n = syscall(SYS_getdents64, fd, w->dents, DENTS_SIZE);
        long off;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            *err = errno;
            return -1;
        }
        if (n == 0)
            return 0;
        for (off = 0; off < n;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(w->dents + off);
            off += d->d_reclen;
            if (each(w, d->d_name, arg) < 0) {
                *err = errno;
                return -1;
            }
        }
    }
}

static int walk_count_entry(ps_walker *w, const char *s, void *count)
{
    if (!(s[0] == '.' && (s[1] == '\0' || (s[1] == '.' && s[2] == '\0'))))
        ++*(uint64_t *)count;
    return 0;
}

/* Entries of an open directory without "." and "..", as len(os.listdir(fd)). */
static int walk_dir_count(ps_walker *w, int fd, uint64_t *count, int *err)
{
    *count = 0;
    return walk_each_entry(w, fd, walk_count_entry, count, err);
}

/* Open fds: the size of a procfs fd dir (Linux >= 6.2), else the number of entries. */
static int walk_fd_count(ps_walker *w, int pid, uint64_t *count, int *err)
{
    char path[48];
    struct stat st;
    int fd, rc;

    walk_path(path, pid, "fd");
    /* Linux >= 6.2 gives the count as the size of a procfs fd directory, to whoever may
     * see the process (as `ls -ld` shows it): one fstatat, no fd kept. */
    if (w->is_procfs) {
        if (fstatat(w->rootfd, path, &st, 0) < 0) {
            *err = errno;
            return -1;
        }
        if (st.st_size > 0) {
            *count = (uint64_t)st.st_size;
            return 0;
        }
    }
    fd = walk_openat(w->rootfd, path, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    rc = walk_dir_count(w, fd, count, err);
    close(fd);
    return rc;
}

/* The soft RLIMIT_NOFILE: prlimit(2) in our own procfs, else PID/limits.
 * 0 (field set unless unlimited), -1 with *err, -2 malformed, -3 ENOMEM. */
static int walk_max_fds(ps_walker *w, ps_entry *e, ps_record *r, int pid, int fresh, int *err)
{
    ps_num x;
    ssize_t n;
    int unlimited;

    if (w->own_procfs) {
        struct rlimit old;
        /* A limit seldom changes: prlimit a known identity only every PS_NOFILE_EVERY
         * walks (staggered by pid), saving a syscall per process per scrape. */
        if (!fresh && e->nofile_known && ((unsigned)pid + w->gen) % PS_NOFILE_EVERY != 0) {
            old.rlim_cur = e->nofile;
        } else if (prlimit(pid, RLIMIT_NOFILE, NULL, &old) == 0) {
            e->nofile = old.rlim_cur;
            e->nofile_known = 1;
        } else {
            e->nofile_known = 0;
        }
        if (e->nofile_known) {
            if (old.rlim_cur != RLIM_INFINITY) {
                r->num[F_MAX_FDS] = old.rlim_cur;
                r->has |= 1u << F_MAX_FDS;
                r->max_from_prlimit = 1;
            }
            return 0;
        }
        if (errno != EPERM && errno != EACCES) { /* EPERM: another user's; read limits */
            *err = errno;
            return -1;
        }
    }
    n = walk_read(w, NULL, -1, pid, "limits", w->buf, PS_LIMITS_CAP, err);
    if (n < 0)
        return -1;
    if (parse_limits_nofile(w->buf, (size_t)n, &x, &unlimited) < 0)
        return -2;
    if (!unlimited && walk_set(w, r, F_MAX_FDS, &x, w->buf) < 0)
        return -3;
    return 0;
}

/* The digits of a big number without leading zeros (compared as Python ints are). */
static const char *walk_big_digits(const ps_num *x, const char *buf, size_t *len)
{
    const char *p = buf + x->off;

    *len = x->len;
    while (*len > 1 && *p == '0') {
        p++;
        (*len)--;
    }
    return p;
}

/* Does the entry's identity (starttime, comm) still hold for this stat? */
static int walk_same_identity(const ps_entry *e, const ps_stat *st, const char *buf)
{
    const ps_num *s = &st->starttime;
    const char *digits;
    size_t len;

    if (e->comm == NULL || e->start != s->v || e->comm_len != st->comm_len ||
        memcmp(e->comm, buf + st->comm_off, st->comm_len) != 0)
        return 0;
    if (!s->big && e->start_big == NULL)
        return 1;
    if (!s->big || e->start_big == NULL)
        return 0;
    digits = walk_big_digits(s, buf, &len);
    return strlen(e->start_big) == len && memcmp(e->start_big, digits, len) == 0;
}

/* Remember (starttime, comm) as the identity of the static facts read now. */
static int walk_set_identity(ps_entry *e, const ps_stat *st, const char *buf)
{
    const ps_num *s = &st->starttime;
    char *comm;

    if (e->comm == NULL || e->comm_len != st->comm_len ||
        memcmp(e->comm, buf + st->comm_off, st->comm_len) != 0) {
        comm = malloc(st->comm_len ? st->comm_len : 1);
        if (comm == NULL)
            return -1;
        memcpy(comm, buf + st->comm_off, st->comm_len);
        free(e->comm);
        e->comm = comm;
        e->comm_len = st->comm_len;
        e->comm_stale = 1;
    }
    free(e->start_big);
    e->start_big = NULL;
    if (s->big) {
        size_t len;
        const char *digits = walk_big_digits(s, buf, &len);
        e->start_big = strndup(digits, len);
        if (e->start_big == NULL)
            return -1;
    }
    e->start = s->v;
    e->facts_ok = 0;
    return 0;
}

static int walk_set_stat(ps_walker *w, ps_record *r, const ps_stat *st, const char *b)
{
    if (walk_set(w, r, F_PPID, &st->ppid, b) < 0 || walk_set(w, r, F_TTY, &st->tty_nr, b) < 0 ||
        walk_set(w, r, F_FLAGS, &st->flags, b) < 0 ||
        walk_set(w, r, F_MINFLT, &st->minflt, b) < 0 ||
        walk_set(w, r, F_MAJFLT, &st->majflt, b) < 0 ||
        walk_set(w, r, F_UTIME, &st->utime, b) < 0 ||
        walk_set(w, r, F_STIME, &st->stime, b) < 0 ||
        walk_set(w, r, F_THREADS, &st->num_threads, b) < 0 ||
        walk_set(w, r, F_START, &st->starttime, b) < 0 ||
        (st->has_vsize && walk_set(w, r, F_VSIZE, &st->vsize, b) < 0) ||
        (st->has_rss && walk_set(w, r, F_RSS, &st->rss, b) < 0))
        return -1;
    return walk_arena_put(w, b + st->state_off, st->state_len, &r->state);
}

/* status or io through its kept fd: fields set, None (counted), or the process
 * vanished. 0, 1 (vanished) or -1 (ENOMEM). */
static int walk_keyed(ps_walker *w, ps_entry *e, ps_record *r, int slot, const char *name,
                      size_t cap, const char *const *keys, int nkeys, int first_field)
{
    ps_num x[PS_ST_NKEYS];
    unsigned found;
    ssize_t n;
    int err = 0, k;

    n = walk_read(w, e, slot, r->pid, name, w->buf, cap, &err);
    if (n < 0)
        return walk_failed(w, r->pid, err);
    if (parse_keyed(w->buf, (size_t)n, keys, nkeys, x, &found) < 0) {
        walk_count(w, PS_MALFORMED);
        return 0;
    }
    for (k = 0; k < nkeys; k++)
        if ((found & (1u << k)) && walk_set(w, r, first_field + k, &x[k], w->buf) < 0)
            return -1;
    return 0;
}

/* A static-fact file (cmdline, cgroup) into *out, which stays PS_NONE when unreadable.
 * 0, 1 (vanished) or -1 (ENOMEM). */
static int walk_fact(ps_walker *w, ps_record *r, const char *name, size_t cap, int strip,
                     ps_span *out)
{
    ssize_t n;
    int err = 0;

    out->at = PS_NONE;
    n = walk_read(w, NULL, -1, r->pid, name, w->buf, cap, &err);
    if (n < 0)
        return walk_failed(w, r->pid, err);
    if (strip) /* rstrip("\n") */
        while (n > 0 && w->buf[n - 1] == '\n')
            n--;
    return walk_arena_put(w, w->buf, (size_t)n, out) < 0 ? -1 : 0;
}

/* exe: ENOENT is no error (kernel threads, zombies) unless the process is gone.
 * 0, 1 (vanished) or -1 (ENOMEM). */
static int walk_exe(ps_walker *w, ps_record *r)
{
    char path[48];
    ssize_t n;

    r->exe.at = PS_NONE;
    walk_path(path, r->pid, "exe");
    n = readlinkat(w->rootfd, path, w->buf, PS_EXE_CAP);
    if (n < 0) {
        int err = errno;
        if (walk_is_gone_errno(err))
            return walk_gone(w, r->pid);
        walk_count(w, err);
        return 0;
    }
    return walk_arena_put(w, w->buf, (size_t)n, &r->exe) < 0 ? -1 : 0;
}

/* One process: 1 recorded, 0 dropped, -1 ENOMEM. The order of the reads (and so of the
 * error counts kept when a process vanishes half-way) is that of procfs.py. */
static int walk_process(ps_walker *w, int pid)
{
    size_t arena_mark = w->arena_len, bigs_mark = w->nbigs;
    ps_entry *e;
    ps_record *r;
    ps_stat st;
    uint64_t count;
    ssize_t n;
    int err = 0, rc, same;

    w->npending = 0;
    e = walk_cache_get(w, pid);
    if (e == NULL)
        return -1;

    n = walk_read(w, e, K_STAT, pid, "stat", w->stat_buf, PS_STAT_CAP, &err);
    if (n < 0) {
        if (!walk_is_gone_errno(err))
            walk_tally(w, err);
        return 0;
    }
    if (parse_stat(w->stat_buf, (size_t)n, &st) < 0) {
        walk_tally(w, PS_MALFORMED);
        return 0;
    }

    if (walk_grow((void **)&w->records, w->nrecords, &w->cap_records, 1024, sizeof(*w->records)) < 0)
        return -1;
    r = &w->records[w->nrecords++];
    memset(r, 0, sizeof(*r));
    r->pid = pid;
    r->entry = e;
    r->cmdline.at = r->exe.at = r->cgroup.at = PS_NONE;
    if (walk_set_stat(w, r, &st, w->stat_buf) < 0)
        return -1;

    same = e->facts_ok && walk_same_identity(e, &st, w->stat_buf);
    if (!same) { /* new, exec or pid reuse: open afresh, so access is checked again */
        walk_close_fd(&e->fd[K_STATUS]);
        walk_close_fd(&e->fd[K_IO]);
        if (walk_set_identity(e, &st, w->stat_buf) < 0)
            return -1;
    }

    rc = walk_keyed(w, e, r, K_STATUS, "status", PS_STATUS_CAP, ps_status_keys, PS_ST_NKEYS,
                    F_UID);
    if (rc == 0)
        rc = walk_keyed(w, e, r, K_IO, "io", PS_IO_CAP, ps_io_keys, PS_IO_NKEYS, F_READ);
    if (rc != 0)
        goto done;

    if (walk_fd_count(w, pid, &count, &err) == 0) {
        r->num[F_OPEN_FDS] = count;
        r->has |= 1u << F_OPEN_FDS;
    } else if (walk_failed(w, pid, err)) {
        rc = 1;
        goto done;
    }

    switch (walk_max_fds(w, e, r, pid, !same, &err)) {
    case -1:
        if (walk_failed(w, pid, err)) {
            rc = 1;
            goto done;
        }
        break;
    case -2:
        walk_count(w, PS_MALFORMED);
        break;
    case -3:
        return -1;
    }

    if (!same) {
        r->facts_new = 1;
        rc = walk_fact(w, r, "cmdline", PS_CMDLINE_CAP, 0, &r->cmdline);
        if (rc == 0)
            rc = walk_exe(w, r);
        if (rc == 0)
            rc = walk_fact(w, r, "cgroup", PS_CGROUP_CAP, 1, &r->cgroup);
    }

done:
    if (rc < 0)
        return -1;
    if (rc > 0) { /* vanished: drop it quietly, with the errors it caused */
        w->npending = 0;
        w->nrecords--;
        w->arena_len = arena_mark;
        w->nbigs = bigs_mark;
        return 0;
    }
    walk_commit(w);
    e->gen = w->gen;
    return 1;
}

/* ---- the walk ------------------------------------------------------------------------ */

static int walk_cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* A numeric name of the root (up to the largest pid_t) into w->pids. */
static int walk_add_pid(ps_walker *w, const char *s, void *unused)
{
    long pid = 0;

    if (*s == '\0')
        return 0;
    for (; *s >= '0' && *s <= '9' && pid <= 0x7fffffff; s++)
        pid = pid * 10 + (*s - '0');
    if (*s != '\0' || pid > 0x7fffffff) /* not a pid (or beyond any pid_t) */
        return 0;
    if (walk_grow((void **)&w->pids, w->npids, &w->cap_pids, 1024, sizeof(*w->pids)) < 0) {
        errno = ENOMEM;
        return -1;
    }
    w->pids[w->npids++] = (int)pid;
    return 0;
}

/* The numeric names of the root, sorted. 0 or -1 with *err. */
static int walk_root(ps_walker *w, int *err)
{
    w->npids = 0;
    if (w->rootfd < 0) {
        w->rootfd = walk_openat(AT_FDCWD, w->procfs, O_RDONLY | O_DIRECTORY);
        if (w->rootfd < 0) {
            *err = errno;
            return -1;
        }
    } else if (lseek(w->rootfd, 0, SEEK_SET) < 0) {
        *err = errno;
        return -1;
    }
    if (walk_each_entry(w, w->rootfd, walk_add_pid, NULL, err) < 0)
        return -1;
    qsort(w->pids, w->npids, sizeof(*w->pids), walk_cmp_int);
    return 0;
}

static void walk_budget(ps_walker *w)
{
    struct rlimit rl;
    rlim_t soft;

    w->budget = 0;
    if (!w->is_procfs || getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    soft = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 30) ? (1u << 30) : rl.rlim_cur;
    if (soft > PS_KEEP_RESERVE)
        w->budget = (size_t)(soft - PS_KEEP_RESERVE) / PS_KEPT_FDS;
}

int walk_collect(ps_walker *w, int *err)
{
    size_t i;
    int rc = 0;

    w->nrecords = 0;
    w->arena_len = 0;
    w->nbigs = 0;
    w->malformed = 0;
    memset(w->errors, 0, sizeof(w->errors));
    if (++w->gen == 0)
        w->gen = 1;
    walk_budget(w);

    if (walk_root(w, err) < 0) {
        rc = -1;
        goto done;
    }
    for (i = 0; i < w->npids; i++) {
        if (walk_process(w, w->pids[i]) < 0) {
            *err = ENOMEM;
            rc = -1;
            goto done;
        }
    }
    walk_evict(w, 0); /* pids not recorded by this walk */
done:
    if (!w->is_procfs) /* a fixture tree is listed afresh each time, as Python does */
        walk_close_fd(&w->rootfd);
    return rc;
}

void walk_close_all(ps_walker *w)
{
    walk_evict(w, 1);
    walk_close_fd(&w->rootfd);
}

int walk_init(ps_walker *w, const char *procfs)
{
    struct statfs sfs;
    struct stat st;
    char self[32], mine[32];
    ssize_t n;

    memset(w, 0, sizeof(*w));
    w->rootfd = -1;
    w->procfs = strdup(procfs);
    w->buf = malloc(PS_CMDLINE_CAP);
    w->stat_buf = malloc(PS_STAT_CAP);
    w->dents = malloc(DENTS_SIZE);
    if (w->procfs == NULL || w->buf == NULL || w->stat_buf == NULL || w->dents == NULL ||
        walk_cache_grow(w) < 0) {
        walk_free(w);
        errno = ENOMEM;
        return -1;
    }
    /* An unreadable root is no error yet: collect() reports it, as Python does. */
    w->rootfd = walk_openat(AT_FDCWD, procfs, O_RDONLY | O_DIRECTORY);
    if (w->rootfd < 0)
        return 0;
    /* the root inode (1) of a procfs mount: fd dir sizes are fd counts, reads of kept
     * fds of dead processes fail with ESRCH */
    w->is_procfs = fstatfs(w->rootfd, &sfs) == 0 && sfs.f_type == PS_PROC_SUPER_MAGIC &&
                   fstat(w->rootfd, &st) == 0 && st.st_ino == 1;
    n = readlinkat(w->rootfd, "self", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        snprintf(mine, sizeof(mine), "%d", (int)getpid());
        w->own_procfs = strcmp(self, mine) == 0;
    }
    if (!w->is_procfs)
        walk_close_fd(&w->rootfd);
    return 0;
}

void walk_free(ps_walker *w)
{
    walk_close_all(w);
    free(w->buckets);
    free(w->procfs);
    free(w->buf);
    free(w->stat_buf);
    free(w->dents);
    free(w->records);
    free(w->arena);
    free(w->bigs);
    free(w->pids);
    w->buckets = NULL;
    w->procfs = w->buf = w->stat_buf = w->dents = w->arena = NULL;
    w->records = NULL;
    w->bigs = NULL;
    w->pids = NULL;
    w->nbuckets = w->cap_records = w->arena_cap = w->cap_bigs = w->cap_pids = 0;
}
