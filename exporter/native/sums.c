/* exporter._reader.group_columns: the grouper's per-group column sums, in one pass over
 * the records (exporter/grouper.py's group_columns is its twin and the oracle the tests
 * hold it against). It adds up; what a sum means (baselines, counters that never go
 * down, absent values) stays the grouper's. changed_records: which records of a reading
 * differ from the last one's in the columns the tracker watches (its twin:
 * exporter/tracker.py's changed_records_py); what a change means stays the tracker's.
 * Both run with the GIL: they read Python tuples.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>

#include "reader.h"
#include "pytuple.h"

#define PS_MAX_SUMMED 32
#define PS_MAX_COUNTED 4

typedef struct {
    Py_ssize_t members;
    int has_start, has_ratio;
    uint64_t start;
    double ratio;
} ps_group;

/* v as an int: a sum of up to 2^63 values of 64 bits fits in 128 */
static PyObject *u128(unsigned __int128 v)
{
    PyObject *hi, *lo, *shift, *high, *out = NULL;

    if ((v >> 64) == 0)
        return PyLong_FromUnsignedLongLong((uint64_t)v);
    hi = PyLong_FromUnsignedLongLong((uint64_t)(v >> 64));
    lo = PyLong_FromUnsignedLongLong((uint64_t)v);
    shift = PyLong_FromLong(64);
    high = hi && shift ? PyNumber_Lshift(hi, shift) : NULL;
    if (high != NULL && lo != NULL)
        out = PyNumber_Or(high, lo);
    Py_XDECREF(hi);
    Py_XDECREF(lo);
    Py_XDECREF(shift);
    Py_XDECREF(high);
    return out;
}

/* dict[key] += 1 */
static int count_in(PyObject *dict, PyObject *key)
{
    PyObject *old = PyDict_GetItemWithError(dict, key), *now;
    Py_ssize_t n = 0;
    int rc;

    if (old == NULL && PyErr_Occurred())
        return -1;
    if (old != NULL && (n = PyLong_AsSsize_t(old)) < 0 && PyErr_Occurred())
        return -1;
    if ((now = PyLong_FromSsize_t(n + 1)) == NULL)
        return -1;
    rc = PyDict_SetItem(dict, key, now);
    Py_DECREF(now);
    return rc;
}

/* Column c of the record tuple, or NULL with an error set. */
static PyObject *column(PyObject *rec, Py_ssize_t c)
{
    if (!PyTuple_Check(rec) || c < 0 || c >= PyTuple_GET_SIZE(rec)) {
        PyErr_Format(PyExc_ValueError, "a record is not a tuple of more than %zd items", c);
        return NULL;
    }
    return PyTuple_GET_ITEM(rec, c);
}

static int columns_of(PyObject *tuple, Py_ssize_t *out, Py_ssize_t max, const char *what)
{
    Py_ssize_t i, n = PyTuple_GET_SIZE(tuple);

    if (n > max) {
        PyErr_Format(PyExc_ValueError, "at most %zd %s columns", max, what);
        return -1;
    }
    for (i = 0; i < n; i++)
        if ((out[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(tuple, i))) < 0 && PyErr_Occurred())
            return -1;
    return (int)n;
}

/* One record into its group's accumulators. 0 or -1 (error set). */
static int add_record(PyObject *rec, PyObject *limit, ps_group *g, unsigned __int128 *sums, Py_ssize_t *readable,
                      const Py_ssize_t *summed, int nsummed, Py_ssize_t start, Py_ssize_t fds, PyObject **dicts,
                      const Py_ssize_t *counted, int ncounted)
{
    PyObject *v;
    int c;

    g->members++;
    for (c = 0; c < nsummed; c++) {
        unsigned long long x;
        if ((v = column(rec, summed[c])) == NULL)
            return -1;
        if (v == Py_None)
            continue;
        x = PyLong_AsUnsignedLongLong(v);
        if (x == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        sums[c] += x;
        readable[c]++;
    }
    if ((v = column(rec, start)) == NULL)
        return -1;
    if (v != Py_None) {
        unsigned long long x = PyLong_AsUnsignedLongLong(v);
        if (x == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        if (!g->has_start || x < g->start)
            g->start = x;
        g->has_start = 1;
    }
    if ((v = column(rec, fds)) == NULL)
        return -1;
    if (v != Py_None && limit != Py_None) {
        int nonzero = PyObject_IsTrue(limit);
        if (nonzero < 0)
            return -1;
        if (nonzero) { /* Python's own division: the same float as the twin's o / m */
            PyObject *q = PyNumber_TrueDivide(v, limit);
            double d;
            if (q == NULL)
                return -1;
            d = PyFloat_AsDouble(q);
            Py_DECREF(q);
            if (d == -1.0 && PyErr_Occurred())
                return -1;
            if (!g->has_ratio || d > g->ratio)
                g->ratio = d;
            g->has_ratio = 1;
        }
    }
    for (c = 0; c < ncounted; c++) {
        if ((v = column(rec, counted[c])) == NULL)
            return -1;
        if (dicts[c] == NULL && (dicts[c] = PyDict_New()) == NULL)
            return -1;
        if (count_in(dicts[c], v) < 0)
            return -1;
    }
    return 0;
}

/* The result of one group with members. */
static PyObject *group_result(const ps_group *g, const unsigned __int128 *sums, const Py_ssize_t *readable,
                              int nsummed, PyObject **dicts, int ncounted)
{
    PyObject *out = PyTuple_New(6), *s = NULL, *r = NULL, *d = NULL;
    Py_ssize_t k = 0, at;
    int c;

    if (out == NULL)
        return NULL;
    if ((s = PyTuple_New(nsummed)) == NULL || (r = PyTuple_New(nsummed)) == NULL || (d = PyTuple_New(ncounted)) == NULL)
        goto error;
    for (c = 0; c < nsummed; c++) {
        at = c;
        TUPLE_PUT(s, at, u128(sums[c]));
        at = c;
        TUPLE_PUT(r, at, PyLong_FromSsize_t(readable[c]));
    }
    for (c = 0, at = 0; c < ncounted; c++)
        TUPLE_PUT(d, at, dicts[c] != NULL ? Py_NewRef(dicts[c]) : PyDict_New());
    TUPLE_PUT(out, k, PyLong_FromSsize_t(g->members));
    TUPLE_PUT(out, k, s);
    s = NULL;
    TUPLE_PUT(out, k, r);
    r = NULL;
    TUPLE_PUT(out, k, g->has_start ? PyLong_FromUnsignedLongLong(g->start) : Py_NewRef(Py_None));
    TUPLE_PUT(out, k, g->has_ratio ? PyFloat_FromDouble(g->ratio) : Py_NewRef(Py_None));
    TUPLE_PUT(out, k, d);
    return out;
error:
    Py_XDECREF(s);
    Py_XDECREF(r);
    Py_XDECREF(d);
    Py_DECREF(out);
    return NULL;
}

PyObject *ps_group_columns(PyObject *module, PyObject *args)
{
    PyObject *records, *groups, *limits, *summed_t, *counted_t, *out = NULL, **dicts = NULL;
    Py_ssize_t ngroups, start, fds, summed[PS_MAX_SUMMED], counted[PS_MAX_COUNTED], n, i, *readable = NULL;
    unsigned __int128 *sums = NULL;
    ps_group *g = NULL;
    int nsummed, ncounted;

    if (!PyArg_ParseTuple(args, "O!O!nO!nnOO!:group_columns", &PyList_Type, &records, &PyList_Type, &groups,
                          &ngroups, &PyTuple_Type, &summed_t, &start, &fds, &limits, &PyTuple_Type, &counted_t))
        return NULL;
    n = PyList_GET_SIZE(records);
    if (PyList_GET_SIZE(groups) != n || !PyList_Check(limits) || PyList_GET_SIZE(limits) != n || ngroups < 0) {
        PyErr_SetString(PyExc_ValueError, "records, groups and limits differ in length");
        return NULL;
    }
    if ((nsummed = columns_of(summed_t, summed, PS_MAX_SUMMED, "summed")) < 0 ||
        (ncounted = columns_of(counted_t, counted, PS_MAX_COUNTED, "counted")) < 0)
        return NULL;
    g = calloc(ngroups ? (size_t)ngroups : 1, sizeof(*g));
    sums = calloc(ngroups * nsummed + 1, sizeof(*sums));
    readable = calloc(ngroups * nsummed + 1, sizeof(*readable));
    dicts = calloc(ngroups * ncounted + 1, sizeof(*dicts));
    if (g == NULL || sums == NULL || readable == NULL || dicts == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n; i++) {
        PyObject *gi, *rec, *limit;
        Py_ssize_t k;
        int rc;
        /* what add_record calls (division, truth, hashing) could run code that changes
         * the lists: their lengths are checked again and the items held */
        if (PyList_GET_SIZE(records) != n || PyList_GET_SIZE(groups) != n || PyList_GET_SIZE(limits) != n) {
            PyErr_SetString(PyExc_RuntimeError, "records, groups or limits changed during group_columns");
            goto done;
        }
        gi = PyList_GET_ITEM(groups, i);
        if (gi == Py_None)
            continue;
        k = PyLong_AsSsize_t(gi);
        if (k < 0 || k >= ngroups) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "group index %zd is not below %zd", k, ngroups);
            goto done;
        }
        rec = Py_NewRef(PyList_GET_ITEM(records, i));
        limit = Py_NewRef(PyList_GET_ITEM(limits, i));
        rc = add_record(rec, limit, &g[k], sums + k * nsummed, readable + k * nsummed, summed, nsummed, start, fds,
                        dicts + k * ncounted, counted, ncounted);
        Py_DECREF(rec);
        Py_DECREF(limit);
        if (rc < 0)
            goto done;
    }
    if ((out = PyList_New(ngroups)) == NULL)
        goto done;
    for (i = 0; i < ngroups; i++) {
        PyObject *item = g[i].members == 0 ? Py_NewRef(Py_None)
                                           : group_result(&g[i], sums + i * nsummed, readable + i * nsummed, nsummed,
                                                          dicts + i * ncounted, ncounted);
        if (item == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, item);
    }
done:
    if (dicts != NULL)
        for (i = 0; i < ngroups * ncounted; i++)
            Py_XDECREF(dicts[i]);
    free(dicts);
    free(readable);
    free(sums);
    free(g);
    return out;
}

/* ---- changed_records: the tracker's diff of two readings ---------------------------- */

#define PS_MAX_KEY 16

/* Column c of rec as the pid (a C long) of a list sorted by pid, one record per pid: it
 * must be above the one before, after. The pid, or -1 with an error set. */
static long pid_after(PyObject *rec, Py_ssize_t c, long after, const char *which)
{
    PyObject *v = column(rec, c);
    long pid;

    if (v == NULL)
        return -1;
    pid = PyLong_AsLong(v);
    if (pid < 0 && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "a negative pid");
    if (pid >= 0 && pid <= after) {
        PyErr_Format(PyExc_ValueError, "%s are not sorted by pid, one per pid", which);
        pid = -1;
    }
    return pid;
}

/* Do records a and b differ in any of columns cols[0..n)? 1, 0, or -1 (error set). */
static int differ(PyObject *a, PyObject *b, const Py_ssize_t *cols, int n)
{
    PyObject *x, *y;
    int k, eq;

    for (k = 0; k < n; k++) {
        if ((x = column(a, cols[k])) == NULL || (y = column(b, cols[k])) == NULL)
            return -1;
        if (x == y)
            continue;
        if ((eq = PyObject_RichCompareBool(x, y, Py_EQ)) < 0)
            return -1;
        if (!eq)
            return 1;
    }
    return 0;
}

static int append_index(PyObject *list, Py_ssize_t i)
{
    PyObject *v = PyLong_FromSsize_t(i);
    int rc;

    if (v == NULL)
        return -1;
    rc = PyList_Append(list, v);
    Py_DECREF(v);
    return rc;
}

/* Append to gone the indices of previous[*j..] whose pid is below `below` (all of them when
 * below < 0): no record has their pid now. Leaves *j at the first one not below, and *last
 * at the pid before it. That one's pid, LONG_MAX past the end, or -1 (error set). */
static long skip_gone(PyObject *previous, Py_ssize_t *j, Py_ssize_t col, long below, long *last, PyObject *gone)
{
    while (*j < PyList_GET_SIZE(previous)) {
        long pid = pid_after(PyList_GET_ITEM(previous, *j), col, *last, "previous records");

        if (pid < 0)
            return -1;
        if (below >= 0 && pid >= below)
            return pid;
        *last = pid;
        if (append_index(gone, (*j)++) < 0)
            return -1;
    }
    return LONG_MAX;
}

PyObject *ps_changed_records(PyObject *module, PyObject *args)
{
    PyObject *records, *previous, *key, *nones, *changed = NULL, *gone = NULL, *holes = NULL, *out = NULL;
    PyObject *held_rec = NULL, *held_before = NULL;
    Py_ssize_t keys[PS_MAX_KEY], none_cols[PS_MAX_KEY], i = 0, j = 0;
    long last_pid = -1, last_prev = -1;
    int nkeys, nnones, rc;

    (void)module;
    if (!PyArg_ParseTuple(args, "O!O!O!O!:changed_records", &PyList_Type, &records, &PyList_Type, &previous,
                          &PyTuple_Type, &key, &PyTuple_Type, &nones))
        return NULL;
    if ((nkeys = columns_of(key, keys, PS_MAX_KEY, "key")) < 0 ||
        (nnones = columns_of(nones, none_cols, PS_MAX_KEY, "checked")) < 0)
        return NULL;
    if (nkeys < 2) {
        PyErr_SetString(PyExc_ValueError, "the key starts with the pid and start columns");
        return NULL;
    }
    if ((changed = PyList_New(0)) == NULL || (gone = PyList_New(0)) == NULL || (holes = PyList_New(0)) == NULL)
        goto done;
    for (i = 0; i < PyList_GET_SIZE(records); i++) {
        PyObject *rec = PyList_GET_ITEM(records, i), *before = NULL, *v;
        long pid, prev_pid;
        int k;

        /* held: reading and comparing may run Python code, which may change the lists */
        Py_INCREF(rec);
        Py_XSETREF(held_rec, rec);
        if ((pid = pid_after(rec, keys[0], last_pid, "records")) < 0)
            goto done;
        last_pid = pid;
        if ((prev_pid = skip_gone(previous, &j, keys[0], pid, &last_prev, gone)) < 0)
            goto done;
        if (prev_pid == pid) {
            before = PyList_GET_ITEM(previous, j);
            last_prev = prev_pid;
            j++;
        }
        Py_XINCREF(before);
        Py_XSETREF(held_before, before);
        if (before != rec) {
            rc = before == NULL ? 1 : differ(rec, before, keys + 1, 1); /* another start: pid reused */
            if (rc < 0 || (rc == 1 && before != NULL && append_index(gone, j - 1) < 0))
                goto done;
            if (rc == 0 && (rc = differ(rec, before, keys + 2, nkeys - 2)) < 0)
                goto done;
            if (rc == 1 && append_index(changed, i) < 0)
                goto done;
        }
        for (k = 0; k < nnones; k++) {
            if ((v = column(rec, none_cols[k])) == NULL)
                goto done;
            if (v == Py_None) {
                if (append_index(holes, i) < 0)
                    goto done;
                break;
            }
        }
    }
    if (skip_gone(previous, &j, keys[0], -1, &last_prev, gone) < 0)
        goto done;
    out = PyTuple_Pack(3, changed, gone, holes);
done:
    Py_XDECREF(held_rec);
    Py_XDECREF(held_before);
    Py_XDECREF(changed);
    Py_XDECREF(gone);
    Py_XDECREF(holes);
    return out;
}
