/* exporter._bpf: the BPF backend's reader type. read() runs psb_collect (loader.c) with
 * the GIL released and the reader's lock held, then turns its processes into plain tuples
 * of exporter/reader.py's layout, as exporter._reader does. Built only where clang and
 * libbpf are there (setup.py); exporter/reader.py falls back to /proc without it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include <errno.h>
#include <string.h>

#include "loader.h"
#include "../pytuple.h"

#define PSB_RECORD_LEN (F_COUNT + 4) /* pid, comm, state, wchan beside the numeric fields */

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    psb *b;
} BpfReaderObject;

/* The str of text, reusing *cache while it is the same text. A new reference. */
static PyObject *bpf_cached_text(void **cache, const char *text, size_t len)
{
    PyObject *obj = (PyObject *)*cache, *fresh;
    Py_ssize_t n;
    const char *utf8;

    if (obj != NULL) {
        utf8 = PyUnicode_AsUTF8AndSize(obj, &n);
        if (utf8 != NULL && (size_t)n == len && memcmp(utf8, text, len) == 0)
            return Py_NewRef(obj);
        PyErr_Clear();
    }
    fresh = PyUnicode_DecodeUTF8(text, (Py_ssize_t)len, "replace");
    if (fresh == NULL)
        return NULL;
    Py_XSETREF(obj, Py_NewRef(fresh));
    *cache = obj;
    return fresh;
}

static PyObject *bpf_record(psb_proc *p)
{
    PyObject *rec = PyTuple_New(PSB_RECORD_LEN);
    Py_ssize_t k = 0;
    int f;

    if (rec == NULL)
        return NULL;
    TUPLE_PUT(rec, k, PyLong_FromLong(p->pid));
    TUPLE_PUT(rec, k, PyLong_FromUnsignedLongLong(p->num[F_PPID]));
    TUPLE_PUT(rec, k, bpf_cached_text(&p->comm_obj, p->comm, p->comm_len));
    TUPLE_PUT(rec, k, PyUnicode_FromStringAndSize(&p->state, 1));
    for (f = F_FLAGS; f < F_COUNT; f++)
        TUPLE_PUT(rec, k, (p->has & (1u << f)) ? PyLong_FromUnsignedLongLong(p->num[f]) : Py_NewRef(Py_None));
    if (p->wchan == NULL)
        TUPLE_PUT(rec, k, Py_NewRef(Py_None));
    else
        TUPLE_PUT(rec, k, bpf_cached_text(&p->wchan_obj, p->wchan, p->wchan_len));
    PyObject_GC_UnTrack(rec); /* ints and strs only */
    return rec;
error:
    Py_DECREF(rec);
    return NULL;
}

static void bpf_release(psb *b)
{
    size_t n, i;
    void **gone = psb_released(b, &n);

    for (i = 0; i < n; i++)
        Py_XDECREF((PyObject *)gone[i]);
}

/* The int of a soft fd limit, or None; a process' limit is mostly one of a few values, so
 * the last few objects are reused (cache: 4 slots, owned by the caller). */
static PyObject *bpf_nofile(const psb_proc *p, PyObject **cache)
{
    PyObject *obj;
    int i;

    if (!p->has_nofile)
        return Py_NewRef(Py_None);
    for (i = 0; i < 4 && cache[i] != NULL; i++)
        if (PyLong_AsUnsignedLongLong(cache[i]) == p->nofile)
            return Py_NewRef(cache[i]);
    if ((obj = PyLong_FromUnsignedLongLong(p->nofile)) == NULL)
        return NULL;
    i = i < 4 ? i : 3;
    Py_XSETREF(cache[i], Py_NewRef(obj));
    return obj;
}

PyDoc_STRVAR(BpfReader_read_doc,
"read() -> (records, unreadable, errors, nofile)\n\n"
"One pass of the BPF task iterator with the GIL released: a tuple per process (layout:\n"
"exporter.reader.FIELDS) sorted by pid, the same object as at the last (complete) read\n"
"while every field is the same; unreadable is always empty (the kernel's own structures have no\n"
"permissions); errors: {errno: count} of the /proc files read as fallbacks (-1:\n"
"malformed); nofile: each record's soft RLIMIT_NOFILE (2**64 - 1: unlimited) or None.");

static PyObject *BpfReader_read(BpfReaderObject *self, PyObject *unused)
{
    PyObject *records = NULL, *unreadable = NULL, *errors = NULL, *nofile = NULL, *result = NULL, *item;
    PyObject *limits[4] = {NULL, NULL, NULL, NULL};
    psb_proc *procs;
    size_t n, i;
    int rc, err = 0;

    (void)unused;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    rc = self->b == NULL ? 1 : psb_collect(self->b, &err);
    Py_END_ALLOW_THREADS
    if (rc == 1) { /* closed (checked under the lock: close() takes it too) */
        PyThread_release_lock(self->lock);
        PyErr_SetString(PyExc_ValueError, "the BPF reader is closed");
        return NULL;
    }
    bpf_release(self->b);
    if (rc < 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    procs = psb_procs(self->b, &n);
    if ((records = PyList_New((Py_ssize_t)n)) == NULL || (nofile = PyList_New((Py_ssize_t)n)) == NULL)
        goto done;
    for (i = 0; i < n; i++) {
        psb_proc *p = &procs[i];
        if (p->same) {
            item = Py_NewRef((PyObject *)p->rec_obj);
        } else {
            if ((item = bpf_record(p)) == NULL)
                goto done;
            Py_XSETREF(*(PyObject **)&p->rec_obj, Py_NewRef(item));
        }
        PyList_SET_ITEM(records, (Py_ssize_t)i, item);
        if ((item = bpf_nofile(p, limits)) == NULL)
            goto done;
        PyList_SET_ITEM(nofile, (Py_ssize_t)i, item);
    }
    {
        uint32_t malformed;
        const uint32_t *counts = psb_errors(self->b, &malformed);

        if ((unreadable = PyList_New(0)) == NULL || (errors = errors_dict(counts, malformed)) == NULL)
            goto done;
    }
    result = PyTuple_Pack(4, records, unreadable, errors, nofile);
done:
    if (result == NULL) { /* records left unbuilt do not stand for what was read */
        procs = psb_procs(self->b, &n);
        for (i = 0; i < n; i++)
            Py_CLEAR(*(PyObject **)&procs[i].rec_obj);
    }
    PyThread_release_lock(self->lock);
    for (i = 0; i < 4; i++)
        Py_XDECREF(limits[i]);
    Py_XDECREF(nofile);
    Py_XDECREF(records);
    Py_XDECREF(unreadable);
    Py_XDECREF(errors);
    return result;
}

static void bpf_close(BpfReaderObject *self)
{
    psb_proc *procs;
    size_t n, i;

    if (self->b == NULL)
        return;
    procs = psb_procs(self->b, &n);
    for (i = 0; i < n; i++) {
        Py_CLEAR(*(PyObject **)&procs[i].comm_obj);
        Py_CLEAR(*(PyObject **)&procs[i].wchan_obj);
        Py_CLEAR(*(PyObject **)&procs[i].rec_obj);
    }
    psb_close(self->b);
    self->b = NULL;
}

PyDoc_STRVAR(BpfReader_close_doc, "close()\n\nDetach the iterator and unload the program.");

static PyObject *BpfReader_close(BpfReaderObject *self, PyObject *unused)
{
    (void)unused;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    Py_END_ALLOW_THREADS
    bpf_close(self);
    PyThread_release_lock(self->lock);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(BpfReader_describe_doc, "describe() -> str\n\nWhat the loaded program reads how (key=value lines).");

static PyObject *BpfReader_describe(BpfReaderObject *self, PyObject *unused)
{
    (void)unused;
    if (self->b == NULL)
        return PyUnicode_FromString("");
    return PyUnicode_FromString(psb_describe(self->b));
}

PyDoc_STRVAR(BpfReader_stacks_doc,
"stacks() -> (walked, kept, lost)\n\n"
"Kernel stacks of the last read: walked for a wchan; not walked because the process had\n"
"not run since its last walk (its wchan kept); of those, the ones whose last walk was not\n"
"kept here (a failed read between), their wchan read from /proc.");

static PyObject *BpfReader_stacks(BpfReaderObject *self, PyObject *unused)
{
    uint32_t walked = 0, kept = 0, lost = 0;

    (void)unused;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    Py_END_ALLOW_THREADS
    if (self->b != NULL)
        psb_stacks(self->b, &walked, &kept, &lost);
    PyThread_release_lock(self->lock);
    return Py_BuildValue("(III)", walked, kept, lost);
}

static PyObject *BpfReader_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"procfs", "page_size", "wchan", "smaps_max_rss", "reject", NULL};
    PyObject *procfs, *path = NULL, *smaps_max_rss = Py_None;
    unsigned long long page_size, smaps_max = 0;
    int wchan = 1, reject = 0, rc;
    char msg[512];
    BpfReaderObject *self = NULL;
    psb *b = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OK|pOi:Reader", kwlist, &procfs, &page_size, &wchan,
                                     &smaps_max_rss, &reject))
        return NULL;
    if (smaps_max_rss != Py_None) {
        smaps_max = PyLong_AsUnsignedLongLong(smaps_max_rss);
        if (smaps_max == (unsigned long long)-1 && PyErr_Occurred())
            return NULL;
    }
    if (page_size == 0) {
        PyErr_SetString(PyExc_ValueError, "page_size must be > 0");
        return NULL;
    }
    if (!PyUnicode_FSConverter(procfs, &path))
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    rc = psb_open(&b, PyBytes_AS_STRING(path), page_size, wchan, smaps_max_rss != Py_None, smaps_max, reject, msg,
                  sizeof(msg));
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (rc < 0) {
        PyObject *exc = PyObject_CallFunction(PyExc_OSError, "is", -rc, msg);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    if ((self = (BpfReaderObject *)type->tp_alloc(type, 0)) == NULL)
        goto error;
    if ((self->lock = PyThread_allocate_lock()) == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    self->b = b;
    return (PyObject *)self;
error:
    if (self != NULL && self->b == NULL)
        psb_close(b);
    else if (self == NULL)
        psb_close(b);
    Py_XDECREF(self);
    return NULL;
}

static int BpfReader_traverse(BpfReaderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static void BpfReader_dealloc(BpfReaderObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);

    PyObject_GC_UnTrack(self);
    bpf_close(self);
    if (self->lock != NULL)
        PyThread_free_lock(self->lock);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyMethodDef BpfReader_methods[] = {
    {"read", (PyCFunction)BpfReader_read, METH_NOARGS, BpfReader_read_doc},
    {"close", (PyCFunction)BpfReader_close, METH_NOARGS, BpfReader_close_doc},
    {"describe", (PyCFunction)BpfReader_describe, METH_NOARGS, BpfReader_describe_doc},
    {"stacks", (PyCFunction)BpfReader_stacks, METH_NOARGS, BpfReader_stacks_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(BpfReader_doc,
"Reader(procfs, page_size, wchan=True, smaps_max_rss=None, reject=0)\n\n"
"Loads procsnap's BPF task iterator (needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN;\n"
"Linux >= 5.8 with BTF). procfs: this pid namespace's /proc (fallback reads).\n"
"reject (tests): 1: the verifier refuses the program (the fallback to /proc); 2: only\n"
"the program that keeps stacks in task storage (the load without it). Raises\n"
"OSError(errno, reason) when it cannot load.");

static PyType_Slot BpfReader_slots[] = {
    {Py_tp_new, BpfReader_new},
    {Py_tp_dealloc, BpfReader_dealloc},
    {Py_tp_traverse, BpfReader_traverse},
    {Py_tp_methods, BpfReader_methods},
    {Py_tp_doc, (void *)BpfReader_doc},
    {0, NULL},
};

static PyType_Spec BpfReader_spec = {
    .name = "exporter._bpf.Reader",
    .basicsize = sizeof(BpfReaderObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = BpfReader_slots,
};

static int bpf_module_exec(PyObject *module)
{
    PyObject *type = PyType_FromModuleAndSpec(module, &BpfReader_spec, NULL);
    int rc;

    if (type == NULL)
        return -1;
    rc = PyModule_AddType(module, (PyTypeObject *)type);
    Py_DECREF(type);
    return rc;
}

static PyModuleDef_Slot bpf_module_slots[] = {
    {Py_mod_exec, bpf_module_exec},
#ifdef Py_mod_gil
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef bpf_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "exporter._bpf",
    .m_doc = "procsnap's BPF task-iterator reader (libbpf).",
    .m_size = 0,
    .m_slots = bpf_module_slots,
};

PyMODINIT_FUNC PyInit__bpf(void)
{
    return PyModuleDef_Init(&bpf_module_def);
}
