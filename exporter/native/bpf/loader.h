/* The BPF backend's loader: libbpf load of procsnap.bpf.c, one iterator link made once,
 * and per read an iterator fd (bpf_iter_create + read + close) whose records become
 * records of exporter/reader.py's layout. No Python API here: psb_collect runs with the
 * GIL released (bpfmodule.c builds the Python objects afterwards). */
#ifndef PROCSNAP_BPF_LOADER_H
#define PROCSNAP_BPF_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "../reader.h"
#include "record.h"

/* One process of a read, in pid order; also the state kept for the next read. */
typedef struct {
    int pid;
    uint32_t has; /* bit i: numeric field i (reader.h F_*) is not None */
    uint64_t num[F_COUNT];
    char comm[PS_BPF_COMM];
    size_t comm_len;
    char state;
    uint64_t start_ns;       /* with pid, the identity the state below belongs to */
    uint64_t prev_u, prev_s; /* cputime_adjust's prev (ns), procsnap's own */
    uint64_t wchan_ip;       /* 0: no address ("0"), see wchan */
    const char *wchan;       /* text (kallsyms or /proc), NULL: not read (None) */
    size_t wchan_len;
    uint64_t wchan_switches; /* the context switches (+1) at the stack walk wchan is of; 0: none */
    uint64_t nofile;         /* soft RLIMIT_NOFILE (~0: unlimited), when has_nofile */
    int has_nofile;
    int same;                /* every field as at the last read: its record object stands */
    void *comm_obj, *wchan_obj, *rec_obj; /* owned by bpfmodule.c: the strs and the record, reused while equal */
} psb_proc;

typedef struct psb psb;

/* psb_open: load and attach. procfs: the root of this pid namespace's /proc (fallbacks
 * are read there); wchan: read kernel stacks (wchan); smaps: read smaps_rollup of
 * processes with rss <= smaps_max_rss; reject (tests): 1 the verifier refuses the program,
 * 2 only the program that keeps stacks in task storage. 0, or -errno with a message in msg. */
int psb_open(psb **out, const char *procfs, uint64_t page_size, int wchan, int smaps, uint64_t smaps_max_rss,
             int reject, char *msg, size_t msglen);
/* One read. 0, or -1 with *err = errno. Afterwards psb_procs() holds the processes and
 * psb_released() the objects of identities that are gone (to be released by the caller). */
int psb_collect(psb *b, int *err);
psb_proc *psb_procs(psb *b, size_t *n);
void **psb_released(psb *b, size_t *n);
const uint32_t *psb_errors(psb *b, uint32_t *malformed); /* [PS_ERRNO_MAX + 1] of the last read */
/* Kernel stacks of the last read: walked; not walked because unchanged; of those, the ones
 * whose last walk the loader does not know (a failed read between: /proc/PID/wchan read). */
void psb_stacks(psb *b, uint32_t *walked, uint32_t *kept, uint32_t *lost);
/* Facts of the load (kernel features in use), as "key=value" lines. */
const char *psb_describe(psb *b);
void psb_close(psb *b); /* detach and free; the objects must have been released */

#endif
