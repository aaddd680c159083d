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
    void *comm_obj, *wchan_obj; /* owned by bpfmodule.c: the strs, reused while equal */
} psb_proc;

typedef struct psb psb;

/* psb_open: load and attach. procfs: the root of this pid namespace's /proc (fallbacks
 * are read there); wchan: read kernel stacks (wchan); smaps: read smaps_rollup of
 * processes with rss <= smaps_max_rss; reject: make the verifier refuse the program
 * (tests). 0, or -errno with a message in msg. */
int psb_open(psb **out, const char *procfs, uint64_t page_size, int wchan, int smaps, uint64_t smaps_max_rss,
             int reject, char *msg, size_t msglen);
/* One read. 0, or -1 with *err = errno. Afterwards psb_procs() holds the processes and
 * psb_released() the objects of identities that are gone (to be released by the caller). */
int psb_collect(psb *b, int *err);
psb_proc *psb_procs(psb *b, size_t *n);
void **psb_released(psb *b, size_t *n);
const uint32_t *psb_errors(psb *b, uint32_t *malformed); /* [PS_ERRNO_MAX + 1] of the last read */
/* Facts of the load (kernel features in use), as "key=value" lines. */
const char *psb_describe(psb *b);
void psb_close(psb *b); /* detach and free; the objects must have been released */

#endif
