// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* procsnap's BPF task iterator (iter/task, Linux >= 5.8): one fixed-size record per
 * thread-group leader, and a small one per other thread, written with bpf_seq_write to
 * the iterator's seq_file; the loader (loader.c) reads them from an iterator fd, sums the
 * threads into their process and derives what /proc would show (state letter, clock
 * ticks, cputime_adjust, bytes).
 *
 * What each field is, is what /proc computes it from (fs/proc/array.c, base.c, fd.c):
 * stat's whole-process sums (signal_struct plus every live thread), status's leader-only
 * context switches, io's sums, the fd directory's size (the popcount of open_fds), and
 * limits' soft "Max open files". A sleeping leader's kernel stack (wchan) is walked again
 * only after it ran (task storage for tracing programs, Linux >= 5.12; without it, every
 * read).
 * Field layout differences between kernels are CO-RE relocations (task_types.h); fields
 * that some kernels lack are read behind bpf_core_field_exists().
 *
 * Dual-licensed so that the kernel accepts its GPL-only helpers (bpf_get_task_stack).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "task_types.h"
#include "record.h"

#define PF_WQ_WORKER 0x00000020u
#define PF_KTHREAD 0x00200000u
#define TASK_WAKING 0x0200u
#define PIDTYPE_TGID 1
#define MM_FILEPAGES 0
#define MM_ANONPAGES 1
#define MM_SWAPENTS 2
#define MM_SHMEMPAGES 3
#define RLIMIT_NOFILE 7
#define FD_WORDS 128 /* words of open_fds counted here (8192 slots) */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader before the load. */
const volatile __u32 want_stack = 0; /* read kernel stacks of sleeping leaders (wchan) */
/* the scheduler's and the lock functions' text (kallsyms), which get_wchan() skips */
const volatile __u64 sched_lo = 0, sched_hi = 0, lock_lo = 0, lock_hi = 0;
const volatile __u32 reject = 0;     /* tests: 1 the verifier rejects the program, 2 with use_seen */
const volatile __u32 use_seen = 1;   /* 0: no task storage for this program (Linux < 5.12) */

struct scratch {
    struct ps_bpf_proc proc;
    struct ps_bpf_thread thread;
    unsigned long fds[FD_WORDS];
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct scratch);
} scratch SEC(".maps");

/* A leader's context switches (+1) when its stack was last walked, kept with the task
 * (task local storage: freed with it), and the read (iterator session) that walked it. A
 * task asleep now that has not switched since has the same stack: its walk is skipped and
 * the loader keeps the wchan it found then. Within one read the program can run twice on
 * a task (a record that did not fit the read's buffer is dropped and made again): it
 * walks again then, as the loader never got the first record. */
struct stack_seen {
    __u64 switches;
    __u64 session;
};

struct {
    __uint(type, BPF_MAP_TYPE_TASK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct stack_seen);
} seen SEC(".maps");

/* The level of the reader's pid namespace: the iterator walks the pids of the namespace
 * of the process that reads it (procsnap), and /proc shows their numbers there. Found at
 * the first task, from the reading task (current), then kept. */
__u32 ns_level_plus1 = 0;

static __always_inline __u32 reader_level(void)
{
    __u32 level = ns_level_plus1;

    if (level == 0) {
        struct task_struct *me = (struct task_struct *)bpf_get_current_task();
        level = BPF_CORE_READ(me, thread_pid, level) + 1;
        ns_level_plus1 = level;
    }
    return (level - 1) & 31;
}

/* The number of pid p at namespace level ns_level (0: not in it), as pid_nr_ns(). */
static __always_inline __u32 pid_at_level(struct pid *p, __u32 ns_level)
{
    __u32 level, nr = 0;

    if (p == NULL)
        return 0;
    level = BPF_CORE_READ(p, level);
    if (level < ns_level)
        return 0;
    bpf_probe_read_kernel(&nr, sizeof(nr),
                          (void *)&p->numbers[0] + (__u64)ns_level * bpf_core_type_size(struct upid));
    return nr;
}

/* The thread-group id of t in the reader's namespace. */
static __always_inline __u32 tgid_of(struct task_struct *t)
{
    __u32 level = reader_level();

    if (level == 0)
        return t->tgid;
    return pid_at_level(BPF_CORE_READ(t, signal, pids[PIDTYPE_TGID]), level);
}

static __always_inline __u64 positive(__s64 v)
{
    return v > 0 ? (__u64)v : 0;
}

static __always_inline void read_mm(struct ps_bpf_proc *r, struct mm_struct *mm)
{
    r->total_vm = mm->total_vm;
    if (bpf_core_field_exists(((struct mm_struct___pre62 *)mm)->rss_stat)) {
        long c[4] = {};
        bpf_probe_read_kernel(c, sizeof(c), &((struct mm_struct___pre62 *)mm)->rss_stat.count);
        r->rss = (c[MM_FILEPAGES] > 0 ? c[MM_FILEPAGES] : 0) + (c[MM_ANONPAGES] > 0 ? c[MM_ANONPAGES] : 0) +
                 (c[MM_SHMEMPAGES] > 0 ? c[MM_SHMEMPAGES] : 0);
        r->swapents = c[MM_SWAPENTS] > 0 ? c[MM_SWAPENTS] : 0;
    } else {
        /* get_mm_rss(): percpu_counter_read_positive() of each, as stat shows it (the
         * elements' offsets are relocated with the running kernel's percpu_counter size) */
        r->rss = positive(mm->rss_stat[MM_FILEPAGES].count) + positive(mm->rss_stat[MM_ANONPAGES].count) +
                 positive(mm->rss_stat[MM_SHMEMPAGES].count);
        r->swapents = positive(mm->rss_stat[MM_SWAPENTS].count);
    }
    r->start_code = mm->start_code;
    r->end_code = mm->end_code;
    r->start_stack = mm->start_stack;
    r->arg_start = mm->arg_start;
    r->arg_end = mm->arg_end;
    r->env_end = mm->env_end;
    r->has |= PS_BPF_HAS_MM;
}

/* bitmap_weight(open_fds, max_fds), as the size of /proc/PID/fd (Linux >= 6.2). The
 * table grows in powers of two past the highest fd: up to FD_WORDS * 64 = 8192 slots it is
 * counted here, beyond (rare) the loader asks /proc. */
static __always_inline void read_fds(struct ps_bpf_proc *r, struct files_struct *files, unsigned long *buf)
{
    struct fdtable *fdt;
    unsigned long *bits, w;
    __u32 max_fds, j;
    __u64 count = 0, words;

    if (files == NULL) { /* a zombie */
        r->has |= PS_BPF_HAS_FDS;
        return;
    }
    fdt = files->fdt;
    if (fdt == NULL)
        return;
    max_fds = fdt->max_fds;
    bits = fdt->open_fds;
    words = (max_fds + 63) / 64;
    asm volatile("" : "+r"(words)); /* the bound check below on this register, unsigned */
    if (words > FD_WORDS || words == 0 || bits == NULL)
        return;
    if (bpf_probe_read_kernel(buf, words * sizeof(*buf), bits) < 0)
        return;
#pragma clang loop unroll(disable)
    for (j = 0; j < FD_WORDS; j++) {
        if (j >= words)
            break;
        w = buf[j];
        if (j == words - 1 && (max_fds & 63)) /* bits past max_fds are not fds */
            w &= (1ul << (max_fds & 63)) - 1;
        count += __builtin_popcountl(w);
    }
    r->open_fds = count;
    r->has |= PS_BPF_HAS_FDS;
}

static __always_inline int in_sched(__u64 a)
{
    return (a >= sched_lo && a < sched_hi) || (a >= lock_lo && a < lock_hi);
}

static __always_inline void read_tty(struct ps_bpf_proc *r, struct tty_struct *tty)
{
    __u32 major, minor;

    if (tty == NULL)
        return;
    /* tty_devnum(): MKDEV(driver->major, driver->minor_start) + index */
    major = tty->driver->major;
    minor = tty->driver->minor_start + tty->index;
    major += minor >> 20;
    minor &= 0xfffff;
    r->tty_nr = (minor & 0xff) | (major << 8) | ((minor & ~0xffu) << 12); /* new_encode_dev() */
}

/* proc_task_name(): a kernel thread's full name (its comm is cut at 15 bytes), and a
 * workqueue worker's description of its latest work item (the loader joins them). */
static __always_inline void read_kthread_name(struct ps_bpf_proc *r, struct task_struct *task)
{
    struct kthread *kt;
    struct worker *worker;
    char *full;

    if (!bpf_core_field_exists(task->worker_private))
        return;
    kt = BPF_CORE_READ(task, worker_private);
    if (kt == NULL)
        return;
    if (r->flags & PF_WQ_WORKER) {
        worker = BPF_CORE_READ(kt, data);
        if (worker != NULL && bpf_probe_read_kernel_str(r->wq_desc, sizeof(r->wq_desc), &worker->desc) > 0 &&
            r->wq_desc[0] != '\0')
            r->has |= BPF_CORE_READ(worker, current_work) ? PS_BPF_WQ_BUSY : PS_BPF_WQ_IDLE;
    }
    if (bpf_core_field_exists(kt->full_name) && (full = BPF_CORE_READ(kt, full_name)) != NULL)
        bpf_probe_read_kernel_str(r->comm, sizeof(r->comm), full);
}

static __always_inline int emit_thread(struct seq_file *seq, struct task_struct *task, struct scratch *s)
{
    struct ps_bpf_thread *t = &s->thread;

    t->kind = PS_BPF_THREAD;
    t->pid = tgid_of(task);
    t->utime = task->utime;
    t->stime = task->stime;
    t->sum_exec = task->se.sum_exec_runtime;
    t->min_flt = task->min_flt;
    t->maj_flt = task->maj_flt;
    t->read_bytes = t->write_bytes = 0;
    if (bpf_core_field_exists(task->ioac)) {
        t->read_bytes = task->ioac.read_bytes;
        t->write_bytes = task->ioac.write_bytes;
    }
    bpf_seq_write(seq, t, sizeof(*t));
    return 0;
}

/* A task still on a CPU: one that left the run queue to sleep is on its CPU until the
 * switch is done, and its stack is not the one it sleeps with yet. */
static __always_inline int on_cpu(struct task_struct *task)
{
    return bpf_core_field_exists(task->on_cpu) && task->on_cpu;
}

/* get_wchan(): only of a task that is asleep and off the run queue. Its first return
 * address outside the scheduler is usually the first of the stack (the unwinder starts
 * past __schedule): two frames are asked for, all of them only when both are sched. */
static __always_inline void read_stack(struct ps_bpf_proc *r, struct task_struct *task, __u64 session)
{
    __u64 switches = r->nvcsw + r->nivcsw + 1;
    struct stack_seen *was = NULL;
    long n;

    if (use_seen) {
        was = bpf_task_storage_get(&seen, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
        if (was != NULL && was->switches == switches && was->session != session) {
            r->has |= PS_BPF_STACK_SAME;
            return;
        }
    }
    n = bpf_get_task_stack(task, r->stack, 2 * sizeof(r->stack[0]), 0);
    if (n == 2 * sizeof(r->stack[0]) && in_sched(r->stack[0]) && in_sched(r->stack[1]))
        n = bpf_get_task_stack(task, r->stack, sizeof(r->stack), 0);
    if (was != NULL) { /* kept only from a walk of a task that stayed asleep throughout */
        int still = n > 0 && !on_cpu(task) && task->nvcsw + task->nivcsw + 1 == switches;
        was->switches = still ? switches : 0;
        was->session = session;
    }
    if (n >= 0) {
        r->nstack = (__u32)n / sizeof(r->stack[0]);
        r->has |= PS_BPF_HAS_STACK;
    }
}

SEC("iter/task")
int procsnap_task(struct bpf_iter__task *ctx)
{
    struct seq_file *seq = ctx->meta->seq;
    struct task_struct *task = ctx->task;
    struct ps_bpf_proc *r;
    struct signal_struct *sig;
    struct mm_struct *mm;
    const struct cred *cred;
    struct scratch *s;
    __u32 zero = 0;

    if (reject == 1 || (reject == 2 && use_seen)) { /* a read through a number: the verifier says no */
        volatile __u64 addr = reject;
        return *(volatile int *)addr;
    }
    if (task == NULL)
        return 0;
    s = bpf_map_lookup_elem(&scratch, &zero);
    if (s == NULL)
        return 0;
    if (task->group_leader != task)
        return emit_thread(seq, task, s);

    r = &s->proc;
    __builtin_memset(r, 0, sizeof(*r));
    r->kind = PS_BPF_PROC;
    r->pid = tgid_of(task);
    r->ppid = tgid_of(task->real_parent);
    r->flags = task->flags;
    if (bpf_core_field_exists(task->__state))
        r->state = task->__state;
    else
        r->state = (__u32)BPF_CORE_READ((struct task_struct___pre514 *)task, state);
    r->exit_state = task->exit_state;
    cred = task->real_cred;
    r->uid = cred->uid.val;
    r->euid = cred->euid.val;
    r->start_boottime = task->start_boottime;
    r->utime = task->utime;
    r->stime = task->stime;
    r->sum_exec = task->se.sum_exec_runtime;
    r->min_flt = task->min_flt;
    r->maj_flt = task->maj_flt;
    r->nvcsw = task->nvcsw;
    r->nivcsw = task->nivcsw;
    if (bpf_core_field_exists(task->ioac)) {
        r->read_bytes = task->ioac.read_bytes;
        r->write_bytes = task->ioac.write_bytes;
        r->has |= PS_BPF_HAS_IO;
    }
    bpf_probe_read_kernel_str(r->comm, 16, &task->comm);
    if (r->flags & PF_KTHREAD)
        read_kthread_name(r, task);

    sig = task->signal;
    if (sig != NULL) {
        r->nr_threads = sig->nr_threads;
        r->sig_utime = sig->utime;
        r->sig_stime = sig->stime;
        r->sig_sum = sig->sum_sched_runtime;
        r->prev_utime = sig->prev_cputime.utime;
        r->prev_stime = sig->prev_cputime.stime;
        r->min_flt += sig->min_flt;
        r->maj_flt += sig->maj_flt;
        r->cutime = sig->cutime;
        r->cstime = sig->cstime;
        r->cmin_flt = sig->cmin_flt;
        r->cmaj_flt = sig->cmaj_flt;
        if (bpf_core_field_exists(sig->ioac)) {
            r->read_bytes += sig->ioac.read_bytes;
            r->write_bytes += sig->ioac.write_bytes;
        }
        read_tty(r, sig->tty);
        r->nofile = sig->rlim[RLIMIT_NOFILE].rlim_cur;
        r->has |= PS_BPF_HAS_SIGNAL;
    }
    mm = task->mm;
    if (mm != NULL && !(r->flags & PF_KTHREAD)) /* get_task_mm() */
        read_mm(r, mm);
    read_fds(r, task->files, s->fds);

    if (want_stack && r->state != 0 && r->state != TASK_WAKING && !task->on_rq)
        read_stack(r, task, ctx->meta->session_id);
    bpf_seq_write(seq, r, sizeof(*r));
    return 0;
}
