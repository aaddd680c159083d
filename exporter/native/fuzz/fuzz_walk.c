/* libFuzzer harness over the walk (walk.c with parse.c under it).
 *
 * An input is a fake /proc tree of one process, pid 100: two header bytes, then the
 * files' texts separated by SEP ("@@@@", in walk.dict):
 *   header[0]  bit 0: read wchan, bit 1: read smaps_rollup, bit 2: smaps_max_rss 0 (else
 *              unbounded), bit 3: a second walk before the facts (the cache of a known
 *              pid); high nibble 0xF: cmdline, 0xE: status made PS_FILE_MAX + 1 bytes
 *              (sparse: the 1 MiB cut and the malformed-when-full rule; rare, as such an
 *              input costs ten small ones)
 *   header[1]  bit i: file i below is absent even when the input has its text
 *   sections   0 stat  1 status  2 io  3 limits  4 cmdline  5 cgroup  6 wchan
 *              7 smaps_rollup  8 extra names of the root, NUL-separated (empty
 *              directories: the walk's pid parser sees them), then per thread k (tid
 *              100 + k, up to MAX_THREADS): task/TID/ stat, status, io, wchan
 * A file past the last section is absent. The tree lives in one directory made once
 * (under $TMPDIR, else /dev/shm when writable, else /tmp), rewritten for each input and
 * removed at exit.
 *
 * Each input runs walk_init, walk_collect (twice with bit 3), walk_facts of every want
 * bit (the process's own starttime, a wrong one, an impossible one, a pid that is not
 * there), walk_close_all and walk_free: a fresh walker each time, so its buffer grows
 * from the first size. Every span of the output must lie inside the arena (module.c
 * copies them out) and is read; a broken rule aborts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../reader.h"

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fuzz_walk: check failed: %s (line %d)\n", #cond, __LINE__);  \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

#define SEP "@@@@"
#define PID 100
#define MAX_THREADS 3
#define MAX_NAMES 4
#define NPID_FILES 8
#define SEC_NAMES 8
#define SEC_THREADS 9
#define NSECTIONS (SEC_THREADS + 4 * MAX_THREADS)

static const char *const pid_files[NPID_FILES] = {
    "stat", "status", "io", "limits", "cmdline", "cgroup", "wchan", "smaps_rollup",
};
static const char *const thread_files[4] = {"stat", "status", "io", "wchan"};

static char root[256];
static char made_names[MAX_NAMES][256]; /* root entries made for the last input */
static int nmade;
static volatile unsigned sink;

static void die(const char *what)
{
    perror(what);
    abort();
}

static void put_file(const char *path, const char *p, size_t n, off_t extend_to)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    if (fd < 0)
        die(path);
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0)
            die("write");
        p += k;
        n -= (size_t)k;
    }
    if (extend_to > 0 && ftruncate(fd, extend_to) < 0)
        die("ftruncate");
    close(fd);
}

static void drop_file(const char *path)
{
    if (unlink(path) < 0 && errno != ENOENT)
        die(path);
}

static void make_dir(const char *path)
{
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        die(path);
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* At exit (the end of -max_total_time or -runs): the tree goes. A crash leaves it. */
static void remove_root(void)
{
    if (root[0] != '\0')
        nftw(root, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The parts of the tree no input changes: the root, the pid's fd/ and exe, task/. */
static void setup_root(void)
{
    const char *tmp = getenv("TMPDIR");
    char path[512];

    if (tmp == NULL || *tmp == '\0')
        tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(root, sizeof(root), "%s/procsnap-fuzz-walk-%d", tmp, (int)getpid());
    make_dir(root);
    snprintf(path, sizeof(path), "%s/%d", root, PID);
    make_dir(path);
    snprintf(path, sizeof(path), "%s/%d/fd", root, PID);
    make_dir(path);
    snprintf(path, sizeof(path), "%s/%d/fd/0", root, PID);
    if (symlink("/dev/null", path) < 0 && errno != EEXIST)
        die(path);
    snprintf(path, sizeof(path), "%s/%d/fd/1", root, PID);
    if (symlink("/dev/null", path) < 0 && errno != EEXIST)
        die(path);
    snprintf(path, sizeof(path), "%s/%d/exe", root, PID);
    if (symlink("/usr/bin/fuzzed", path) < 0 && errno != EEXIST)
        die(path);
    snprintf(path, sizeof(path), "%s/%d/task", root, PID);
    make_dir(path);
    atexit(remove_root);
}

/* The root entries a name section asks for: each NUL-separated name that is a usable
 * directory name and not the pid's own. */
static void set_names(const char *p, size_t n)
{
    char path[512];
    size_t i;

    for (i = 0; i < (size_t)nmade; i++) {
        snprintf(path, sizeof(path), "%s/%s", root, made_names[i]);
        if (rmdir(path) < 0 && errno != ENOENT)
            die(path);
    }
    nmade = 0;
    while (n > 0 && nmade < MAX_NAMES) {
        const char *end = memchr(p, '\0', n);
        size_t len = end ? (size_t)(end - p) : n;
        char name[256];
        if (len > 0 && len < 200 && memchr(p, '/', len) == NULL) {
            memcpy(name, p, len);
            name[len] = '\0';
            if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0 && strcmp(name, "100") != 0) {
                snprintf(path, sizeof(path), "%s/%s", root, name);
                if (mkdir(path, 0755) == 0) {
                    memcpy(made_names[nmade], name, len + 1);
                    nmade++;
                } else if (errno != EEXIST) {
                    die(path);
                }
            }
        }
        if (end == NULL)
            break;
        n -= len + 1;
        p += len + 1;
    }
}

/* Split the body into sections; absent ones get NULL. */
static int split(const char *p, size_t n, const char *sec[], size_t len[])
{
    int k = 0;

    while (k < NSECTIONS) {
        const char *sep = memmem(p, n, SEP, 4);
        size_t l = sep ? (size_t)(sep - p) : n;
        sec[k] = p;
        len[k] = l;
        k++;
        if (sep == NULL)
            break;
        p = sep + 4;
        n -= l + 4;
    }
    for (int i = k; i < NSECTIONS; i++)
        sec[i] = NULL;
    return k;
}

static void write_tree(unsigned flags, unsigned absent, const char *sec[], size_t len[])
{
    char path[512];
    int f, t;

    for (f = 0; f < NPID_FILES; f++) {
        off_t extend = 0;
        snprintf(path, sizeof(path), "%s/%d/%s", root, PID, pid_files[f]);
        if (sec[f] == NULL || (absent & (1u << f))) {
            drop_file(path);
            continue;
        }
        if ((f == 4 && (flags >> 4) == 0xF) || (f == 1 && (flags >> 4) == 0xE))
            extend = PS_FILE_MAX + 1;
        put_file(path, sec[f], len[f], extend);
    }
    set_names(sec[SEC_NAMES] ? sec[SEC_NAMES] : "", sec[SEC_NAMES] ? len[SEC_NAMES] : 0);
    for (t = 0; t < MAX_THREADS; t++) {
        int base = SEC_THREADS + 4 * t, any = 0;
        for (f = 0; f < 4; f++)
            any |= sec[base + f] != NULL;
        snprintf(path, sizeof(path), "%s/%d/task/%d", root, PID, PID + t);
        if (any)
            make_dir(path);
        for (f = 0; f < 4; f++) {
            snprintf(path, sizeof(path), "%s/%d/task/%d/%s", root, PID, PID + t, thread_files[f]);
            if (sec[base + f] != NULL)
                put_file(path, sec[base + f], len[base + f], 0);
            else
                drop_file(path);
        }
        if (!any) {
            snprintf(path, sizeof(path), "%s/%d/task/%d", root, PID, PID + t);
            if (rmdir(path) < 0 && errno != ENOENT)
                die(path);
        }
    }
}

static void touch(const ps_walker *w, ps_span s, int may_be_none)
{
    unsigned sum = 0;
    size_t i;

    if (s.at == PS_NONE) {
        CHECK(may_be_none);
        return;
    }
    CHECK(s.at <= w->arena_len && s.len <= w->arena_len - s.at);
    for (i = 0; i < s.len; i++)
        sum += (unsigned char)w->arena[s.at + i];
    sink = sum;
}

static void check_records(const ps_walker *w)
{
    size_t i;

    CHECK(w->nrecords <= 1 && w->nunreadable <= 1);
    for (i = 0; i < w->nrecords; i++) {
        const ps_record *r = &w->records[i];
        CHECK(r->pid == PID && r->entry != NULL && r->entry->pid == PID);
        touch(w, r->comm, 0);
        touch(w, r->state, 0);
        touch(w, r->wchan, 1);
        CHECK(w->wchan || r->wchan.at == PS_NONE);
    }
    for (i = 0; i < w->nunreadable; i++)
        CHECK(w->unreadable[i].err == PS_MALFORMED ||
              (w->unreadable[i].err > 0 && w->unreadable[i].err <= PS_ERRNO_MAX));
}

static void check_facts(const ps_walker *w, const ps_fact *facts, size_t n)
{
    size_t i, j;

    for (i = 0; i < n; i++) {
        const ps_fact *f = &facts[i];
        touch(w, f->cmdline, 1);
        touch(w, f->exe, 1);
        touch(w, f->cgroup, 1);
        CHECK(f->cmdline.at == PS_NONE || f->cmdline.len <= PS_FILE_MAX);
        if (f->gone || f->impossible)
            CHECK(f->gone && f->cmdline.at == PS_NONE && f->nthreads == 0 && !f->has_nofile);
        CHECK(f->first_thread <= w->nthreads && f->nthreads <= w->nthreads - f->first_thread);
        for (j = f->first_thread; j < f->first_thread + f->nthreads; j++) {
            const ps_thread *t = &w->threads[j];
            CHECK(t->tid >= PID && t->tid < PID + MAX_THREADS);
            touch(w, t->comm, 0);
            touch(w, t->state, 0);
            touch(w, t->wchan, 1);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *sec[NSECTIONS];
    size_t len[NSECTIONS];
    unsigned flags, absent;
    ps_walker w;
    ps_fact facts[4];
    ps_stat st;
    uint64_t start = 0;
    int err = 0, has_stat, stat_parses = 0;

    if (root[0] == '\0')
        setup_root();
    if (size < 2)
        return 0;
    flags = data[0];
    absent = data[1];
    split((const char *)data + 2, size - 2, sec, len);
    write_tree(flags, absent, sec, len);

    if (walk_init(&w, root, 4096, 64, 64, flags & 1, (flags >> 1) & 1, (flags & 4) ? 0 : UINT64_MAX) < 0)
        die("walk_init");
    CHECK(!w.is_procfs && !w.own_procfs);
    CHECK(walk_collect(&w, &err) == 0);
    check_records(&w);
    if (flags & 8) {
        CHECK(walk_collect(&w, &err) == 0);
        check_records(&w);
    }
    /* pid 100 is recorded, or unreadable, exactly when its stat file is there */
    has_stat = sec[0] != NULL && !(absent & 1);
    CHECK(w.nrecords + w.nunreadable == (size_t)has_stat);
    if (has_stat && parse_stat(sec[0], len[0], &st) == 0) {
        stat_parses = 1;
        start = st.starttime;
    }

    memset(facts, 0, sizeof(facts));
    facts[0].pid = PID; /* the process itself */
    facts[0].start = start;
    facts[1].pid = PID; /* another process now (pid reuse) */
    facts[1].start = start + 1;
    facts[2].pid = PID; /* a starttime that fits no u64 */
    facts[2].impossible = 1;
    facts[3].pid = PID + 1000; /* not there */
    for (int i = 0; i < 4; i++)
        facts[i].want = PS_WANT_CMDLINE | PS_WANT_EXE | PS_WANT_CGROUP | PS_WANT_NOFILE | PS_WANT_THREADS;
    CHECK(walk_facts(&w, facts, 4, &err) == 0);
    check_facts(&w, facts, 4);
    /* the facts are the process's exactly when its stat says it is the one asked for */
    CHECK(facts[0].gone == !stat_parses);
    CHECK(facts[1].gone && facts[2].gone && facts[3].gone);

    walk_close_all(&w);
    while (w.evicted != NULL) {
        ps_entry *e = w.evicted;
        w.evicted = e->next;
        walk_entry_free(e);
    }
    walk_free(&w);
    return 0;
}
