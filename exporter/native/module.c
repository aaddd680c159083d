/* exporter._reader: the module table and the Reader type.
 *
 * read() and read_facts() take the reader's lock and run the walk (walk.c) with the GIL
 * released; with the GIL back they turn the C output into plain tuples (their layout is
 * exporter/reader.py's) and the errno counts into a dict. The only Python objects the
 * cache keeps are each pid's comm and wchan strs, reused while their bytes are the same.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include <errno.h>
#include <string.h>

#include "reader.h"
#include "pytuple.h"

#define PS_RECORD_LEN (F_COUNT + 4) /* pid, comm, state, wchan beside the numeric fields */
#define PS_ARENA_KEEP (4u << 20)
#define PS_BUF_KEEP (64u << 10)

typedef struct {
    PyObject_HEAD
    PyObject *procfs; /* as given, for messages */
    PyThread_type_lock lock;
    int ready;        /* w is initialized */
    ps_walker w;
} ReaderObject;

static void reader_release_evicted(ps_walker *w)
{
    while (w->evicted != NULL) {
        ps_entry *e = w->evicted;
        w->evicted = e->next;
        Py_XDECREF(e->comm.obj);
        Py_XDECREF(e->wchan.obj);
        walk_entry_free(e);
    }
}

/* Give back what one call with huge files or many new processes made grow. */
static void reader_trim(ps_walker *w)
{
    if (w->arena_cap > PS_ARENA_KEEP) {
        free(w->arena);
        w->arena = NULL;
        w->arena_cap = w->arena_len = 0;
    }
    if (w->buf_cap > PS_BUF_KEEP) {
        char *small = realloc(w->buf, 4096);
        if (small != NULL) {
            w->buf = small;
            w->buf_cap = 4096;
        }
    }
}

/* Span s as a str (bad UTF-8 replaced); None when s is not available. */
static PyObject *reader_text(const ps_walker *w, ps_span s)
{
    if (s.at == PS_NONE)
        Py_RETURN_NONE;
    return PyUnicode_DecodeUTF8(w->arena + s.at, (Py_ssize_t)s.len, "replace");
}

static PyObject *reader_bytes(const ps_walker *w, ps_span s)
{
    if (s.at == PS_NONE)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(w->arena + s.at, (Py_ssize_t)s.len);
}

/* Span s as a str: the one cached in c while its bytes are the same (comm and wchan
 * change rarely; a read makes thousands of them). None when s is not available. */
static PyObject *reader_cached_text(ps_walker *w, ps_text *c, ps_span s)
{
    const char *p;
    PyObject *text;
    char *copy;

    if (s.at == PS_NONE)
        Py_RETURN_NONE;
    p = w->arena + s.at; /* not before: arena + PS_NONE overflows (UB) */
    if (c->obj != NULL && c->len == s.len && memcmp(c->bytes, p, s.len) == 0)
        return Py_NewRef(c->obj);
    text = reader_text(w, s);
    if (text == NULL)
        return NULL;
    copy = malloc(s.len ? s.len : 1);
    if (copy != NULL) { /* no copy: just not cached */
        memcpy(copy, p, s.len);
        free(c->bytes);
        c->bytes = copy;
        c->len = s.len;
        Py_XSETREF(c->obj, Py_NewRef(text));
    }
    return text;
}

static PyObject *reader_num(const ps_record *r, int f)
{
    if (!(r->has & (1u << f)))
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong(r->num[f]);
}

/* Record i as a plain tuple (PyTuple_New: its hash is a tuple's on every CPython). */
static PyObject *reader_record(ps_walker *w, size_t i)
{
    const ps_record *r = &w->records[i];
    PyObject *rec = PyTuple_New(PS_RECORD_LEN);
    Py_ssize_t k = 0;
    int f;

    if (rec == NULL)
        return NULL;
    TUPLE_PUT(rec, k, PyLong_FromLong(r->pid));
    TUPLE_PUT(rec, k, reader_num(r, F_PPID));
    TUPLE_PUT(rec, k, reader_cached_text(w, &r->entry->comm, r->comm));
    TUPLE_PUT(rec, k, reader_text(w, r->state));
    for (f = F_FLAGS; f < F_COUNT; f++)
        TUPLE_PUT(rec, k, reader_num(r, f));
    TUPLE_PUT(rec, k, reader_cached_text(w, &r->entry->wchan, r->wchan));
    /* ints and strs only: in no reference cycle, so the cyclic GC need not walk the
     * thousands of records a read makes */
    PyObject_GC_UnTrack(rec);
    return rec;
error:
    Py_DECREF(rec);
    return NULL;
}

/* The threads of fact f: a list of plain tuples (exporter.reader.THREAD_FIELDS), or None. */
static PyObject *reader_threads(ps_walker *w, const ps_fact *f)
{
    PyObject *list, *t;
    size_t i;
    int k;

    if (f->nthreads == 0)
        Py_RETURN_NONE;
    if ((list = PyList_New((Py_ssize_t)f->nthreads)) == NULL)
        return NULL;
    for (i = 0; i < f->nthreads; i++) {
        const ps_thread *th = &w->threads[f->first_thread + i];
        Py_ssize_t j = 0;
        if ((t = PyTuple_New(T_COUNT + 4)) == NULL)
            goto error;
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
        TUPLE_PUT(t, j, PyLong_FromLong(th->tid));
        TUPLE_PUT(t, j, reader_text(w, th->comm));
        TUPLE_PUT(t, j, reader_text(w, th->state));
        for (k = 0; k < T_COUNT; k++)
            TUPLE_PUT(t, j, (th->has & (1u << k)) ? PyLong_FromUnsignedLongLong(th->num[k]) : Py_NewRef(Py_None));
        TUPLE_PUT(t, j, reader_text(w, th->wchan));
    }
    return list;
error:
    Py_DECREF(list);
    return NULL;
}

static void reader_raise(ReaderObject *self, int err)
{
    PyObject *exc;

    if (err == ENOMEM) {
        PyErr_NoMemory();
        return;
    }
    exc = PyObject_CallFunction(PyExc_OSError, "iNO", err,
                                PyUnicode_FromString(strerror(err)), self->procfs);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
}

static void reader_lock(ReaderObject *self)
{
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

PyDoc_STRVAR(Reader_read_doc,
"read() -> (records, unreadable, errors)\n\n"
"One walk of the procfs root with the GIL released. records: a tuple per process\n"
"(layout: exporter.reader.FIELDS), sorted by pid, None where a file could not be\n"
"read. unreadable: [(pid, errno)] of pids whose stat could not be read or parsed\n"
"(errno -1) though their directory is there. errors: {errno: count} of the other\n"
"files (-1: malformed). Raises OSError when the root cannot be listed.");

static PyObject *Reader_read(ReaderObject *self, PyObject *unused)
{
    ps_walker *w = &self->w;
    PyObject *records = NULL, *unreadable = NULL, *errors = NULL, *result = NULL, *item;
    size_t i;
    int rc, err = 0;

    (void)unused;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    rc = walk_collect(w, &err);
    Py_END_ALLOW_THREADS
    reader_release_evicted(w);
    if (rc < 0) {
        reader_raise(self, err);
        goto done;
    }
    if ((records = PyList_New((Py_ssize_t)w->nrecords)) == NULL)
        goto done;
    for (i = 0; i < w->nrecords; i++) {
        if ((item = reader_record(w, i)) == NULL)
            goto done;
        PyList_SET_ITEM(records, (Py_ssize_t)i, item);
    }
    if ((unreadable = PyList_New((Py_ssize_t)w->nunreadable)) == NULL)
        goto done;
    for (i = 0; i < w->nunreadable; i++) {
        if ((item = Py_BuildValue("(ii)", w->unreadable[i].pid, w->unreadable[i].err)) == NULL)
            goto done;
        PyList_SET_ITEM(unreadable, (Py_ssize_t)i, item);
    }
    if ((errors = errors_dict(w->errors, w->malformed)) == NULL)
        goto done;
    result = PyTuple_Pack(3, records, unreadable, errors);
done:
    reader_trim(w);
    PyThread_release_lock(self->lock);
    Py_XDECREF(records);
    Py_XDECREF(unreadable);
    Py_XDECREF(errors);
    return result;
}

PyDoc_STRVAR(Reader_read_facts_doc,
"read_facts(requests) -> (facts, errors)\n\n"
"requests: [(pid, starttime, want)], want a bit set of exporter.reader.WANT_*.\n"
"facts: [(pid, gone, cmdline, exe, cgroup, nofile, threads)] in request order; gone\n"
"is True when the process exited or its pid holds another process now (then nothing\n"
"else is given); cmdline, exe and cgroup are bytes (None: not asked or unreadable);\n"
"nofile is the soft RLIMIT_NOFILE (2**64-1: unlimited); threads a list of tuples\n"
"(exporter.reader.THREAD_FIELDS) when asked and at least two could be read, else\n"
"None. errors as for read().");

static PyObject *Reader_read_facts(ReaderObject *self, PyObject *requests)
{
    ps_walker *w = &self->w;
    PyObject *seq, *facts = NULL, *errors = NULL, *result = NULL, *item;
    ps_fact *want = NULL;
    Py_ssize_t n, i;
    int rc, err = 0, locked = 0;

    /* A tuple copy: converting an item may run Python code, which must not change the
     * sequence under us. */
    seq = PySequence_Tuple(requests);
    if (seq == NULL)
        return NULL;
    n = PyTuple_GET_SIZE(seq);
    if ((want = PyMem_Calloc(n ? (size_t)n : 1, sizeof(*want))) == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Tuple(PyTuple_GET_ITEM(seq, i));
        long pid;
        unsigned long long start;
        unsigned long bits;

        if (item == NULL)
            goto done;
        if (PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_ValueError, "a request must be (pid, starttime, want)");
            Py_DECREF(item);
            goto done;
        }
        /* out-of-range values never wrap: a starttime beyond u64 is no process's (gone),
         * a bad pid or want raises */
        start = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(item, 1));
        if (start == (unsigned long long)-1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                Py_DECREF(item);
                goto done;
            }
            PyErr_Clear();
            want[i].impossible = 1;
        }
        pid = PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
        bits = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(item, 2));
        Py_DECREF(item);
        if (PyErr_Occurred())
            goto done;
        if (pid < 0 || pid > 0x7fffffff || bits > 0xffff) {
            PyErr_SetString(PyExc_ValueError, "read_facts: pid or want out of range");
            goto done;
        }
        want[i].pid = (int)pid;
        want[i].start = start;
        want[i].want = (unsigned)bits;
    }
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    rc = walk_facts(w, want, (size_t)n, &err);
    Py_END_ALLOW_THREADS
    locked = 1;
    if (rc < 0) {
        reader_raise(self, err);
        goto done;
    }
    if ((facts = PyList_New(n)) == NULL)
        goto done;
    for (i = 0; i < n; i++) {
        const ps_fact *f = &want[i];
        PyObject *cmdline = reader_bytes(w, f->cmdline), *exe = reader_bytes(w, f->exe),
                 *cgroup = reader_bytes(w, f->cgroup), *nofile;
        PyObject *threads = reader_threads(w, f);
        nofile = f->has_nofile ? PyLong_FromUnsignedLongLong(f->nofile) : Py_NewRef(Py_None);
        item = NULL;
        if (cmdline != NULL && exe != NULL && cgroup != NULL && nofile != NULL && threads != NULL)
            item = Py_BuildValue("(iOOOOOO)", f->pid, f->gone ? Py_True : Py_False, cmdline, exe,
                                 cgroup, nofile, threads);
        Py_XDECREF(cmdline);
        Py_XDECREF(exe);
        Py_XDECREF(cgroup);
        Py_XDECREF(nofile);
        Py_XDECREF(threads);
        if (item == NULL)
            goto done;
        PyList_SET_ITEM(facts, i, item);
    }
    if ((errors = errors_dict(w->errors, w->malformed)) == NULL)
        goto done;
    result = PyTuple_Pack(2, facts, errors);
done:
    if (locked) {
        reader_trim(w);
        PyThread_release_lock(self->lock);
    }
    PyMem_Free(want);
    Py_DECREF(seq);
    Py_XDECREF(facts);
    Py_XDECREF(errors);
    return result;
}

PyDoc_STRVAR(Reader_close_doc, "close()\n\nClose the kept file descriptors.");

static PyObject *Reader_close(ReaderObject *self, PyObject *unused)
{
    (void)unused;
    reader_lock(self);
    walk_close_all(&self->w);
    reader_release_evicted(&self->w);
    PyThread_release_lock(self->lock);
    Py_RETURN_NONE;
}

/* *count read under the reader's lock, as an int. */
static PyObject *reader_count(ReaderObject *self, const size_t *count)
{
    size_t n;

    reader_lock(self);
    n = *count;
    PyThread_release_lock(self->lock);
    return PyLong_FromSize_t(n);
}

PyDoc_STRVAR(Reader_kept_doc, "kept() -> number of processes whose files are kept open now");

static PyObject *Reader_kept(ReaderObject *self, PyObject *unused)
{
    (void)unused;
    return reader_count(self, &self->w.nkept);
}

PyDoc_STRVAR(Reader_kept_threads_doc, "kept_threads() -> number of threads whose files are kept open now");

static PyObject *Reader_kept_threads(ReaderObject *self, PyObject *unused)
{
    (void)unused;
    return reader_count(self, &self->w.nkept_threads);
}

static PyObject *Reader_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"procfs", "page_size", "keep_open", "wchan", "smaps_max_rss", "keep_threads", NULL};
    PyObject *procfs, *path = NULL, *smaps_max_rss = Py_None;
    unsigned long long page_size, smaps_max = 0;
    Py_ssize_t keep_open, keep_threads = 0;
    int wchan = 1;
    ReaderObject *self = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OKn|pOn:Reader", kwlist, &procfs, &page_size,
                                     &keep_open, &wchan, &smaps_max_rss, &keep_threads))
        return NULL;
    if (smaps_max_rss != Py_None) {
        smaps_max = PyLong_AsUnsignedLongLong(smaps_max_rss);
        if (smaps_max == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
    }
    if (page_size == 0 || keep_open < 0 || keep_threads < 0) {
        PyErr_SetString(PyExc_ValueError, "page_size must be > 0, keep_open and keep_threads >= 0");
        return NULL;
    }
    if (!PyUnicode_FSConverter(procfs, &path))
        return NULL;
    if ((self = (ReaderObject *)type->tp_alloc(type, 0)) == NULL)
        goto error;
    self->procfs = Py_NewRef(procfs);
    if ((self->lock = PyThread_allocate_lock()) == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    if (walk_init(&self->w, PyBytes_AS_STRING(path), page_size, (size_t)keep_open, (size_t)keep_threads, wchan,
                  smaps_max_rss != Py_None, smaps_max) < 0) {
        PyErr_NoMemory();
        goto error;
    }
    self->ready = 1;
    Py_DECREF(path);
    return (PyObject *)self;
error:
    Py_XDECREF(path);
    Py_XDECREF(self);
    return NULL;
}

static int Reader_traverse(ReaderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->procfs);
    return 0;
}

static int Reader_clear(ReaderObject *self)
{
    Py_CLEAR(self->procfs);
    return 0;
}

static void Reader_dealloc(ReaderObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    PyObject_GC_UnTrack(self);
    if (self->ready) {
        walk_close_all(&self->w);
        reader_release_evicted(&self->w);
        walk_free(&self->w);
    }
    if (self->lock != NULL)
        PyThread_free_lock(self->lock);
    Reader_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef Reader_methods[] = {
    {"read", (PyCFunction)Reader_read, METH_NOARGS, Reader_read_doc},
    {"read_facts", (PyCFunction)Reader_read_facts, METH_O, Reader_read_facts_doc},
    {"close", (PyCFunction)Reader_close, METH_NOARGS, Reader_close_doc},
    {"kept", (PyCFunction)Reader_kept, METH_NOARGS, Reader_kept_doc},
    {"kept_threads", (PyCFunction)Reader_kept_threads, METH_NOARGS, Reader_kept_threads_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Reader_doc,
"Reader(procfs, page_size, keep_open, wchan=True, smaps_max_rss=None, keep_threads=0)\n\n"
"Reads every process under a procfs root. Keeps /proc/PID/{stat,schedstat} open between\n"
"reads for at most keep_open processes (a real procfs only), and {status,io,wchan} of\n"
"those seen running: a single-threaded process that did not run since the last read has\n"
"its status, io and wchan given from memory. read_facts keeps task/TID/{stat,status,io,\n"
"wchan,schedstat} open for at most keep_threads threads found running again. Kept fds\n"
"stay within RLIMIT_NOFILE's soft limit less 512. With wchan false, no wchan file is\n"
"read (the field is None). With smaps_max_rss (bytes), smaps_rollup is read for\n"
"processes whose rss is at most that.");

static PyType_Slot Reader_slots[] = {
    {Py_tp_new, Reader_new},
    {Py_tp_dealloc, Reader_dealloc},
    {Py_tp_traverse, Reader_traverse},
    {Py_tp_clear, Reader_clear},
    {Py_tp_methods, Reader_methods},
    {Py_tp_doc, (void *)Reader_doc},
    {0, NULL},
};

static PyType_Spec Reader_spec = {
    .name = "exporter._reader.Reader",
    .basicsize = sizeof(ReaderObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Reader_slots,
};

static int module_exec(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &Reader_spec, NULL);
    int rc;

    if (type == NULL)
        return -1;
    rc = PyModule_AddType(module, (PyTypeObject *)type);
    Py_DECREF(type);
    return rc;
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

PyObject *ps_group_columns(PyObject *module, PyObject *args); /* sums.c */

PyDoc_STRVAR(group_columns_doc,
"group_columns(records, groups, ngroups, summed, start, fds, limits, counted)\n\n"
"Per group index (groups[i]: record i's, or None): None without members, else (members,\n"
"sums of the summed columns, how many of each were not None, the least start, the\n"
"greatest fds / limits[i] (None or 0 limits skipped), a {value: count} dict per counted\n"
"column). exporter.grouper.group_columns is its twin.");

PyObject *ps_changed_records(PyObject *module, PyObject *args); /* sums.c */

PyDoc_STRVAR(changed_records_doc,
"changed_records(records, previous, key, nones) -> (changed, gone, holes)\n\n"
"Two readings, each sorted by pid with one record per pid; key: the pid column, the start\n"
"column, then the columns compared. changed: indices of the records without a previous\n"
"record of the same (pid, start), or whose key columns differ from it; gone: indices of\n"
"the previous records without a record of the same (pid, start); holes: indices of the\n"
"records with None in a nones column. ValueError when a list is not sorted.\n"
"exporter.tracker.changed_records_py is its twin.");

static PyMethodDef module_methods[] = {
    {"group_columns", ps_group_columns, METH_VARARGS, group_columns_doc},
    {"changed_records", ps_changed_records, METH_VARARGS, changed_records_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "exporter._reader",
    .m_doc = "The C reader of procsnap: one batched, GIL-free walk of a procfs root; the tracker's diff and the "
             "grouper's column sums.",
    .m_size = 0,
    .m_methods = module_methods,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit__reader(void)
{
    return PyModuleDef_Init(&module_def);
}
