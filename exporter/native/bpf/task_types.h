/* The kernel types procsnap's BPF program reads, trimmed to the fields it reads.
 *
 * Compiled once (clang -target bpf) against these declarations instead of a vmlinux.h
 * dumped from the build machine's kernel: every struct is marked preserve_access_index,
 * so each field access is a CO-RE relocation that libbpf resolves at load time against
 * the running kernel's BTF (/sys/kernel/btf/vmlinux), by struct and field name. Offsets,
 * sizes and the order of the fields here do not matter; names and kinds (integer,
 * pointer, array, struct) do. A field some kernel lacks is read behind a
 * bpf_core_field_exists() check in procsnap.bpf.c. The build thus needs neither BTF nor
 * bpftool on the build machine, and the object runs on any kernel >= 5.8 with BTF.
 */
#ifndef PROCSNAP_TASK_TYPES_H
#define PROCSNAP_TASK_TYPES_H

#include <linux/types.h>

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

typedef struct {
    __u32 val;
} kuid_t;

struct upid {
    int nr;
    void *ns;
};

struct pid {
    unsigned int level;
    struct upid numbers[1];
};

struct percpu_counter {
    __s64 count;
};

struct mm_struct {
    unsigned long total_vm;
    struct percpu_counter rss_stat[4]; /* >= 6.2; see mm_struct___pre62 */
    unsigned long start_code, end_code, start_stack;
    unsigned long arg_start, arg_end, env_end;
};

/* Before 6.2 the rss counters were atomics (struct mm_rss_stat). */
struct mm_rss_stat___pre62 {
    long count[4];
};
struct mm_struct___pre62 {
    struct mm_rss_stat___pre62 rss_stat;
};

struct fdtable {
    unsigned int max_fds;
    unsigned long *open_fds;
};

struct files_struct {
    struct fdtable *fdt;
};

struct cred {
    kuid_t uid;
    kuid_t euid;
};

struct prev_cputime {
    __u64 utime;
    __u64 stime;
};

struct task_io_accounting {
    __u64 read_bytes;
    __u64 write_bytes;
};

struct rlimit {
    unsigned long rlim_cur;
    unsigned long rlim_max;
};

struct tty_driver {
    int major;
    int minor_start;
};

struct tty_struct {
    int index;
    struct tty_driver *driver;
};

struct signal_struct {
    int nr_threads;
    __u64 utime, stime;
    unsigned long long sum_sched_runtime;
    unsigned long min_flt, maj_flt;
    __u64 cutime, cstime;
    unsigned long cmin_flt, cmaj_flt;
    struct prev_cputime prev_cputime;
    struct task_io_accounting ioac;
    struct tty_struct *tty;
    struct pid *pids[4];
    struct rlimit rlim[16];
};

/* kernel/kthread.c's and kernel/workqueue.c's private structs, for the names /proc shows
 * of kernel threads (proc_task_name) */
struct kthread {
    void *data;
    char *full_name; /* >= 5.17 */
};

struct worker {
    void *current_work;
    char desc[32]; /* WORKER_DESC_LEN: 24 before 6.9, 32 since */
};

struct sched_entity {
    __u64 sum_exec_runtime;
};

struct task_struct {
    unsigned int __state;
    int exit_state;
    unsigned int flags;
    int on_rq;
    int on_cpu; /* CONFIG_SMP */
    int pid;
    int tgid;
    struct task_struct *group_leader;
    struct task_struct *real_parent;
    struct signal_struct *signal;
    struct mm_struct *mm;
    struct files_struct *files;
    const struct cred *real_cred;
    char comm[16];
    __u64 start_boottime;
    __u64 utime, stime;
    struct sched_entity se;
    unsigned long min_flt, maj_flt;
    unsigned long nvcsw, nivcsw;
    struct task_io_accounting ioac;
    void *worker_private; /* >= 5.19: a kernel thread's struct kthread */
    struct pid *thread_pid;
};

/* Before 5.14 the state was a long named state. */
struct task_struct___pre514 {
    long state;
};

struct seq_file;

struct bpf_iter_meta {
    struct seq_file *seq;
    __u64 session_id;
    __u64 seq_num;
};

struct bpf_iter__task {
    struct bpf_iter_meta *meta;
    struct task_struct *task;
};

#pragma clang attribute pop

#endif
