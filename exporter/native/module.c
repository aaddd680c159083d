/* exporter._collector: the module table and the Collector type.
 *
 * collect() takes the lock and runs the walk (walk.c) with the GIL released; with the GIL
 * back it turns the C records into Process tuples and the errno counts into a dict.
 * Cached Python objects of static facts (comm, cmdline, exe, cgroup) live in the cache
 * entries and are reused by later collects.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include <errno.h>
#include <string.h>

#include "collector.h"

#define PS_NFIELDS 27
#define PS_EXACT (1ULL << 53) /* integers below this are exact doubles */
#define PS_ARENA_KEEP (4u << 20)

typedef struct {
    PyObject_HEAD
    PyObject *procfs;      /* as given, for messages */
    PyObject *record_type; /* the Process NamedTuple class */
    PyObject *hz_obj, *page_obj;
    uint64_t hz, page;
    double boot;           /* boot_time as Python's int + float converts it */
    PyThread_type_lock lock;
    int ready;             /* w is initialized */
    ps_walker w;
} CollectorObject;

/* ---- the cache's Python objects ------------------------------------------------------ */

static void collector_release_evicted(ps_walker *w)
{
    while (w->evicted != NULL) {
        ps_entry *e = w->evicted;
        w->evicted = e->next;
        Py_XDECREF(e->comm_obj);
        Py_XDECREF(e->cmdline_obj);
        Py_XDECREF(e->exe_obj);
        Py_XDECREF(e->cgroup_obj);
        walk_entry_free(e);
    }
}

static PyObject *collector_text(const char *p, size_t n)
{
    return PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "replace");
}

static PyObject *collector_span_text(const ps_walker *w, ps_span s)
{
    if (s.at == PS_NONE)
        Py_RETURN_NONE;
    return collector_text(w->arena + s.at, s.len);
}

/* cmdline -> tuple of str: () when empty, one trailing NUL dropped, split on NUL. */
static PyObject *collector_cmdline(const ps_walker *w, ps_span s)
{
    const char *p;
    size_t count, m, pos = 0, off, len;
    Py_ssize_t i = 0;
    PyObject *args;

    if (s.at == PS_NONE)
        Py_RETURN_NONE;
    p = w->arena + s.at;
    count = parse_cmdline_count(p, s.len, &m);
    args = PyTuple_New((Py_ssize_t)count);
    if (args == NULL || count == 0)
        return args;
    while (parse_cmdline_next(p, m, &pos, &off, &len)) {
        PyObject *arg = collector_text(p + off, len);
        if (arg == NULL) {
            Py_DECREF(args);
            return NULL;
        }
        PyTuple_SET_ITEM(args, i++, arg);
    }
    PyObject_GC_UnTrack(args); /* strs only: no cycle (it lives as long as its process) */
    return args;
}

/* The static facts read by this walk become the entry's objects. */
static int collector_facts(const ps_walker *w, const ps_record *r)
{
    ps_entry *e = r->entry;
    PyObject *cmdline, *exe = NULL, *cgroup = NULL;

    cmdline = collector_cmdline(w, r->cmdline);
    if (cmdline == NULL)
        goto error;
    exe = collector_span_text(w, r->exe);
    if (exe == NULL)
        goto error;
    cgroup = collector_span_text(w, r->cgroup);
    if (cgroup == NULL)
        goto error;
    Py_XSETREF(e->cmdline_obj, cmdline);
    Py_XSETREF(e->exe_obj, exe);
    Py_XSETREF(e->cgroup_obj, cgroup);
    e->facts_ok = 1;
    return 0;
error:
    Py_XDECREF(cmdline);
    Py_XDECREF(exe);
    return -1;
}

/* ---- records ------------------------------------------------------------------------- */

/* Numeric field f as an int (new reference); None when absent. */
static PyObject *collector_int(const ps_record *r, int f, PyObject *const *bigs)
{
    if (!(r->has & (1u << f)))
        Py_RETURN_NONE;
    if (r->bigmask & (1u << f))
        return Py_NewRef(bigs[f]);
    return PyLong_FromUnsignedLongLong(r->num[f]);
}

/* ticks / hz with Python's int / int: correctly rounded. Exact operands divide as
 * doubles (CPython's fast path); others go through Python. 0 or -1. */
static int collector_seconds(CollectorObject *self, const ps_record *r, int f,
                             PyObject *const *bigs, double *out)
{
    PyObject *ticks, *q;

    if (!(r->bigmask & (1u << f)) && r->num[f] < PS_EXACT && self->hz < PS_EXACT) {
        *out = (double)r->num[f] / (double)self->hz;
        return 0;
    }
    ticks = collector_int(r, f, bigs);
    if (ticks == NULL)
        return -1;
    q = PyNumber_TrueDivide(ticks, self->hz_obj);
    Py_DECREF(ticks);
    if (q == NULL)
        return -1;
    *out = PyFloat_AsDouble(q);
    Py_DECREF(q);
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* Field f times k (new reference), None when absent; beyond 64 bits Python multiplies
 * (by k_obj when given). */
static PyObject *collector_product(const ps_record *r, int f, PyObject *const *bigs, uint64_t k,
                                   PyObject *k_obj)
{
    PyObject *v, *kv = NULL, *res = NULL;
    uint64_t x;

    if (!(r->has & (1u << f)))
        Py_RETURN_NONE;
    if (!(r->bigmask & (1u << f)) && !__builtin_mul_overflow(r->num[f], k, &x))
        return PyLong_FromUnsignedLongLong(x);
    v = collector_int(r, f, bigs);
    if (v != NULL && (kv = k_obj ? Py_NewRef(k_obj) : PyLong_FromUnsignedLongLong(k)) != NULL)
        res = PyNumber_Multiply(v, kv);
    Py_XDECREF(v);
    Py_XDECREF(kv);
    return res;
}

/* Record i of the walk as a Process tuple. *bigpos walks w->bigs along the records. */
static PyObject *collector_record(CollectorObject *self, size_t i, size_t *bigpos,
                                  PyObject *usernames, PyObject *ttys)
{
    ps_walker *w = &self->w;
    const ps_record *r = &w->records[i];
    ps_entry *e = r->entry;
    PyObject *bigs[F_COUNT] = {NULL};
    PyObject *rec = NULL, *v, *uid = NULL, *tty;
    Py_ssize_t k = 0;
    double secs;
    int f;

    for (; *bigpos < w->nbigs && w->bigs[*bigpos].rec == i; (*bigpos)++) {
        const ps_big *b = &w->bigs[*bigpos];
        PyObject *digits = PyUnicode_FromStringAndSize(w->arena + b->digits.at,
                                                       (Py_ssize_t)b->digits.len);
        if (digits == NULL)
            goto error;
        Py_XSETREF(bigs[b->field], PyLong_FromUnicodeObject(digits, 10));
        Py_DECREF(digits);
        if (bigs[b->field] == NULL)
            goto error;
    }
    if (r->facts_new && collector_facts(w, r) < 0)
        goto error;
    if (e->comm_stale) {
        Py_CLEAR(e->comm_obj);
        e->comm_stale = 0;
    }
    if (e->comm_obj == NULL && (e->comm_obj = collector_text(e->comm, e->comm_len)) == NULL)
        goto error;

    rec = ((PyTypeObject *)self->record_type)->tp_alloc((PyTypeObject *)self->record_type,
                                                         PS_NFIELDS);
    if (rec == NULL)
        goto error;
#define SET(expr)                                                                          \
    do {                                                                                   \
        if ((v = (expr)) == NULL)                                                          \
            goto error;                                                                    \
        PyTuple_SET_ITEM(rec, k++, v);                                                     \
    } while (0)
    SET(PyLong_FromLong(r->pid));
    SET(collector_int(r, F_PPID, bigs));
    SET(Py_NewRef(e->comm_obj));
    SET(collector_text(w->arena + r->state.at, r->state.len));
    SET(PyBool_FromLong((r->num[F_FLAGS] & PS_PF_KTHREAD) != 0)); /* low bits survive wrap */
    SET(collector_int(r, F_START, bigs));
    if (collector_seconds(self, r, F_START, bigs, &secs) < 0)
        goto error;
    SET(PyFloat_FromDouble(self->boot + secs));
    for (f = F_UTIME; f <= F_STIME; f++) {
        if (collector_seconds(self, r, f, bigs, &secs) < 0)
            goto error;
        SET(PyFloat_FromDouble(secs));
    }
    SET(collector_int(r, F_MINFLT, bigs));
    SET(collector_int(r, F_MAJFLT, bigs));
    SET(collector_int(r, F_THREADS, bigs));
    SET(collector_product(r, F_RSS, bigs, self->page, self->page_obj));
    SET(collector_int(r, F_VSIZE, bigs));
    SET(collector_product(r, F_SWAP_KB, bigs, 1024, NULL));
    SET(collector_int(r, F_CTXV, bigs));
    SET(collector_int(r, F_CTXNV, bigs));
    SET(collector_int(r, F_READ, bigs));
    SET(collector_int(r, F_WRITE, bigs));
    SET(collector_int(r, F_OPEN_FDS, bigs));
    if (r->max_from_prlimit) /* resource.prlimit() gives rlim_t as a signed long long */
        SET(PyLong_FromLongLong((long long)r->num[F_MAX_FDS]));
    else
        SET(collector_int(r, F_MAX_FDS, bigs));
    SET(collector_int(r, F_UID, bigs));
    uid = Py_NewRef(v);
    SET(uid == Py_None ? Py_NewRef(Py_None) : PyObject_GetItem(usernames, uid));
    if ((r->bigmask & (1u << F_TTY)) || r->num[F_TTY] != 0) {
        if ((tty = collector_int(r, F_TTY, bigs)) == NULL)
            goto error;
        v = PyObject_GetItem(ttys, tty);
        Py_DECREF(tty);
        SET(v);
    } else {
        SET(Py_NewRef(Py_None));
    }
    SET(Py_NewRef(e->cmdline_obj));
    SET(Py_NewRef(e->exe_obj));
    SET(Py_NewRef(e->cgroup_obj));
#undef SET
    assert(k == PS_NFIELDS);
    /* A record holds only ints, floats, strs and a tuple of strs, so it can be in no
     * reference cycle: untracked, the cyclic GC does not walk the thousands of records
     * a scrape makes and the tracker keeps. */
    PyObject_GC_UnTrack(rec);
    goto done;
error:
    Py_CLEAR(rec);
done:
    Py_XDECREF(uid);
    for (f = 0; f < F_COUNT; f++)
        Py_XDECREF(bigs[f]);
    return rec;
}

/* errno counts -> {errno.errorcode name (or str(errno)): count, "malformed": count} */
static PyObject *collector_errors(const ps_walker *w)
{
    PyObject *errors = PyDict_New(), *codes = NULL, *key = NULL, *name = NULL, *count = NULL;
    int i;

    if (errors == NULL)
        return NULL;
    for (i = 0; i <= PS_ERRNO_MAX; i++) {
        if (w->errors[i] == 0)
            continue;
        if (codes == NULL) {
            PyObject *mod = PyImport_ImportModule("errno");
            if (mod == NULL)
                goto error;
            codes = PyObject_GetAttrString(mod, "errorcode");
            Py_DECREF(mod);
            if (codes == NULL)
                goto error;
        }
        if ((key = PyLong_FromLong(i)) == NULL)
            goto error;
        name = PyObject_GetItem(codes, key);
        if (name == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError))
                goto error;
            PyErr_Clear();
            if ((name = PyObject_Str(key)) == NULL)
                goto error;
        }
        if ((count = PyLong_FromUnsignedLong(w->errors[i])) == NULL ||
            PyDict_SetItem(errors, name, count) < 0)
            goto error;
        Py_CLEAR(key);
        Py_CLEAR(name);
        Py_CLEAR(count);
    }
    if (w->malformed) {
        if ((count = PyLong_FromUnsignedLong(w->malformed)) == NULL ||
            PyDict_SetItemString(errors, "malformed", count) < 0)
            goto error;
        Py_CLEAR(count);
    }
    Py_XDECREF(codes);
    return errors;
error:
    Py_XDECREF(codes);
    Py_XDECREF(key);
    Py_XDECREF(name);
    Py_XDECREF(count);
    Py_DECREF(errors);
    return NULL;
}

/* ---- the Collector type -------------------------------------------------------------- */

static void collector_lock(CollectorObject *self)
{
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

PyDoc_STRVAR(Collector_collect_doc,
"collect(usernames, ttys) -> (records sorted by pid, {reason: count})\n\n"
"One walk of the procfs root with the GIL released. usernames and ttys are\n"
"mappings (uid -> name, tty_nr -> name) asked only for known uids / tty_nr != 0.");

static PyObject *Collector_collect(CollectorObject *self, PyObject *args)
{
    ps_walker *w = &self->w;
    PyObject *usernames, *ttys, *list = NULL, *errors = NULL, *result = NULL;
    size_t i, bigpos = 0;
    int rc, err = 0;

    if (!PyArg_ParseTuple(args, "OO:collect", &usernames, &ttys))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    rc = walk_collect(w, &err);
    Py_END_ALLOW_THREADS
    collector_release_evicted(w);
    if (rc < 0) {
        if (err == ENOMEM) {
            PyErr_NoMemory();
        } else {
            PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iN", err,
                PyUnicode_FromFormat("cannot list procfs root %S: %s", self->procfs,
                                     strerror(err)));
            if (exc != NULL) {
                PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
                Py_DECREF(exc);
            }
        }
        goto error;
    }
    if ((list = PyList_New((Py_ssize_t)w->nrecords)) == NULL)
        goto error;
    for (i = 0; i < w->nrecords; i++) {
        PyObject *rec = collector_record(self, i, &bigpos, usernames, ttys);
        if (rec == NULL)
            goto error;
        PyList_SET_ITEM(list, (Py_ssize_t)i, rec);
    }
    if ((errors = collector_errors(w)) == NULL)
        goto error;
    result = PyTuple_Pack(2, list, errors);
error:
    if (w->arena_cap > PS_ARENA_KEEP) { /* a walk with many new huge cmdlines */
        free(w->arena);
        w->arena = NULL;
        w->arena_cap = w->arena_len = 0;
    }
    PyThread_release_lock(self->lock);
    Py_XDECREF(list);
    Py_XDECREF(errors);
    return result;
}

PyDoc_STRVAR(Collector_close_doc,
"close()\n\nClose the kept file descriptors and drop the cached static facts.");

static PyObject *Collector_close(CollectorObject *self, PyObject *unused)
{
    (void)unused;
    collector_lock(self);
    walk_close_all(&self->w);
    collector_release_evicted(&self->w);
    PyThread_release_lock(self->lock);
    Py_RETURN_NONE;
}

static PyObject *Collector_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"procfs", "record_type", "clock_ticks", "page_size", "boot_time",
                             NULL};
    PyObject *procfs, *record_type, *hz, *page, *boot, *path = NULL, *fields = NULL;
    CollectorObject *self = NULL;
    Py_ssize_t nfields;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO:Collector", kwlist, &procfs,
                                     &record_type, &hz, &page, &boot))
        return NULL;
    if (!PyType_Check(record_type) ||
        !PyType_IsSubtype((PyTypeObject *)record_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "record_type must be a tuple subclass");
        return NULL;
    }
    fields = PyObject_GetAttrString(record_type, "_fields");
    nfields = fields ? PyObject_Length(fields) : -1;
    Py_XDECREF(fields);
    if (nfields != PS_NFIELDS) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "record_type must have %d fields, not %zd", PS_NFIELDS,
                     nfields);
        return NULL;
    }
    if (!PyLong_Check(hz) || !PyLong_Check(page)) {
        PyErr_SetString(PyExc_TypeError, "clock_ticks and page_size must be int");
        return NULL;
    }
    if (!PyUnicode_FSConverter(procfs, &path))
        return NULL;
    if ((self = (CollectorObject *)type->tp_alloc(type, 0)) == NULL)
        goto error;
    self->procfs = Py_NewRef(procfs);
    self->record_type = Py_NewRef(record_type);
    self->hz_obj = Py_NewRef(hz);
    self->page_obj = Py_NewRef(page);
    self->hz = PyLong_AsUnsignedLongLong(hz);
    if (PyErr_Occurred())
        goto error;
    if (self->hz == 0) {
        PyErr_SetString(PyExc_ValueError, "clock_ticks must be > 0");
        goto error;
    }
    self->page = PyLong_AsUnsignedLongLong(page);
    if (PyErr_Occurred())
        goto error;
    self->boot = PyFloat_AsDouble(boot);
    if (self->boot == -1.0 && PyErr_Occurred())
        goto error;
    if ((self->lock = PyThread_allocate_lock()) == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    if (walk_init(&self->w, PyBytes_AS_STRING(path)) < 0) {
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

static int Collector_traverse(CollectorObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->procfs);
    Py_VISIT(self->record_type);
    Py_VISIT(self->hz_obj);
    Py_VISIT(self->page_obj);
    return 0;
}

static int Collector_clear(CollectorObject *self)
{
    Py_CLEAR(self->procfs);
    Py_CLEAR(self->record_type);
    Py_CLEAR(self->hz_obj);
    Py_CLEAR(self->page_obj);
    return 0;
}

static void Collector_dealloc(CollectorObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    PyObject_GC_UnTrack(self);
    if (self->ready) {
        walk_close_all(&self->w);
        collector_release_evicted(&self->w);
        walk_free(&self->w);
    }
    if (self->lock != NULL)
        PyThread_free_lock(self->lock);
    Collector_clear(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef Collector_methods[] = {
    {"collect", (PyCFunction)Collector_collect, METH_VARARGS, Collector_collect_doc},
    {"close", (PyCFunction)Collector_close, METH_NOARGS, Collector_close_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Collector_doc,
"Collector(procfs, record_type, clock_ticks, page_size, boot_time)\n\n"
"Snapshots of every process under a procfs root; keeps /proc/PID/{stat,status,io}\n"
"open between snapshots and the static facts of each identity.");

static PyType_Slot Collector_slots[] = {
    {Py_tp_new, Collector_new},
    {Py_tp_dealloc, Collector_dealloc},
    {Py_tp_traverse, Collector_traverse},
    {Py_tp_clear, Collector_clear},
    {Py_tp_methods, Collector_methods},
    {Py_tp_doc, (void *)Collector_doc},
    {0, NULL},
};

static PyType_Spec Collector_spec = {
    .name = "exporter._collector.Collector",
    .basicsize = sizeof(CollectorObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = Collector_slots,
};

/* ---- the module ---------------------------------------------------------------------- */

static int module_exec(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &Collector_spec, NULL);
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

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "exporter._collector",
    .m_doc = "The C collector of procsnap: one batched, GIL-free walk of a procfs root.",
    .m_size = 0,
    .m_slots = module_slots,
};

PyMODINIT_FUNC PyInit__collector(void)
{
    return PyModuleDef_Init(&module_def);
}
