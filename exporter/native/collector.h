/* exporter._collector: one batched snapshot of all processes under a procfs root.
 *
 * parse.c  pure parsers of /proc text (never read outside the buffer they are given)
 * walk.c   the getdents64 walk, per-pid reads, the per-pid cache of kept fds; runs with
 *          the GIL released and touches no Python object
 * module.c the module table and the Collector type; builds Python objects afterwards
 *
 * The Python twin (exporter/procfs.py) is the oracle: same files, caps, parsing rules,
 * error accounting.
 */
#ifndef PROCSNAP_COLLECTOR_H
#define PROCSNAP_COLLECTOR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One read of at most this many bytes per file (as exporter/procfs.py). */
#define PS_STAT_CAP 4096
#define PS_STATUS_CAP 8192
#define PS_IO_CAP 4096
#define PS_LIMITS_CAP 8192
#define PS_CMDLINE_CAP 65536
#define PS_CGROUP_CAP 8192
#define PS_EXE_CAP 4096 /* os.readlink's buffer (MAXPATHLEN) */

#define PS_PF_KTHREAD 0x00200000ULL
#define PS_ERRNO_MAX 4095 /* errno values are below this (MAX_ERRNO) */
#define PS_PROC_SUPER_MAGIC 0x9fa0
#define PS_KEPT_FDS 3 /* per process: stat, status, io */

/* ---- parse.c ------------------------------------------------------------------- */

/* A parsed unsigned decimal. v is the value modulo 2^64; big is set when the digits do
 * not fit in 64 bits (Python's int() would still take them): then the digits are at
 * [off, off+len) of the parsed buffer. */
typedef struct {
    uint64_t v;
    uint32_t off;
    uint32_t len;
    int big;
} ps_num;

/* The /proc/PID/stat fields we use; spans are offsets into the parsed buffer. */
typedef struct {
    size_t comm_off, comm_len;
    size_t state_off, state_len;
    ps_num ppid, tty_nr, flags, minflt, majflt, utime, stime, num_threads, starttime;
    ps_num vsize, rss;
    int has_vsize, has_rss;
} ps_stat;

enum { PS_ST_UID, PS_ST_VMSWAP, PS_ST_CTXV, PS_ST_CTXNV, PS_ST_NKEYS };
enum { PS_IO_READ, PS_IO_WRITE, PS_IO_NKEYS };

int parse_uint(const char *buf, size_t off, size_t len, ps_num *out);
int parse_stat(const char *buf, size_t n, ps_stat *out);
int parse_keyed(const char *buf, size_t n, const char *const *keys, int nkeys, ps_num *out,
                unsigned *found);
int parse_limits_nofile(const char *buf, size_t n, ps_num *out, int *unlimited);
size_t parse_cmdline_count(const char *buf, size_t n, size_t *m);
int parse_cmdline_next(const char *buf, size_t n, size_t *pos, size_t *arg_off, size_t *arg_len);

extern const char *const ps_status_keys[PS_ST_NKEYS];
extern const char *const ps_io_keys[PS_IO_NKEYS];

/* ---- walk.c -------------------------------------------------------------------- */

/* Numeric fields of a record, in the order the walk sets them. */
enum {
    F_PPID, F_TTY, F_FLAGS, F_MINFLT, F_MAJFLT, F_UTIME, F_STIME, F_THREADS, F_START,
    F_VSIZE, F_RSS, F_UID, F_SWAP_KB, F_CTXV, F_CTXNV, F_READ, F_WRITE, F_OPEN_FDS,
    F_MAX_FDS, F_COUNT
};

/* A cache entry: one per pid that was recorded by the last walk. Python objects in it
 * are only touched with the GIL held (module.c). */
typedef struct ps_entry {
    struct ps_entry *next; /* hash chain; the evicted list */
    int pid;
    unsigned gen;          /* walk generation that last recorded this pid */
    int fd[3];             /* kept stat, status, io; -1 when not open */
    int keeps;             /* counts against the fd budget */
    /* identity of the static facts */
    uint64_t start;
    char *start_big;       /* digits when starttime does not fit 64 bits */
    char *comm;
    size_t comm_len;
    int facts_ok;          /* cmdline/exe/cgroup below belong to (start, comm) */
    int nofile_known;      /* nofile holds this identity's soft RLIMIT_NOFILE (prlimit) */
    uint64_t nofile;
    int comm_stale;        /* comm_obj is of an older comm */
    /* Python objects (PyObject *; only touched with the GIL, by module.c) */
    struct _object *comm_obj, *cmdline_obj, *exe_obj, *cgroup_obj;
} ps_entry;

/* A span of the text arena; at == SIZE_MAX means "not available" (None). */
typedef struct {
    size_t at, len;
} ps_span;

#define PS_NONE ((size_t)-1)
#define PS_MALFORMED (-1)     /* an error reason beside the errnos */
#define PS_PENDING_MAX 16     /* more errors than files a process has */
#define PS_NOFILE_EVERY 16    /* prlimit a known process every 16th walk (procfs.py too) */

typedef struct {
    int pid;
    ps_entry *entry;
    uint32_t has;       /* bit i set: numeric field i is not None */
    uint32_t bigmask;   /* bit i set: field i does not fit 64 bits: see ps_big */
    uint64_t num[F_COUNT];
    int max_from_prlimit;
    ps_span state;
    int facts_new;      /* static facts read by this walk: raw bytes below */
    ps_span cmdline, exe, cgroup;
} ps_record;

/* The digits of a field that does not fit 64 bits (only garbled fixtures have them). */
typedef struct {
    size_t rec;
    int field;
    ps_span digits;
} ps_big;

typedef struct {
    char *procfs;         /* path of the root */
    int rootfd;           /* kept open on a real procfs; -1 otherwise */
    int is_procfs;        /* root of a mounted procfs: fd count from st_size, keep fds */
    int own_procfs;       /* our own pid namespace: prlimit works */
    unsigned gen;
    /* the cache */
    ps_entry **buckets;
    size_t nbuckets, nentries;
    size_t budget;        /* processes whose files may be kept open (all walkers) */
    ps_entry *evicted;    /* unlinked by the walk; freed by the caller with the GIL */
    /* per-walk output */
    ps_record *records;
    size_t nrecords, cap_records;
    char *arena;          /* text of the records: state, new static facts, big digits */
    size_t arena_len, arena_cap;
    ps_big *bigs;         /* in record order */
    size_t nbigs, cap_bigs;
    uint32_t errors[PS_ERRNO_MAX + 1];
    uint32_t malformed;
    int pending[PS_PENDING_MAX]; /* errors of the process being read (walk_count) */
    int npending;
    /* scratch */
    char *buf;            /* PS_CMDLINE_CAP bytes */
    char *stat_buf;       /* PS_STAT_CAP bytes */
    int *pids;
    size_t npids, cap_pids;
    char *dents;
} ps_walker;

/* walk_init: zero + allocate scratch; 0 or -1 (errno set). */
int walk_init(ps_walker *w, const char *procfs);
/* walk_collect: one walk, GIL released. 0 ok; -1 with *err = errno (root unreadable,
 * or ENOMEM). */
int walk_collect(ps_walker *w, int *err);
/* Close every kept fd and the root fd, unlink every entry to w->evicted. */
void walk_close_all(ps_walker *w);
/* Free C memory of one entry (its Python objects must already be released). */
void walk_entry_free(ps_entry *e);
void walk_free(ps_walker *w);

#endif
