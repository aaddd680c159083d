/* The walk: one getdents64 pass over the procfs root and the per-pid reads; the reads of
 * static facts for the pids the tracker asks for; the per-pid cache of kept-open files.
 *
 * Runs with the GIL released: system calls and parsing into C memory only, no Python
 * API. It reports what it read and the errno of what it could not; what that means
 * (exited, unreadable, exec) is the tracker's business.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "reader.h"

#define DENTS_SIZE 32768
#define BUF_FIRST 4096

enum { K_STAT, K_STATUS, K_IO, K_WCHAN, K_SCHED };

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

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

static void walk_close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Open path (under dirfd: the root, or a task dir) for reading. Never blocks (a FIFO in a
 * fixture tree), and outside a real procfs only a regular file is read. fd, or -1 with errno. */
static int walk_open(ps_walker *w, int dirfd, const char *path)
{
    struct stat st;
    int fd;

    do
        fd = openat(dirfd, path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd >= 0 && !w->is_procfs && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        errno = EINVAL;
        return -1;
    }
    return fd;
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
    if (w->arena == NULL || n > w->arena_cap - w->arena_len) { /* NULL + 0 is undefined */
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

/* Read a whole file from offset 0 into w->buf: a read that fills the buffer is done again
 * with a bigger one, up to PS_FILE_MAX. Bytes read, or -1 with errno. *full is set when
 * the file is PS_FILE_MAX bytes or more (then only that much was read). */
static ssize_t walk_read_fd(ps_walker *w, int fd, int *full)
{
    ssize_t n;

    *full = 0;
    for (;;) {
        n = walk_pread(fd, w->buf, w->buf_cap);
        if (n < 0 || (size_t)n < w->buf_cap)
            return n;
        if (w->buf_cap >= PS_FILE_MAX) {
            *full = 1;
            return n;
        }
        {
            char *bigger = realloc(w->buf, 2 * w->buf_cap);
            if (bigger == NULL) {
                errno = ENOMEM;
                return -1;
            }
            w->buf = bigger;
            w->buf_cap *= 2;
        }
    }
}

/* Close a kept fd (a process' or a thread's). */
static void walk_unkeep(ps_walker *w, int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
        w->kept_fds--;
    }
}

/* Read path (under dirfd) whole, through the kept fd *kept when there is one (kept:
 * NULL, or the slot of a process or thread that keeps its files), and keep a fresh fd
 * there while the fd budget allows. A failing kept fd (the task exited, the pid may be
 * reused) is closed and the file opened afresh. Bytes read, or -1 with *err (ENOMEM is
 * fatal). A file that filled PS_FILE_MAX is malformed unless cut is set (cmdline, cut as
 * process-exporter does). */
static ssize_t walk_read_in(ps_walker *w, int dirfd, const char *path, int *kept, int cut, int *err)
{
    ssize_t n;
    int fd, full;

    if (kept != NULL && *kept >= 0) {
        n = walk_read_fd(w, *kept, &full);
        if (n >= 0)
            goto done;
        if (errno == ENOMEM) {
            *err = ENOMEM;
            return -1;
        }
        walk_unkeep(w, kept);
    }
    fd = walk_open(w, dirfd, path);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    n = walk_read_fd(w, fd, &full);
    if (n < 0) {
        *err = errno;
        close(fd);
        return -1;
    }
    if (kept != NULL && w->kept_fds < w->fd_budget) {
        *kept = fd;
        w->kept_fds++;
    } else {
        close(fd);
    }
done:
    if (full && !cut) {
        *err = PS_MALFORMED;
        return -1;
    }
    return n;
}

/* PID/name of the procfs root, as walk_read_in reads it. */
static ssize_t walk_read(ps_walker *w, ps_entry *e, int slot, int pid, const char *name, int cut, int *err)
{
    char path[48];

    walk_path(path, pid, name);
    return walk_read_in(w, w->rootfd, path, slot >= 0 && e->keeps ? &e->fd[slot] : NULL, cut, err);
}

/* Is the process gone? (PID/stat no longer exists) */
static int walk_gone(ps_walker *w, int pid)
{
    char path[48];

    walk_path(path, pid, "stat");
    return faccessat(w->rootfd, path, F_OK, 0) != 0;
}

/* A secondary file failed with err: 1 when the process vanished (drop it quietly),
 * -1 on ENOMEM, else the errno is counted and 0 returned (the field is None). */
static int walk_failed(ps_walker *w, int pid, int err)
{
    if (err == ENOMEM)
        return -1;
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
    do
        fd = openat(w->rootfd, path, O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    *count = 0;
    rc = walk_each_entry(w, fd, walk_count_entry, count, err);
    close(fd);
    return rc;
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

static ps_entry *walk_cache_find(ps_walker *w, int pid)
{
    ps_entry *e;

    for (e = w->buckets[walk_hash(w, pid)]; e != NULL; e = e->next)
        if (e->pid == pid)
            return e;
    return NULL;
}

/* The entry of pid, created when new. NULL on ENOMEM. */
static ps_entry *walk_cache_get(ps_walker *w, int pid)
{
    ps_entry *e;
    size_t h;

    if (w->nentries >= w->nbuckets && walk_cache_grow(w) < 0)
        return NULL;
    e = walk_cache_find(w, pid);
    if (e == NULL) {
        e = calloc(1, sizeof(*e));
        if (e == NULL)
            return NULL;
        e->pid = pid;
        e->fd[K_STAT] = e->fd[K_STATUS] = e->fd[K_IO] = e->fd[K_WCHAN] = e->fd[K_SCHED] = -1;
        h = walk_hash(w, pid);
        e->next = w->buckets[h];
        w->buckets[h] = e;
        w->nentries++;
    }
    if (!e->keeps && w->is_procfs && w->nkept < w->keep_open) {
        e->keeps = 1;
        w->nkept++;
    }
    return e;
}

/* Close the kept fds[PS_THREAD_FDS] of a thread and give back its budget (*keeps). */
static void walk_thread_unkeep(ps_walker *w, int *fds, int *keeps)
{
    int k;

    for (k = 0; k < PS_THREAD_FDS; k++)
        walk_unkeep(w, &fds[k]);
    if (*keeps) {
        *keeps = 0;
        w->nkept_threads--;
    }
}

/* Close the kept files of threads memo[0..n) and give back their budget. */
static void walk_memo_close(ps_walker *w, ps_thread_memo *memo, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        walk_thread_unkeep(w, memo[i].fd, &memo[i].keeps);
}

/* Free threads memo[0..n) (their files closed: walk_memo_close). */
static void walk_memo_free(ps_thread_memo *memo, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(memo[i].text);
    free(memo);
}

/* Forget the threads of e as last read, and close their kept files. */
static void walk_forget_threads(ps_walker *w, ps_entry *e)
{
    walk_memo_close(w, e->memo, e->nmemo);
    walk_memo_free(e->memo, e->nmemo);
    e->memo = NULL;
    e->nmemo = 0;
}

/* Close the kept status, io and wchan of e (stat and schedstat stay). */
static void walk_unkeep_status_io_wchan(ps_walker *w, ps_entry *e)
{
    walk_unkeep(w, &e->fd[K_STATUS]);
    walk_unkeep(w, &e->fd[K_IO]);
    walk_unkeep(w, &e->fd[K_WCHAN]);
}

static void walk_entry_close(ps_walker *w, ps_entry *e)
{
    int i;

    for (i = 0; i < PS_KEPT_FDS; i++)
        walk_unkeep(w, &e->fd[i]);
    if (e->keeps) {
        e->keeps = 0;
        w->nkept--;
    }
    walk_memo_close(w, e->memo, e->nmemo);
}

void walk_entry_free(ps_entry *e)
{
    walk_memo_free(e->memo, e->nmemo);
    free(e->idle.wchan);
    free(e->comm.bytes);
    free(e->wchan.bytes);
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

/* ---- one process --------------------------------------------------------------------- */

static void walk_set(ps_record *r, int f, uint64_t v)
{
    r->num[f] = v;
    r->has |= 1u << f;
}

/* A pid whose stat could not be read or parsed: alive, as far as we know. 0 or -1. */
static int walk_unreadable(ps_walker *w, int pid, int err)
{
    if (walk_grow((void **)&w->unreadable, w->nunreadable, &w->cap_unreadable, 64,
                  sizeof(*w->unreadable)) < 0)
        return -1;
    w->unreadable[w->nunreadable].pid = pid;
    w->unreadable[w->nunreadable].err = err;
    w->nunreadable++;
    return 0;
}

/* status or io: fields set, None (counted), or the process vanished.
 * 0, 1 (vanished) or -1 (ENOMEM). */
static int walk_keyed(ps_walker *w, ps_entry *e, ps_record *r, int slot, const char *name,
                      const char *const *keys, int nkeys, int first_field)
{
    uint64_t x[PS_ST_NKEYS];
    unsigned found;
    ssize_t n;
    int err = 0, k;

    n = walk_read(w, e, slot, r->pid, name, 0, &err);
    if (n < 0)
        return walk_failed(w, r->pid, err);
    w->last_len = (size_t)n;
    if (parse_keyed(w->buf, (size_t)n, keys, nkeys, x, &found) < 0) {
        walk_count(w, PS_MALFORMED);
        return 0;
    }
    for (k = 0; k < nkeys; k++)
        if (found & (1u << k))
            walk_set(r, first_field + k, x[k]);
    return 0;
}

/* Bytes: a value that does not fit 64 bits makes its file malformed (as the twin). */
static int walk_scale(ps_record *r, int f, uint64_t k)
{
    uint64_t x;

    if (!(r->has & (1u << f)))
        return 0;
    if (__builtin_mul_overflow(r->num[f], k, &x))
        return -1;
    r->num[f] = x;
    return 0;
}

/* Proportional memory from smaps_rollup (in kB): read only when rss is at most
 * smaps_max_rss, since the kernel walks every page table of the process to make it;
 * none without an mm (vsize 0: kernel threads, zombies). 0, 1 (vanished) or -1. */
static int walk_smaps(ps_walker *w, ps_entry *e, ps_record *r)
{
    int rc;

    if (!(r->has & (1u << F_VSIZE)) || !(r->has & (1u << F_RSS)))
        return 0;
    if (r->num[F_VSIZE] == 0) {
        walk_set(r, F_PSS, 0);
        walk_set(r, F_SWAP_PSS, 0);
        return 0;
    }
    if (r->num[F_RSS] > w->smaps_max_rss)
        return 0;
    rc = walk_keyed(w, e, r, -1, "smaps_rollup", ps_smaps_keys, PS_SM_NKEYS, F_PSS);
    if (rc == 0 && (walk_scale(r, F_PSS, 1024) < 0 || walk_scale(r, F_SWAP_PSS, 1024) < 0)) {
        r->has &= ~(1u << F_PSS | 1u << F_SWAP_PSS);
        walk_count(w, PS_MALFORMED);
    }
    return rc;
}

/* ---- a process that has not run since the last walk ------------------------------------ */

static const int walk_idle_fields[PS_IDLE_FIELDS] = {F_UID, F_SWAP, F_CTXV, F_CTXNV, F_READ, F_WRITE, F_EUID};

/* The run time and timeslice count of a single-threaded process of a real procfs
 * (PID/schedstat, kept with the other files): 1, or 0 when they cannot be had (several
 * threads: the file is the leader's alone; a fixture tree; a kernel without sched_info). */
static int walk_idle_probe(ps_walker *w, ps_entry *e, const ps_stat *st, uint64_t *run_ns, uint64_t *slices)
{
    ssize_t n;
    int err = 0;

    if (!w->is_procfs || st->num_threads != 1) {
        walk_unkeep(w, &e->fd[K_SCHED]);
        return 0;
    }
    n = walk_read(w, e, K_SCHED, e->pid, "schedstat", 0, &err);
    return n >= 0 && parse_schedstat(w->buf, (size_t)n, run_ns, slices) == 0 && *slices != 0;
}

/* Has the process of record r not run since its status, io and wchan were remembered?
 * A process that does not run changes none of them, but its state changes when it is
 * woken (then it is R, and its wchan "0") and its rss when its pages are reclaimed (and
 * so perhaps its swap): those are checked in stat, read each time. Every PS_IDLE_EVERY
 * walks it is read whole anyway (see reader.h). */
static int walk_idle_same(const ps_walker *w, const ps_entry *e, const ps_record *r, const ps_stat *st,
                          uint64_t run_ns, uint64_t slices)
{
    char state = r->state.len ? w->arena[r->state.at] : '\0';

    return e->idle.valid && e->idle.run_ns == run_ns && e->idle.slices == slices && state == e->idle.state &&
           state != 'R' && st->has_rss && st->rss == e->idle.rss && ((unsigned)r->pid + w->gen) % PS_IDLE_EVERY != 0;
}

/* Give the remembered status, io and wchan to r, with the errors their reads had; their
 * kept files are closed (an idle process pins two, stat and schedstat). 0 or -1 (ENOMEM). */
static int walk_idle_again(ps_walker *w, ps_entry *e, ps_record *r)
{
    int i;

    for (i = 0; i < PS_IDLE_FIELDS; i++)
        if (e->idle.has & (1u << i))
            walk_set(r, walk_idle_fields[i], e->idle.num[i]);
    for (i = 0; i < e->idle.nerrs; i++)
        walk_count(w, e->idle.errs[i]);
    if (e->idle.wchan != NULL && walk_arena_put(w, e->idle.wchan, e->idle.wchan_len, &r->wchan) < 0)
        return -1;
    walk_unkeep_status_io_wchan(w, e);
    return 0;
}

/* Remember what status, io and wchan gave r (the errors from w->pending[first_error]).
 * Not remembered (memory short, or too many errors) is only slower. */
static void walk_idle_remember(ps_walker *w, ps_entry *e, const ps_record *r, const ps_stat *st,
                               uint64_t run_ns, uint64_t slices, int first_error)
{
    ps_idle_memo *m = &e->idle;
    int i;

    m->valid = 0;
    if (!st->has_rss || w->npending - first_error > (int)(sizeof(m->errs) / sizeof(m->errs[0])))
        return;
    free(m->wchan);
    m->wchan = NULL;
    m->wchan_len = 0;
    if (r->wchan.at != PS_NONE) {
        if ((m->wchan = malloc(r->wchan.len ? r->wchan.len : 1)) == NULL)
            return;
        memcpy(m->wchan, w->arena + r->wchan.at, r->wchan.len);
        m->wchan_len = r->wchan.len;
    }
    m->has = 0;
    for (i = 0; i < PS_IDLE_FIELDS; i++)
        if (r->has & (1u << walk_idle_fields[i])) {
            m->has |= 1u << i;
            m->num[i] = r->num[walk_idle_fields[i]];
        }
    m->nerrs = w->npending - first_error;
    for (i = 0; i < m->nerrs; i++)
        m->errs[i] = w->pending[first_error + i];
    m->run_ns = run_ns;
    m->slices = slices;
    m->rss = st->rss;
    m->state = r->state.len ? w->arena[r->state.at] : '\0';
    m->valid = 1;
}

/* status, io and wchan of record r, their files kept open when keep is set (else
 * closed). 0, 1 (vanished) or -1 (ENOMEM). */
static int walk_status_io_wchan(ps_walker *w, ps_entry *e, ps_record *r, int keep)
{
    ssize_t n;
    int err = 0, rc, pid = r->pid;

    if (!keep)
        walk_unkeep_status_io_wchan(w, e);
    rc = walk_keyed(w, e, r, keep ? K_STATUS : -1, "status", ps_status_keys, PS_ST_NKEYS, F_UID);
    if (rc == 0 && (r->has & (1u << F_UID))) { /* w->buf still holds status */
        uint64_t euid;
        if (parse_effective_uid(w->buf, w->last_len, &euid) == 0)
            walk_set(r, F_EUID, euid);
    }
    if (rc == 0 && (r->has & (1u << F_UID)) && !(r->has & (1u << F_SWAP)))
        walk_set(r, F_SWAP, 0); /* no VmSwap line: no mm (kernel thread, zombie), nothing swapped */
    if (rc == 0 && walk_scale(r, F_SWAP, 1024) < 0) { /* status VmSwap is in kB */
        r->has &= ~(1u << F_UID | 1u << F_SWAP | 1u << F_CTXV | 1u << F_CTXNV | 1u << F_EUID);
        walk_count(w, PS_MALFORMED);
    }
    if (rc == 0)
        rc = walk_keyed(w, e, r, keep ? K_IO : -1, "io", ps_io_keys, PS_IO_NKEYS, F_READ);
    if (rc == 0 && w->wchan) {
        n = walk_read(w, e, keep ? K_WCHAN : -1, pid, "wchan", 0, &err);
        if (n >= 0)
            rc = walk_arena_put(w, w->buf, (size_t)n, &r->wchan);
        else if (err != ENOENT || walk_gone(w, pid))
            rc = walk_failed(w, pid, err);
        /* else no wchan file: a kernel built without CONFIG_KALLSYMS; None, no error */
    }
    return rc;
}

/* One process: 1 recorded, 0 not (gone or unreadable), -1 ENOMEM. */
static int walk_process(ps_walker *w, int pid)
{
    size_t arena_mark = w->arena_len;
    ps_entry *e;
    ps_record *r;
    ps_stat st;
    uint64_t count, run_ns = 0, slices = 0;
    ssize_t n;
    int err = 0, rc, timed;

    w->npending = 0;
    e = walk_cache_get(w, pid);
    if (e == NULL)
        return -1;

    n = walk_read(w, e, K_STAT, pid, "stat", 0, &err);
    if (n < 0) {
        if (err == ENOMEM)
            return -1;
        if (walk_is_gone_errno(err))
            return 0;
        e->gen = w->gen; /* keep the entry: the process is there */
        return walk_unreadable(w, pid, err);
    }
    if (parse_stat(w->buf, (size_t)n, &st) < 0) {
        e->gen = w->gen;
        return walk_unreadable(w, pid, PS_MALFORMED);
    }
    if (e->start != st.starttime) { /* pid reuse: files of another process */
        walk_unkeep_status_io_wchan(w, e);
        walk_unkeep(w, &e->fd[K_SCHED]);
        walk_forget_threads(w, e); /* threads of another process */
        e->idle.valid = 0;
        e->start = st.starttime;
    }
    if (e->nmemo && st.num_threads < 2) /* its other threads exited: their kept files go */
        walk_forget_threads(w, e);

    if (walk_grow((void **)&w->records, w->nrecords, &w->cap_records, 1024, sizeof(*w->records)) < 0)
        return -1;
    r = &w->records[w->nrecords++];
    memset(r, 0, sizeof(*r));
    r->pid = pid;
    r->entry = e;
    r->wchan.at = PS_NONE;
    if (walk_arena_put(w, w->buf + st.comm_off, st.comm_len, &r->comm) < 0 ||
        walk_arena_put(w, w->buf + st.state_off, st.state_len, &r->state) < 0)
        return -1;
    walk_set(r, F_PPID, st.ppid);
    walk_set(r, F_FLAGS, st.flags);
    walk_set(r, F_START, st.starttime);
    walk_set(r, F_UTIME, st.utime);
    walk_set(r, F_STIME, st.stime);
    walk_set(r, F_MINFLT, st.minflt);
    walk_set(r, F_MAJFLT, st.majflt);
    walk_set(r, F_THREADS, st.num_threads);
    if (st.has_vsize)
        walk_set(r, F_VSIZE, st.vsize);
    if (st.has_rss)
        walk_set(r, F_RSS, st.rss);
    walk_set(r, F_TTY, st.tty_nr);
    walk_set(r, F_MARK, st.mark);
    walk_set(r, F_CUTIME, st.cutime);
    walk_set(r, F_CSTIME, st.cstime);
    walk_set(r, F_CMINFLT, st.cminflt);
    walk_set(r, F_CMAJFLT, st.cmajflt);
    if (walk_scale(r, F_RSS, w->page_size) < 0) {
        w->nrecords--;
        w->arena_len = arena_mark;
        e->gen = w->gen;
        return walk_unreadable(w, pid, PS_MALFORMED);
    }

    timed = walk_idle_probe(w, e, &st, &run_ns, &slices);
    if (timed && walk_idle_same(w, e, r, &st, run_ns, slices)) {
        rc = walk_idle_again(w, e, r);
    } else {
        /* their files are kept for a process seen running (or one whose running cannot
         * be seen: several threads); one seen for the first time is likely idle, and one
         * read whole for another reason (its rss moved, or its turn came) did not run */
        int first_error = w->npending;
        int ran = e->idle.valid && (e->idle.run_ns != run_ns || e->idle.slices != slices);
        rc = walk_status_io_wchan(w, e, r, !timed || ran);
        if (timed && rc == 0)
            walk_idle_remember(w, e, r, &st, run_ns, slices, first_error);
        else
            e->idle.valid = 0;
    }
    if (rc == 0) {
        if (walk_fd_count(w, pid, &count, &err) == 0)
            walk_set(r, F_OPEN_FDS, count);
        else
            rc = walk_failed(w, pid, err);
    }
    if (rc == 0 && w->smaps)
        rc = walk_smaps(w, e, r);
    if (rc < 0)
        return -1;
    if (rc > 0) { /* vanished: drop it quietly, with the errors it caused */
        w->npending = 0;
        w->nrecords--;
        w->arena_len = arena_mark;
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

    if (*s == '\0' || *s == '0') /* "0", "007": no pid is named so (7/ would be read) */
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

/* The root fd, opened when not kept (a fixture tree is opened afresh for each call, so
 * it is listed as it is now). 0 or -1 with *err. */
static int walk_open_root(ps_walker *w, int *err)
{
    if (w->rootfd >= 0)
        return 0;
    do
        w->rootfd = openat(AT_FDCWD, w->procfs, O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
    while (w->rootfd < 0 && errno == EINTR);
    if (w->rootfd < 0) {
        *err = errno;
        return -1;
    }
    return 0;
}

static void walk_done_root(ps_walker *w)
{
    if (!w->is_procfs)
        walk_close_fd(&w->rootfd);
}

/* The numeric names of the root, sorted. 0 or -1 with *err. */
static int walk_root(ps_walker *w, int *err)
{
    w->npids = 0;
    if (walk_open_root(w, err) < 0)
        return -1;
    if (lseek(w->rootfd, 0, SEEK_SET) < 0) {
        *err = errno;
        return -1;
    }
    if (walk_each_entry(w, w->rootfd, walk_add_pid, NULL, err) < 0)
        return -1;
    if (w->npids > 1) /* qsort(NULL, 0) is undefined: no pids yet, no array */
        qsort(w->pids, w->npids, sizeof(*w->pids), walk_cmp_int);
    return 0;
}

void walk_reset_output(ps_walker *w)
{
    w->nthreads = 0;
    w->nrecords = 0;
    w->nunreadable = 0;
    w->arena_len = 0;
    w->malformed = 0;
    memset(w->errors, 0, sizeof(w->errors));
}

/* How many fds may be kept: RLIMIT_NOFILE's soft limit (raised since, perhaps) less
 * PS_FD_RESERVE. Lowering the limit later keeps no more files, closes none. */
static void walk_fd_budget(ps_walker *w)
{
    struct rlimit lim;
    rlim_t soft = 1u << 20;

    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
        soft = lim.rlim_cur;
    w->fd_budget = soft > PS_FD_RESERVE ? (size_t)(soft - PS_FD_RESERVE) : 0;
}

int walk_collect(ps_walker *w, int *err)
{
    size_t i;
    int rc = 0;

    walk_reset_output(w);
    walk_fd_budget(w);
    if (++w->gen == 0)
        w->gen = 1;
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
    walk_evict(w, 0); /* pids not seen by this walk */
done:
    walk_done_root(w);
    return rc;
}

/* ---- static facts -------------------------------------------------------------------- */

/* A fact file into *out (PS_NONE when unreadable, counted). 0, 1 (vanished), -1 ENOMEM. */
static int walk_fact_file(ps_walker *w, int pid, const char *name, int cut, ps_span *out)
{
    ssize_t n;
    int err = 0;

    n = walk_read(w, NULL, -1, pid, name, cut, &err);
    if (n < 0)
        return walk_failed(w, pid, err);
    return walk_arena_put(w, w->buf, (size_t)n, out) < 0 ? -1 : 0;
}

/* exe: ENOENT is no error (kernel threads, zombies) unless the process is gone.
 * 0, 1 (vanished) or -1 (ENOMEM). */
static int walk_exe(ps_walker *w, int pid, ps_span *out)
{
    char path[48];
    ssize_t n;

    walk_path(path, pid, "exe");
    n = readlinkat(w->rootfd, path, w->buf, PS_EXE_CAP);
    if (n < 0) {
        int err = errno;
        if (walk_is_gone_errno(err))
            return walk_gone(w, pid);
        walk_count(w, err);
        return 0;
    }
    return walk_arena_put(w, w->buf, (size_t)n, out) < 0 ? -1 : 0;
}

/* The soft RLIMIT_NOFILE: prlimit(2) in our own procfs, else PID/limits (also for another
 * user's process, whose limits file anyone may read). 0, 1 (vanished), -1 ENOMEM. */
static int walk_nofile(ps_walker *w, ps_fact *f)
{
    struct rlimit old;
    ssize_t n;
    int err = 0;

    if (w->own_procfs) {
        if (prlimit(f->pid, RLIMIT_NOFILE, NULL, &old) == 0) {
            f->nofile = old.rlim_cur == RLIM_INFINITY ? PS_UNLIMITED : (uint64_t)old.rlim_cur;
            f->has_nofile = 1;
            return 0;
        }
        if (errno == ESRCH)
            return 1;
        if (errno != EPERM && errno != EACCES)
            return walk_failed(w, f->pid, errno);
    }
    n = walk_read(w, NULL, -1, f->pid, "limits", 0, &err);
    if (n < 0)
        return walk_failed(w, f->pid, err);
    if (parse_limits_nofile(w->buf, (size_t)n, &f->nofile) < 0)
        walk_count(w, PS_MALFORMED);
    else
        f->has_nofile = 1;
    return 0;
}

/* One thread: task/TID/stat must parse (else the thread is skipped), status, io and wchan
 * may be unreadable (None); read through the kept fds of fds[PS_THREAD_FDS] (NULL: none
 * kept). 0, or -1 on ENOMEM. */
static int walk_thread(ps_walker *w, int taskfd, int tid, int *fds)
{
    char name[64];
    uint64_t x[PS_ST_NKEYS];
    unsigned found;
    size_t mark = w->arena_len;
    ps_thread *t;
    ps_stat st;
    ssize_t n;
    int err = 0, k;

    snprintf(name, sizeof(name), "%d/stat", tid);
    n = walk_read_in(w, taskfd, name, fds != NULL ? &fds[0] : NULL, 0, &err);
    if (n < 0)
        return err == ENOMEM ? -1 : 0;
    if (parse_stat(w->buf, (size_t)n, &st) < 0)
        return 0;
    if (walk_grow((void **)&w->threads, w->nthreads, &w->cap_threads, 64, sizeof(*w->threads)) < 0)
        return -1;
    t = &w->threads[w->nthreads];
    memset(t, 0, sizeof(*t));
    t->tid = tid;
    t->wchan.at = PS_NONE;
    if (walk_arena_put(w, w->buf + st.comm_off, st.comm_len, &t->comm) < 0 ||
        walk_arena_put(w, w->buf + st.state_off, st.state_len, &t->state) < 0) {
        w->arena_len = mark;
        return -1;
    }
    t->num[T_UTIME] = st.utime;
    t->num[T_STIME] = st.stime;
    t->num[T_MINFLT] = st.minflt;
    t->num[T_MAJFLT] = st.majflt;
    t->has = 1u << T_UTIME | 1u << T_STIME | 1u << T_MINFLT | 1u << T_MAJFLT;
    snprintf(name, sizeof(name), "%d/status", tid);
    n = walk_read_in(w, taskfd, name, fds != NULL ? &fds[1] : NULL, 0, &err);
    if (n >= 0 && parse_keyed(w->buf, (size_t)n, ps_status_keys, PS_ST_NKEYS, x, &found) == 0) {
        for (k = PS_ST_CTXV; k <= PS_ST_CTXNV; k++)
            if (found & (1u << k)) {
                t->num[T_CTXV + k - PS_ST_CTXV] = x[k];
                t->has |= 1u << (T_CTXV + k - PS_ST_CTXV);
            }
    } else if (n < 0 && err == ENOMEM) {
        return -1;
    }
    snprintf(name, sizeof(name), "%d/io", tid);
    n = walk_read_in(w, taskfd, name, fds != NULL ? &fds[2] : NULL, 0, &err);
    if (n >= 0 && parse_keyed(w->buf, (size_t)n, ps_io_keys, PS_IO_NKEYS, x, &found) == 0) {
        for (k = 0; k < PS_IO_NKEYS; k++)
            if (found & (1u << k)) {
                t->num[T_READ + k] = x[k];
                t->has |= 1u << (T_READ + k);
            }
    } else if (n < 0 && err == ENOMEM) {
        return -1;
    }
    if (w->wchan) {
        snprintf(name, sizeof(name), "%d/wchan", tid);
        n = walk_read_in(w, taskfd, name, fds != NULL ? &fds[3] : NULL, 0, &err);
        if (n >= 0 && walk_arena_put(w, w->buf, (size_t)n, &t->wchan) < 0)
            return -1;
        if (n < 0 && err == ENOMEM)
            return -1;
    }
    w->nthreads++;
    return 0;
}

/* The thread's run time and timeslice count (task/TID/schedstat); 0, or -1 when they
 * cannot be had (no file, or a kernel without sched_info: all zeros). */
static int walk_schedstat(ps_walker *w, int taskfd, int tid, int *kept, uint64_t *run_ns, uint64_t *slices)
{
    char name[64];
    ssize_t n;
    int err = 0;

    snprintf(name, sizeof(name), "%d/schedstat", tid);
    n = walk_read_in(w, taskfd, name, kept, 0, &err);
    if (n < 0 || parse_schedstat(w->buf, (size_t)n, run_ns, slices) < 0 || *slices == 0)
        return -1;
    return 0;
}

/* Give thread m again (it has not run since it was read). 0 or -1 (ENOMEM). */
static int walk_thread_again(ps_walker *w, const ps_thread_memo *m)
{
    size_t mark = w->arena_len;
    ps_thread *t;

    if (walk_grow((void **)&w->threads, w->nthreads, &w->cap_threads, 64, sizeof(*w->threads)) < 0)
        return -1;
    t = &w->threads[w->nthreads];
    t->tid = m->tid;
    t->has = m->has;
    memcpy(t->num, m->num, sizeof(t->num));
    t->wchan.at = PS_NONE;
    if (walk_arena_put(w, m->text, m->comm_len, &t->comm) < 0 ||
        walk_arena_put(w, m->text + m->comm_len, m->state_len, &t->state) < 0 ||
        (m->has_wchan && walk_arena_put(w, m->text + m->comm_len + m->state_len, m->wchan_len, &t->wchan) < 0)) {
        w->arena_len = mark;
        return -1;
    }
    w->nthreads++;
    return 0;
}

/* Remember thread t (just read) as m. 0 or -1 (ENOMEM). */
static int walk_thread_memo(const ps_walker *w, const ps_thread *t, uint64_t run_ns, uint64_t slices,
                            ps_thread_memo *m)
{
    size_t wlen = t->wchan.at == PS_NONE ? 0 : t->wchan.len;

    m->text = malloc(t->comm.len + t->state.len + wlen + 1);
    if (m->text == NULL)
        return -1;
    memcpy(m->text, w->arena + t->comm.at, t->comm.len);
    memcpy(m->text + t->comm.len, w->arena + t->state.at, t->state.len);
    if (wlen)
        memcpy(m->text + t->comm.len + t->state.len, w->arena + t->wchan.at, wlen);
    m->tid = t->tid;
    m->run_ns = run_ns;
    m->slices = slices;
    m->has = t->has;
    memcpy(m->num, t->num, sizeof(m->num));
    m->comm_len = t->comm.len;
    m->state_len = t->state.len;
    m->wchan_len = wlen;
    m->has_wchan = t->wchan.at != PS_NONE;
    return 0;
}

/* The threads of a process, as process-exporter reads them: each of task/, sorted by
 * tid; fewer than two read is none. Nothing is counted as an error (a thread may exit
 * at any time). A thread of a known process that has not run since the last read (its
 * schedstat unchanged) is given again from memory instead of read: most threads of a
 * server sleep, and each costs four files; one that ran at its last two probes is read
 * without that probe for the next PS_BUSY_SKIPS reads. A thread read again (it ran)
 * keeps its files (the four and its schedstat) open within the threads' budget, until it
 * is found idle or gone.
 * 0, or -1 on ENOMEM. */
static int walk_threads(ps_walker *w, ps_fact *f)
{
    char path[48];
    size_t i, first = w->nthreads, old = 0, nmemo = 0;
    ps_thread_memo *memo = NULL;
    ps_entry *e = walk_cache_find(w, f->pid);
    int fd, err = 0, rc;

    f->first_thread = first;
    f->nthreads = 0;
    walk_path(path, f->pid, "task");
    do
        fd = openat(w->rootfd, path, O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return 0;
    /* the tids, in w->pids (the walk's, free after it; walk_thread leaves it); their files
     * are opened under this task dir fd (TID/stat: fewer path components to look up) */
    w->npids = 0;
    rc = walk_each_entry(w, fd, walk_add_pid, NULL, &err);
    if (rc < 0) {
        close(fd);
        return err == ENOMEM ? -1 : 0;
    }
    if (w->npids > 1)
        qsort(w->pids, w->npids, sizeof(*w->pids), walk_cmp_int);
    if (e != NULL && (e->start != f->start || !w->is_procfs))
        e = NULL; /* another process' memory; or a fake tree, whose files change at will */
    if (e != NULL && (memo = calloc(w->npids ? w->npids : 1, sizeof(*memo))) == NULL) {
        close(fd);
        return -1;
    }
    for (i = 0; i < w->npids; i++) {
        int tid = w->pids[i];
        uint64_t run_ns = 0, slices = 0;
        size_t before = w->nthreads;
        ps_thread_memo *m = NULL;
        int timed = 0, skips = 0, runs = 0, keeps = 0, fds[PS_THREAD_FDS] = {-1, -1, -1, -1, -1};

        while (e != NULL && old < e->nmemo && e->memo[old].tid < tid)
            old++;
        if (e != NULL && old < e->nmemo && e->memo[old].tid == tid) {
            m = &e->memo[old];
            memcpy(fds, m->fd, sizeof(fds)); /* its kept files move to the new memo */
            keeps = m->keeps;
            memset(m->fd, -1, sizeof(m->fd));
            m->keeps = 0;
        }
        if (e != NULL && (m == NULL || m->skips == 0))
            timed = walk_schedstat(w, fd, tid, keeps ? &fds[PS_THREAD_FDS - 1] : NULL, &run_ns, &slices) == 0;
        if (timed && m != NULL && m->run_ns == run_ns && m->slices == slices) {
            walk_thread_unkeep(w, fds, &keeps); /* idle: its files go back to the budget */
            rc = walk_thread_again(w, m);
        } else {
            if (timed && m != NULL && !keeps && w->nkept_threads < w->keep_threads &&
                w->kept_fds < w->fd_budget) { /* its probe found it ran, and there is room: keep */
                keeps = 1;
                w->nkept_threads++;
            }
            rc = walk_thread(w, fd, tid, keeps ? fds : NULL);
            if (m != NULL && timed && m->slices != 0) /* it ran since its last probe */
                runs = m->runs < 2 ? m->runs + 1 : 2;
            if (m != NULL && !timed) { /* read without a probe: the last one stays the baseline
                                        * (values read since are what it shows if it did not run) */
                run_ns = m->run_ns;
                slices = m->slices;
                runs = m->runs;
                skips = m->skips > 0 ? m->skips - 1 : 0;
            } else if (runs == 2) {
                skips = PS_BUSY_SKIPS;
            }
        }
        if (rc == 0 && e != NULL && w->nthreads > before) {
            rc = walk_thread_memo(w, &w->threads[before], run_ns, slices, &memo[nmemo]);
            memo[nmemo].skips = skips;
            memo[nmemo].runs = runs;
            memo[nmemo].keeps = keeps;
            memcpy(memo[nmemo].fd, fds, sizeof(fds));
            if (rc == 0) {
                nmemo++;
                continue;
            }
        }
        walk_thread_unkeep(w, fds, &keeps); /* not remembered (gone, or no memory) */
        if (rc < 0) {
            walk_memo_close(w, memo, nmemo);
            walk_memo_free(memo, nmemo);
            close(fd);
            return -1;
        }
    }
    close(fd);
    if (e != NULL) {
        walk_memo_close(w, e->memo, e->nmemo); /* threads that exited */
        walk_memo_free(e->memo, e->nmemo);
        e->memo = memo;
        e->nmemo = nmemo;
    }
    f->nthreads = w->nthreads - first;
    if (f->nthreads < 2) { /* one thread is the process itself */
        w->nthreads = first;
        f->nthreads = 0;
    }
    return 0;
}

/* Still the process with this starttime? (read after the facts: if so, they are its) */
static int walk_still(ps_walker *w, ps_fact *f)
{
    ps_entry *e = walk_cache_find(w, f->pid);
    ps_stat st;
    ssize_t n;
    int err = 0;

    if (e != NULL && e->start != f->start)
        e = NULL;
    n = walk_read(w, e, e != NULL ? K_STAT : -1, f->pid, "stat", 0, &err);
    if (n < 0)
        return err == ENOMEM ? -1 : 0;
    return parse_stat(w->buf, (size_t)n, &st) == 0 && st.starttime == f->start;
}

static int walk_fact(ps_walker *w, ps_fact *f)
{
    size_t arena_mark = w->arena_len;
    int rc = 0;

    w->npending = 0;
    f->cmdline.at = f->exe.at = f->cgroup.at = PS_NONE;
    f->has_nofile = 0;
    f->gone = 0;
    f->first_thread = w->nthreads;
    f->nthreads = 0;
    if (f->impossible)
        rc = 1;
    if (rc == 0 && (f->want & PS_WANT_CMDLINE))
        rc = walk_fact_file(w, f->pid, "cmdline", 1, &f->cmdline);
    if (rc == 0 && (f->want & PS_WANT_EXE))
        rc = walk_exe(w, f->pid, &f->exe);
    if (rc == 0 && (f->want & PS_WANT_CGROUP))
        rc = walk_fact_file(w, f->pid, "cgroup", 0, &f->cgroup);
    if (rc == 0 && (f->want & PS_WANT_NOFILE))
        rc = walk_nofile(w, f);
    if (rc == 0 && (f->want & PS_WANT_THREADS) && walk_threads(w, f) < 0)
        return -1;
    if (rc == 0) {
        rc = walk_still(w, f);
        if (rc < 0)
            return -1;
        rc = !rc;
    }
    if (rc < 0)
        return -1;
    if (rc > 0) { /* gone, or another process now: nothing of it is kept */
        w->npending = 0;
        w->arena_len = arena_mark;
        f->cmdline.at = f->exe.at = f->cgroup.at = PS_NONE;
        f->has_nofile = 0;
        f->gone = 1;
        w->nthreads = f->first_thread;
        f->nthreads = 0;
        return 0;
    }
    walk_commit(w);
    return 0;
}

int walk_facts(ps_walker *w, ps_fact *facts, size_t n, int *err)
{
    size_t i;
    int rc = 0;

    walk_reset_output(w);
    walk_fd_budget(w);
    if (walk_open_root(w, err) < 0) { /* the root went away: every process with it */
        for (i = 0; i < n; i++) {
            facts[i].cmdline.at = facts[i].exe.at = facts[i].cgroup.at = PS_NONE;
            facts[i].has_nofile = 0;
            facts[i].gone = 1;
        }
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (walk_fact(w, &facts[i]) < 0) {
            *err = ENOMEM;
            rc = -1;
            break;
        }
    }
    walk_done_root(w);
    return rc;
}

/* ---- set-up -------------------------------------------------------------------------- */

void walk_close_all(ps_walker *w)
{
    walk_evict(w, 1);
    walk_close_fd(&w->rootfd);
}

int walk_init(ps_walker *w, const char *procfs, uint64_t page_size, size_t keep_open, size_t keep_threads,
              int wchan, int smaps, uint64_t smaps_max_rss)
{
    struct statfs sfs;
    struct stat st;
    char self[32], mine[32];
    ssize_t n;

    memset(w, 0, sizeof(*w));
    w->rootfd = -1;
    w->page_size = page_size;
    w->keep_open = keep_open;
    w->keep_threads = keep_threads;
    w->wchan = wchan;
    w->smaps = smaps;
    w->smaps_max_rss = smaps_max_rss;
    w->procfs = strdup(procfs);
    w->buf_cap = BUF_FIRST;
    w->buf = malloc(w->buf_cap);
    w->dents = malloc(DENTS_SIZE);
    if (w->procfs == NULL || w->buf == NULL || w->dents == NULL || walk_cache_grow(w) < 0) {
        walk_free(w);
        errno = ENOMEM;
        return -1;
    }
    /* An unreadable root is no error yet: read() reports it. */
    w->rootfd = openat(AT_FDCWD, procfs, O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
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
    free(w->dents);
    free(w->records);
    free(w->unreadable);
    free(w->threads);
    free(w->arena);
    free(w->pids);
    w->buckets = NULL;
    w->procfs = w->buf = w->dents = w->arena = NULL;
    w->records = NULL;
    w->unreadable = NULL;
    w->threads = NULL;
    w->pids = NULL;
    w->nbuckets = w->cap_records = w->cap_unreadable = w->arena_cap = w->cap_pids = 0;
    w->cap_threads = 0;
    w->buf_cap = 0;
}
