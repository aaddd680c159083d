/* exporter._reader: the C reader of procsnap. It reads and parses /proc; it decides
 * nothing about identity, exec, memoisation or what an error means (exporter/tracker.py).
 *
 * parse.c  pure parsers of /proc text (never read outside the buffer they are given)
 * walk.c   the getdents64 walk, the per-pid reads, the per-pid cache of kept-open files,
 *          and the reads of static facts for the pids the tracker asks for; runs with the
 *          GIL released and touches no Python object
 * module.c the module table and the Reader type; builds Python objects afterwards
 *
 * exporter/procfs.py is the parser twin: the same parsing rules, held equal by the tests.
 */
#ifndef PROCSNAP_READER_H
#define PROCSNAP_READER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A file is read whole: a read that fills the buffer is done again with a bigger one, up
 * to this size. cmdline is cut there (as process-exporter reads it); any other file that
 * big is malformed. */
#define PS_FILE_MAX (1u << 20)
#define PS_EXE_CAP 4096 /* PATH_MAX */

#define PS_ERRNO_MAX 4095    /* errno values are below this (MAX_ERRNO) */
#define PS_MALFORMED (-1)    /* a reason beside the errnos: the file does not parse */
#define PS_PROC_SUPER_MAGIC 0x9fa0
#define PS_KEPT_FDS 5        /* per process: stat, status, io, wchan, schedstat */
#define PS_THREAD_FDS 5      /* per thread: task/TID/{stat,status,io,wchan,schedstat} */
#define PS_FD_RESERVE 512    /* descriptors never kept: left to the rest of procsnap (reader.py FD_RESERVE) */

/* ---- parse.c ------------------------------------------------------------------- */

/* The /proc/PID/stat fields we use; comm and state are spans of the parsed buffer. */
typedef struct {
    size_t comm_off, comm_len;
    size_t state_off, state_len;
    uint64_t ppid, tty_nr, flags, minflt, majflt, utime, stime, num_threads, starttime;
    uint64_t cminflt, cmajflt, cutime, cstime; /* of the children it reaped */
    uint64_t vsize, rss;
    int has_vsize, has_rss;
    uint64_t mark; /* exec evidence, 0 when the kernel hid it (see parse_stat) */
} ps_stat;

enum { PS_ST_UID, PS_ST_VMSWAP, PS_ST_CTXV, PS_ST_CTXNV, PS_ST_NKEYS };
enum { PS_IO_READ, PS_IO_WRITE, PS_IO_NKEYS };
enum { PS_SM_PSS, PS_SM_SWAPPSS, PS_SM_NKEYS };

int parse_uint(const char *buf, size_t off, size_t len, uint64_t *out);
int parse_stat(const char *buf, size_t n, ps_stat *out);
int parse_keyed(const char *buf, size_t n, const char *const *keys, int nkeys, uint64_t *out,
                unsigned *found);
int parse_limits_nofile(const char *buf, size_t n, uint64_t *out);
int parse_effective_uid(const char *buf, size_t n, uint64_t *out);
int parse_schedstat(const char *buf, size_t n, uint64_t *run_ns, uint64_t *slices);

extern const char *const ps_status_keys[PS_ST_NKEYS];
extern const char *const ps_io_keys[PS_IO_NKEYS];
extern const char *const ps_smaps_keys[PS_SM_NKEYS];

#define PS_UNLIMITED UINT64_MAX /* RLIM_INFINITY, and "unlimited" in a limits file */

/* ---- walk.c -------------------------------------------------------------------- */

/* Numeric fields of a record, in the order of exporter/reader.py's record layout after
 * pid, ppid, comm and state. */
enum {
    F_PPID, F_FLAGS, F_START, F_UTIME, F_STIME, F_MINFLT, F_MAJFLT, F_THREADS, F_VSIZE,
    F_RSS, F_UID, F_SWAP, F_CTXV, F_CTXNV, F_READ, F_WRITE, F_OPEN_FDS, F_TTY, F_MARK, F_EUID,
    F_PSS, F_SWAP_PSS, F_CUTIME, F_CSTIME, F_CMINFLT, F_CMAJFLT, F_COUNT
};

/* Text of a process that rarely changes (comm, wchan) and the Python str made of it,
 * reused while the bytes are the same (module.c, only touched with the GIL). */
typedef struct {
    char *bytes;
    size_t len;
    struct _object *obj;
} ps_text;

struct ps_thread_memo;

/* What status, io and wchan gave a single-threaded process at its last full read, given
 * again while the process has not run since (walk_process): the same run time and
 * timeslice count in PID/schedstat, the same state (not R) and rss in stat. Read whole
 * every PS_IDLE_EVERY walks all the same (staggered by pid): the kernel's swap and rss
 * counters are per-CPU, and a few pages swapped out of a sleeping process may move VmSwap
 * before the rss that stat shows. */
#define PS_IDLE_EVERY 16
#define PS_IDLE_FIELDS 7 /* the status and io fields: F_UID, F_SWAP, F_CTXV, F_CTXNV, F_READ, F_WRITE, F_EUID */
typedef struct {
    int valid;
    uint64_t run_ns, slices, rss;
    char state;
    uint32_t has;                 /* bit i: field i of PS_IDLE_FIELDS was read */
    uint64_t num[PS_IDLE_FIELDS];
    int errs[3], nerrs;           /* what reading them failed with, counted again */
    char *wchan;                  /* its bytes (NULL: none read) */
    size_t wchan_len;
} ps_idle_memo;

/* A cache entry: one per pid the last walk recorded. It keeps files open (a syscall
 * saving) and the Python strs of its comm and wchan. */
typedef struct ps_entry {
    struct ps_entry *next; /* hash chain; the evicted list */
    int pid;
    unsigned gen;          /* walk generation that last recorded this pid */
    int fd[PS_KEPT_FDS];   /* kept stat, status, io, wchan, schedstat; -1 when not open */
    int keeps;             /* counts against the keep-open budget */
    uint64_t start;        /* starttime the kept files belong to */
    ps_text comm, wchan;
    struct ps_thread_memo *memo; /* its threads as last read (walk_threads), sorted by tid */
    size_t nmemo;
    ps_idle_memo idle;
} ps_entry;

/* A span of the text arena; at == PS_NONE means "not available" (None). */
typedef struct {
    size_t at, len;
} ps_span;

#define PS_NONE ((size_t)-1)
#define PS_PENDING_MAX 16 /* more errors than files a process has */

typedef struct {
    int pid;
    ps_entry *entry;
    uint32_t has; /* bit i set: numeric field i is not None */
    uint64_t num[F_COUNT];
    ps_span comm, state, wchan; /* wchan: PS_NONE when unreadable */
} ps_record;

/* One pid the tracker asks facts of (read_facts). */
enum { PS_WANT_CMDLINE = 1, PS_WANT_EXE = 2, PS_WANT_CGROUP = 4, PS_WANT_NOFILE = 8, PS_WANT_THREADS = 16 };

/* Numeric fields of a thread (task/TID/{stat,status,io}), in exporter/reader.py's
 * THREAD_FIELDS order after tid, comm and state. */
enum { T_UTIME, T_STIME, T_MINFLT, T_MAJFLT, T_CTXV, T_CTXNV, T_READ, T_WRITE, T_COUNT };

typedef struct {
    int tid;
    uint32_t has; /* bit i set: field i is not None */
    uint64_t num[T_COUNT];
    ps_span comm, state, wchan; /* wchan: PS_NONE when unreadable */
} ps_thread;

/* A thread as last read, given again while it has not run since: the same run time and
 * timeslice count in task/TID/schedstat mean the same stat, status, io and wchan (a
 * thread that does not run changes none of them). A thread seen running at its last two
 * probes is read without one for the next PS_BUSY_SKIPS reads (it likely runs again; the
 * probe is a fifth file), its last probe kept to compare the next one with. A thread read
 * again (it ran) keeps its files open while the threads' budget and the fd budget allow. */
#define PS_BUSY_SKIPS 2
typedef struct ps_thread_memo {
    int tid;
    int skips;              /* reads left without a probe */
    int runs;               /* consecutive probes that found it had run (at most 2) */
    uint64_t run_ns, slices;
    uint32_t has;
    uint64_t num[T_COUNT];
    char *text;             /* comm, state and wchan back to back */
    size_t comm_len, state_len, wchan_len;
    int has_wchan;
    int keeps;              /* counts against the threads' keep-open budget */
    int fd[PS_THREAD_FDS];  /* kept stat, status, io, wchan, schedstat; -1 when not open */
} ps_thread_memo;

typedef struct {
    int pid;
    unsigned want;
    uint64_t start;  /* the identity's starttime: the facts are checked to be its */
    int impossible;  /* the starttime asked for does not fit 64 bits: no process has it */
    int gone;        /* the process exited (or the pid was reused) meanwhile */
    ps_span cmdline, exe, cgroup;
    int has_nofile;
    uint64_t nofile; /* soft RLIMIT_NOFILE; PS_UNLIMITED when unlimited */
    size_t first_thread, nthreads; /* in w->threads; nthreads 0: not asked or unreadable */
} ps_fact;

typedef struct {
    int pid;
    int err; /* errno, or PS_MALFORMED */
} ps_unreadable;

typedef struct {
    char *procfs;         /* path of the root */
    int rootfd;           /* kept open on a real procfs; -1 otherwise */
    int is_procfs;        /* root of a mounted procfs: fd count from st_size, keep fds */
    int own_procfs;       /* our own pid namespace: prlimit works */
    uint64_t page_size;
    size_t keep_open;     /* processes whose files this reader may keep open */
    size_t keep_threads;  /* threads (seen running) whose files it may keep open */
    size_t fd_budget;     /* kept fds at most: RLIMIT_NOFILE's soft limit - PS_FD_RESERVE */
    size_t kept_fds;      /* kept fds now (processes' and threads') */
    int wchan;            /* read PID/wchan and task/TID/wchan (else the field is None) */
    int smaps;            /* read PID/smaps_rollup of processes up to smaps_max_rss */
    uint64_t smaps_max_rss;
    unsigned gen;
    /* the cache */
    ps_entry **buckets;
    size_t nbuckets, nentries, nkept, nkept_threads;
    ps_entry *evicted;    /* unlinked by the walk; freed by the caller with the GIL */
    /* per-call output */
    ps_record *records;
    size_t nrecords, cap_records;
    ps_unreadable *unreadable;
    size_t nunreadable, cap_unreadable;
    ps_thread *threads;   /* of read_facts' PS_WANT_THREADS */
    size_t nthreads, cap_threads;
    char *arena;          /* text of the output: comm, state, facts */
    size_t arena_len, arena_cap;
    uint32_t errors[PS_ERRNO_MAX + 1];
    uint32_t malformed;
    int pending[PS_PENDING_MAX]; /* errors of the process being read (walk_count) */
    int npending;
    /* scratch */
    char *buf;            /* grows up to PS_FILE_MAX */
    size_t buf_cap;
    size_t last_len;      /* bytes of the keyed file (status, io) last read into buf */
    int *pids;
    size_t npids, cap_pids;
    char *dents;
} ps_walker;

/* walk_init: zero + allocate scratch; 0 or -1 (errno set). wchan: read the wchan files;
 * smaps: read smaps_rollup (proportional memory) of processes whose rss is at most
 * smaps_max_rss bytes (the read walks every page table of the process). */
int walk_init(ps_walker *w, const char *procfs, uint64_t page_size, size_t keep_open, size_t keep_threads,
              int wchan, int smaps, uint64_t smaps_max_rss);
/* walk_collect: one walk, GIL released. 0 ok; -1 with *err = errno (root unreadable,
 * or ENOMEM). */
int walk_collect(ps_walker *w, int *err);
/* walk_facts: the facts asked for in facts[0..n) (their pid, want and start set). 0 or
 * -1 with *err = ENOMEM. */
int walk_facts(ps_walker *w, ps_fact *facts, size_t n, int *err);
/* Drop what the per-call output holds (errors, arena) before a call. */
void walk_reset_output(ps_walker *w);
/* Close every kept fd and the root fd, unlink every entry to w->evicted. */
void walk_close_all(ps_walker *w);
/* Free C memory of one entry (its Python object must already be released). */
void walk_entry_free(ps_entry *e);
void walk_free(ps_walker *w);

#endif
