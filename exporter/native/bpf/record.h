/* The records procsnap's BPF task iterator writes (bpf_seq_write) and the loader reads:
 * one ps_bpf_proc per thread-group leader, one ps_bpf_thread per other thread (their
 * counters are summed per process in user space, as /proc sums them). Raw kernel units:
 * nanoseconds, pages, counts. Shared by procsnap.bpf.c and loader.c. */
#ifndef PROCSNAP_BPF_RECORD_H
#define PROCSNAP_BPF_RECORD_H

#include <linux/types.h>

#define PS_BPF_PROC 0x50524f43u   /* "PROC" */
#define PS_BPF_THREAD 0x54485244u /* "THRD" */
#define PS_BPF_STACK 8            /* kernel return addresses kept for wchan */

/* ps_bpf_proc.has */
#define PS_BPF_HAS_MM 1u      /* a user mm: vsize, rss, swap, mm addresses are read */
#define PS_BPF_HAS_IO 2u      /* task_io_accounting exists (CONFIG_TASK_IO_ACCOUNTING) */
#define PS_BPF_HAS_FDS 4u     /* open_fds counted (else the loader asks /proc) */
#define PS_BPF_HAS_SIGNAL 8u  /* signal_struct read */
#define PS_BPF_HAS_STACK 16u  /* stack[0..nstack) read (the task was asleep) */
#define PS_BPF_WQ_IDLE 32u    /* a workqueue worker: comm + "-" + wq_desc */
#define PS_BPF_WQ_BUSY 64u    /* ... running a work item: comm + "+" + wq_desc */
#define PS_BPF_STACK_SAME 128u /* asleep, not switched since its last walk: not walked */

#define PS_BPF_COMM 64 /* proc_task_name()'s buffer */

struct ps_bpf_proc {
    __u32 kind; /* PS_BPF_PROC */
    __u32 pid;  /* tgid, in the reader's pid namespace */
    __u32 ppid;
    __u32 flags;
    __u32 state;      /* task->__state */
    __u32 exit_state;
    __u32 uid, euid;
    __u32 nr_threads;
    __u32 tty_nr;     /* new_encode_dev(tty_devnum()), as stat shows it */
    __u32 has;        /* PS_BPF_HAS_* */
    __u32 nstack;
    __u64 open_fds;
    __u64 nofile; /* signal->rlim[RLIMIT_NOFILE].rlim_cur (soft; ~0: unlimited) */
    __u64 start_boottime;                /* ns */
    __u64 utime, stime, sum_exec;        /* the leader's own, ns */
    __u64 sig_utime, sig_stime, sig_sum; /* of its exited threads, ns */
    __u64 prev_utime, prev_stime;        /* signal->prev_cputime, ns */
    __u64 min_flt, maj_flt;              /* the leader's + exited threads' */
    __u64 cutime, cstime;                /* reaped children, ns */
    __u64 cmin_flt, cmaj_flt;
    __u64 nvcsw, nivcsw;                 /* the leader's own */
    __u64 read_bytes, write_bytes;       /* the leader's + exited threads' */
    __u64 total_vm, rss, swapents;       /* pages; rss: the approximate counters */
    __u64 start_code, end_code, start_stack, arg_start, arg_end, env_end;
    __u64 stack[PS_BPF_STACK];
    char comm[PS_BPF_COMM]; /* a kernel thread's full name (get_kthread_comm) */
    char wq_desc[32];       /* a workqueue worker's description (wq_worker_comm) */
};

struct ps_bpf_thread {
    __u32 kind; /* PS_BPF_THREAD */
    __u32 pid;  /* its tgid */
    __u64 utime, stime, sum_exec;
    __u64 min_flt, maj_flt;
    __u64 read_bytes, write_bytes;
};

#endif
