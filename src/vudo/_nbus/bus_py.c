/* bus_py.c: vudo._nbus.MessageBus, the Python face of the C bus (vudo.broker.MessageBus's API,
 * messages, limits, logging and hooks).
 *
 * Rule that keeps this deadlock-free: nothing that can run Python (allocating GC objects,
 * Py_DECREF, calls) happens while the bus mutex is held; under it only Py_INCREF.
 */
#include "nbus.h"

#include <stdlib.h>
#include <string.h>

static PyTypeObject *message_type;
static PyObject *rc_ok, *rc_error, *rc_not_found, *bus_log;
PyObject *nbus_name_taken;

int nbus_import_python_types(void) {
    if (message_type != NULL) return 0;
    PyObject *broker = PyImport_ImportModule("vudo._host.broker");
    PyObject *abi = broker ? PyImport_ImportModule("vudo.abi") : NULL;
    PyObject *logging = abi ? PyImport_ImportModule("logging") : NULL;
    PyObject *rc = abi ? PyObject_GetAttrString(abi, "ResultCode") : NULL;
    int ok = -1;
    if (rc != NULL && logging != NULL) {
        rc_ok = PyObject_GetAttrString(rc, "OK");
        rc_error = PyObject_GetAttrString(rc, "ERROR");
        rc_not_found = PyObject_GetAttrString(rc, "NOT_FOUND");
        bus_log = PyObject_CallMethod(logging, "getLogger", "s", "vudo.bus");
        PyObject *errors = PyImport_ImportModule("vudo.errors");
        nbus_name_taken = errors ? PyObject_GetAttrString(errors, "NameTaken") : NULL;
        Py_XDECREF(errors);
        if (nbus_name_taken == NULL) {
            Py_XDECREF(rc);
            Py_XDECREF(logging);
            Py_XDECREF(abi);
            Py_XDECREF(broker);
            return -1;
        }
        PyObject *mt = PyObject_GetAttrString(broker, "Message");
        if (mt && PyType_Check(mt) && PyType_IsSubtype((PyTypeObject *)mt, &PyTuple_Type)) {
            message_type = (PyTypeObject *)mt;
            ok = rc_ok && rc_error && rc_not_found && bus_log ? 0 : -1;
        } else {
            Py_XDECREF(mt);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "Message is no tuple");
        }
    }
    Py_XDECREF(rc);
    Py_XDECREF(logging);
    Py_XDECREF(abi);
    Py_XDECREF(broker);
    return ok;
}

PyObject *nbus_code_obj(int code) {
    PyObject *o = code == VUDO_OK ? rc_ok : code == VUDO_NOT_FOUND ? rc_not_found : rc_error;
    Py_INCREF(o);
    return o;
}

/* names and messages -------------------------------------------------------------------------- */
int nbus_utf8_of(PyObject *o, const char **s, Py_ssize_t *n) {
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "a Spirit name must be a str, not %.100s",
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    *s = PyUnicode_AsUTF8AndSize(o, n);
    return *s == NULL ? -1 : 0;
}

static PyObject *sender_name(BusObject *self, const vudo_msg *m) {
    size_t slot = (m->from_len * 31u + (m->from_len ? (uint8_t)m->from_[0] * 7u +
                   (uint8_t)m->from_[m->from_len - 1] : 0u)) % FROM_CACHE;
    PyObject *c = self ? self->from_cache[slot] : NULL;
    if (c != NULL) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(c, &n);
        if (s && (size_t)n == m->from_len && memcmp(s, m->from_, n) == 0) {
            Py_INCREF(c);
            return c;
        }
    }
    PyObject *d = PyUnicode_DecodeUTF8(m->from_, m->from_len, "replace");
    if (d != NULL && self != NULL) {
        Py_INCREF(d);
        Py_XSETREF(self->from_cache[slot], d);
    }
    return d;
}

/* A vudo.broker.Message for msg (from_/to: optional str objects to reuse, borrowed). */
PyObject *nbus_make_message(BusObject *self, const vudo_msg *m, PyObject *from_,
                              PyObject *to) {
    PyObject *t = message_type->tp_alloc(message_type, 5);
    if (t == NULL) return NULL;
    if (from_) Py_INCREF(from_);
    else from_ = sender_name(self, m);
    if (to) Py_INCREF(to);
    else to = PyUnicode_DecodeUTF8(m->to, m->to_len, "replace");
    PyObject *ch = PyLong_FromLongLong(m->channel);
    PyObject *pl = PyBytes_FromStringAndSize((const char *)m->payload, m->payload_len);
    PyObject *ts = PyFloat_FromDouble(m->timestamp);
    PyTuple_SET_ITEM(t, 0, from_);
    PyTuple_SET_ITEM(t, 1, to);
    PyTuple_SET_ITEM(t, 2, ch);
    PyTuple_SET_ITEM(t, 3, pl);
    PyTuple_SET_ITEM(t, 4, ts);
    if (!from_ || !to || !ch || !pl || !ts) {
        Py_DECREF(t);
        return NULL;
    }
    return t;
}

/* after a post: logging and hooks (GIL held) ---------------------------------------------------- */
static int log_call(const char *level, PyObject *args, PyObject *kw) {
    PyObject *fn = args ? PyObject_GetAttrString(bus_log, level) : NULL;
    PyObject *r = fn ? PyObject_Call(fn, args, kw) : NULL;
    Py_XDECREF(fn);
    Py_XDECREF(args);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int run_hooks(vudo_bus *bus, PyObject *hooks, vudo_msg *m, PyObject *from_,
                     PyObject *to) {
    PyObject *snapshot = PySequence_Tuple(hooks);
    PyObject *msg = snapshot ? nbus_make_message((BusObject *)bus->owner, m, from_, to) : NULL;
    int rc = msg ? 0 : -1;
    for (Py_ssize_t i = 0; msg && i < PyTuple_GET_SIZE(snapshot); i++) {
        PyObject *hook = PyTuple_GET_ITEM(snapshot, i);
        PyObject *r = PyObject_CallOneArg(hook, msg);
        if (r != NULL) {
            Py_DECREF(r);
            continue;
        }
        /* A faulty hook must not fail the sender (or its Spirit): log it, traceback included. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL && value != NULL) PyException_SetTraceback(value, tb);
        if (value != NULL && !PyObject_IsInstance(value, PyExc_Exception)) {
            /* Ctrl-C, SystemExit: not a faulty hook; it stops the sender, as in Python. */
            PyErr_Restore(type, value, tb);
            rc = -1;
            break;
        }
        PyObject *kw = Py_BuildValue("{sO}", "exc_info", value ? value : Py_None);
        if (kw == NULL || log_call("error", Py_BuildValue("(sOO)", "on_message hook %r for %r "
                                                          "raised", hook, to), kw) < 0)
            PyErr_WriteUnraisable(hook);
        Py_XDECREF(kw);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
    Py_XDECREF(msg);
    Py_XDECREF(snapshot);
    return rc;
}

static int needs_python(const vudo_bus *bus, const post_info *info) {
    if (info->code == VUDO_ERROR) return info->first_refusal || bus->debug;
    return info->code == VUDO_OK && (bus->debug || info->hooked != NULL);
}

/* Logging and hooks after bus_post_core; releases what info holds. GIL held. */
int nbus_bus_after_post(vudo_bus *bus, post_info *info, vudo_msg *m, PyObject *from_,
                        PyObject *to) {
    int rc = 0;
    if (needs_python(bus, info)) {
        BusObject *owner = (BusObject *)bus->owner;
        PyObject *f = from_ ? Py_NewRef(from_) : sender_name(owner, m);
        PyObject *t = to ? Py_NewRef(to) : info->pyname ? Py_NewRef(info->pyname)
                                         : PyUnicode_DecodeUTF8(m->to, m->to_len, "replace");
        if (f == NULL || t == NULL) {
            rc = -1;
        } else if (info->code == VUDO_ERROR) {
            rc = info->first_refusal
                ? log_call("warning", Py_BuildValue("(sOLO)", "inbox of %r is full (%d messages)"
                           ": refusing messages, starting with one from %r", t,
                           (long long)info->capacity, f), NULL)
                : log_call("debug", Py_BuildValue("(sOLO)", "inbox of %r full (%d); refused "
                           "message from %r", t, (long long)info->capacity, f), NULL);
        } else {
            if (bus->debug)
                rc = log_call("debug", Py_BuildValue("(sOOLk)", "message %r -> %r ch=%d %d bytes",
                              f, t, (long long)m->channel, (unsigned long)m->payload_len), NULL);
            if (rc == 0 && info->hooked != NULL) {
                PyObject *hooks = info->hooks;
                info->hooks = NULL;
                if (hooks == NULL) { /* posted without the GIL: find the hooks again */
                    pthread_mutex_lock(&bus->lock);
                    inbox *ib = bus_find(bus, m->to, m->to_len);
                    if (ib != NULL && ib->hooks != NULL) hooks = Py_NewRef(ib->hooks);
                    pthread_mutex_unlock(&bus->lock);
                }
                if (hooks != NULL) rc = run_hooks(bus, hooks, info->hooked, f, t);
                Py_XDECREF(hooks);
            }
        }
        Py_XDECREF(f);
        Py_XDECREF(t);
    }
    Py_CLEAR(info->hooks);
    Py_CLEAR(info->pyname);
    msg_decref(info->hooked);
    info->hooked = NULL;
    return rc;
}

/* Post from C without the GIL (it is taken only for hooks and logging). Consumes msg. */
int nbus_post_nogil(vudo_bus *bus, vudo_msg *msg) {
    post_info info;
    int code = bus_post_core(bus, msg, 0, &info);
    if (needs_python(bus, &info) && Py_IsInitialized()) {
        PyGILState_STATE g = PyGILState_Ensure();
        if (nbus_bus_after_post(bus, &info, msg, NULL, NULL) < 0) PyErr_WriteUnraisable(NULL);
        PyGILState_Release(g);
    } else {
        msg_decref(info.hooked);
    }
    if (code != VUDO_OK) msg_decref(msg);
    return code;
}

/* Post from a host function (GIL not needed): like nbus_post_nogil, but an exception of a
 * hook or of the logging is not swallowed: VUDO_PY_ERROR is returned with it set (the message
 * is queued all the same), as MessageBus.post raises it from Python. */
int nbus_post_host(vudo_bus *bus, vudo_msg *msg) {
    post_info info;
    int code = bus_post_core(bus, msg, 0, &info);
    int rc = 0;
    if (needs_python(bus, &info) && Py_IsInitialized()) {
        PyGILState_STATE g = PyGILState_Ensure();
        rc = nbus_bus_after_post(bus, &info, msg, NULL, NULL);
        PyGILState_Release(g); /* the exception stays set on this thread's state */
    } else {
        msg_decref(info.hooked);
    }
    if (code != VUDO_OK) msg_decref(msg);
    return rc < 0 ? VUDO_PY_ERROR : code;
}

/* Post from Python (GIL held): the code, or VUDO_PY_ERROR with an exception set. */
int nbus_post_py(BusObject *self, PyObject *from_, PyObject *to, const uint8_t *data,
                   size_t len, int64_t channel) {
    const char *f, *t;
    Py_ssize_t fn, tn;
    if (nbus_utf8_of(from_, &f, &fn) < 0 || nbus_utf8_of(to, &t, &tn) < 0) return VUDO_PY_ERROR;
    vudo_msg *m = msg_new(f, (size_t)fn, t, (size_t)tn, data, len, channel, now_ms());
    if (m == NULL) {
        PyErr_NoMemory();
        return VUDO_PY_ERROR;
    }
    post_info info;
    int code = bus_post_core(&self->bus, m, 1, &info);
    int rc = nbus_bus_after_post(&self->bus, &info, m, from_, to);
    if (code != VUDO_OK) msg_decref(m);
    return rc < 0 ? VUDO_PY_ERROR : code;
}

/* Post to every registered name (a snapshot); returns deliveries or VUDO_PY_ERROR. */
int nbus_bus_broadcast(vudo_bus *bus, const char *from_, size_t from_len,
                       const uint8_t *payload, size_t len, int64_t channel, int gil_held,
                       PyObject *from_obj) {
    pthread_mutex_lock(&bus->lock);
    size_t total = 0, n = bus->count;
    for (inbox *ib = bus->first; ib != NULL; ib = ib->next) total += ib->name_len;
    uint32_t *lens = malloc(n * sizeof *lens + total + 1);
    char *names = (char *)(lens + n);
    if (lens != NULL) {
        size_t k = 0, off = 0;
        for (inbox *ib = bus->first; ib != NULL; ib = ib->next, k++) {
            lens[k] = ib->name_len;
            memcpy(names + off, ib->name, ib->name_len);
            off += ib->name_len;
        }
    }
    pthread_mutex_unlock(&bus->lock);
    if (lens == NULL) {
        if (gil_held == 1) PyErr_NoMemory();
        return gil_held == 1 ? VUDO_PY_ERROR : 0;
    }
    int delivered = 0;
    double ts = now_ms();
    for (size_t k = 0, off = 0; k < n; off += lens[k], k++) {
        vudo_msg *m = msg_new(from_, from_len, names + off, lens[k], payload, len, channel, ts);
        if (m == NULL) continue;
        int code;
        if (gil_held == 1) {
            post_info info;
            code = bus_post_core(bus, m, 1, &info);
            int rc = nbus_bus_after_post(bus, &info, m, from_obj, NULL);
            if (code != VUDO_OK) msg_decref(m);
            if (rc < 0) {
                free(lens);
                return VUDO_PY_ERROR;
            }
        } else if (gil_held == 2) { /* a host function: stop at a raising hook */
            code = nbus_post_host(bus, m);
            if (code == VUDO_PY_ERROR) {
                free(lens);
                return VUDO_PY_ERROR;
            }
        } else {
            code = nbus_post_nogil(bus, m);
        }
        delivered += code == VUDO_OK;
    }
    free(lens);
    return delivered;
}
