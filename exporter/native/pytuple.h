/* What both readers' CPython modules (module.c, bpf/bpfmodule.c) use to hand their C
 * output to Python: a tuple filler and the errno counts as a dict (sums.c uses the
 * filler). Include after Python.h (and reader.h for errors_dict). */
#ifndef PROCSNAP_PYTUPLE_H
#define PROCSNAP_PYTUPLE_H

/* t[k++] = expr, or goto error when expr failed (NULL) */
#define TUPLE_PUT(t, k, expr)                                                              \
    do {                                                                                   \
        PyObject *item_ = (expr);                                                          \
        if (item_ == NULL)                                                                 \
            goto error;                                                                    \
        PyTuple_SET_ITEM((t), (k)++, item_);                                               \
    } while (0)

/* errno counts -> {errno: count}, PS_MALFORMED (-1) for files that do not parse. */
static inline PyObject *errors_dict(const uint32_t *errors, uint32_t malformed)
{
    PyObject *dict = PyDict_New(), *key = NULL, *count = NULL;
    int i;

    if (dict == NULL)
        return NULL;
    for (i = -1; i <= PS_ERRNO_MAX; i++) {
        uint32_t n = i < 0 ? malformed : errors[i];
        if (n == 0)
            continue;
        if ((key = PyLong_FromLong(i)) == NULL || (count = PyLong_FromUnsignedLong(n)) == NULL ||
            PyDict_SetItem(dict, key, count) < 0)
            goto error;
        Py_CLEAR(key);
        Py_CLEAR(count);
    }
    return dict;
error:
    Py_XDECREF(key);
    Py_XDECREF(count);
    Py_DECREF(dict);
    return NULL;
}

#endif
