/* bus_type.c: the methods and type object of vudo._nbus.MessageBus. */
#include "nbus.h"

#include <stdlib.h>
#include <string.h>

/* Positional-or-keyword arguments of a METH_FASTCALL|METH_KEYWORDS method into out[]
 * (missing optional ones stay NULL). */
static int parse(const char *fn, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                 const char *const *names, int nreq, PyObject **out) {
    int n = 0;
    while (names[n]) n++;
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fn, n,
                     nargs);
        return -1;
    }
    for (int i = 0; i < n; i++) out[i] = i < nargs ? args[i] : NULL;
    for (Py_ssize_t k = 0; kwnames && k < PyTuple_GET_SIZE(kwnames); k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int i = 0;
        while (i < n && PyUnicode_CompareWithASCIIString(key, names[i]) != 0) i++;
        if (i == n || out[i] != NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected or repeated argument %R", fn,
                         key);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (int i = 0; i < nreq; i++)
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fn, names[i]);
            return -1;
        }
    return 0;
}

static int channel_of(PyObject *o, int64_t *ch) {
    *ch = 0;
    if (o == NULL) return 0;
    int rc = nbus_as_i64(o, ch);
    if (rc > 0) PyErr_SetString(PyExc_OverflowError, "channel does not fit in 64 bits");
    return rc ? -1 : 0;
}

static int capacity_of(PyObject *o, int64_t *cap) {
    int rc = nbus_as_i64(o, cap);
    if (rc > 0) *cap = INT64_MAX;
    if (rc < 0) return -1;
    if (*cap < 1) {
        PyErr_SetString(PyExc_ValueError, "inbox capacity must be at least 1");
        return -1;
    }
    return 0;
}

/* A payload as bytes-like: a buffer view (release it) or a new bytes object in *tmp. */
static int payload_of(PyObject *o, Py_buffer *view, PyObject **tmp) {
    *tmp = NULL;
    if (PyObject_GetBuffer(o, view, PyBUF_SIMPLE) == 0) return 0;
    PyErr_Clear();
    *tmp = PyBytes_FromObject(o); /* e.g. a list of ints, as bytes(payload) accepts */
    if (*tmp == NULL) return -1;
    return PyObject_GetBuffer(*tmp, view, PyBUF_SIMPLE);
}

static void payload_done(Py_buffer *view, PyObject *tmp) {
    PyBuffer_Release(view);
    Py_XDECREF(tmp);
}

/* construction --------------------------------------------------------------------------------- */
static PyObject *bus_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    if (nbus_import_python_types() < 0) return NULL;
    BusObject *self = (BusObject *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    if (bus_init(&self->bus, 10000) < 0) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->bus.owner = (PyObject *)self;
    return (PyObject *)self;
}

static int bus_init_py(BusObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"capacity", "debug", NULL};
    PyObject *cap = NULL;
    int debug = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$Op:MessageBus", names, &cap, &debug))
        return -1;
    int64_t c = 10000;
    if (cap != NULL && capacity_of(cap, &c) < 0) return -1;
    self->bus.capacity = c;
    self->bus.debug = debug;
    return 0;
}

static void free_inbox(inbox *ib) {
    inbox_drop_messages(ib);
    Py_XDECREF(ib->pyname);
    Py_XDECREF(ib->hooks);
    free(ib->name);
    free(ib);
}

/* Unlink every inbox (or those of one name) under the lock, free them after. */
static void drop_all(BusObject *self) {
    pthread_mutex_lock(&self->bus.lock);
    inbox *ib = self->bus.first;
    self->bus.first = self->bus.last = NULL;
    memset(self->bus.buckets, 0, self->bus.nbuckets * sizeof *self->bus.buckets);
    self->bus.count = 0;
    pthread_mutex_unlock(&self->bus.lock);
    while (ib != NULL) {
        inbox *next = ib->next;
        free_inbox(ib);
        ib = next;
    }
}

static void bus_dealloc(BusObject *self) {
    PyObject_GC_UnTrack(self);
    if (self->bus.buckets != NULL) {
        drop_all(self);
        bus_destroy(&self->bus);
    }
    for (int i = 0; i < FROM_CACHE; i++) Py_CLEAR(self->from_cache[i]);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int bus_traverse(BusObject *self, visitproc visit, void *arg) {
    /* Hooks lists are visited so a hook that closes over its bus can be collected. */
    for (inbox *ib = self->bus.first; ib != NULL; ib = ib->next) Py_VISIT(ib->hooks);
    return 0;
}

static int bus_clear_refs(BusObject *self) {
    if (self->bus.buckets != NULL) drop_all(self);
    return 0;
}

/* registration --------------------------------------------------------------------------------- */
static PyObject *bus_register(BusObject *self, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames) {
    static const char *const names[] = {"name", "capacity", NULL};
    PyObject *a[2];
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "register(name, *, capacity=None)");
        return NULL;
    }
    if (parse("register", args, nargs, kwnames, names, 1, a) < 0) return NULL;
    int64_t cap = self->bus.capacity;
    if (a[1] != NULL && a[1] != Py_None && capacity_of(a[1], &cap) < 0) return NULL;
    const char *s;
    Py_ssize_t n;
    if (nbus_utf8_of(a[0], &s, &n) < 0) return NULL;
    Py_INCREF(a[0]);
    int rc = bus_add(&self->bus, s, (size_t)n, cap, a[0]);
    if (rc != 0) {
        Py_DECREF(a[0]);
        if (rc < 0) return PyErr_NoMemory();
        return PyErr_Format(nbus_name_taken, "a Spirit named %R is already registered", a[0]);
    }
    Py_RETURN_NONE;
}

static PyObject *bus_unregister(BusObject *self, PyObject *name) {
    const char *s;
    Py_ssize_t n;
    if (nbus_utf8_of(name, &s, &n) < 0) return NULL;
    pthread_mutex_lock(&self->bus.lock);
    inbox *ib = bus_unlink(&self->bus, s, (size_t)n);
    pthread_mutex_unlock(&self->bus.lock);
    if (ib != NULL) free_inbox(ib);
    Py_RETURN_NONE;
}

static PyObject *bus_is_registered(BusObject *self, PyObject *name) {
    const char *s;
    Py_ssize_t n;
    if (nbus_utf8_of(name, &s, &n) < 0) return NULL;
    pthread_mutex_lock(&self->bus.lock);
    int found = bus_find(&self->bus, s, (size_t)n) != NULL;
    pthread_mutex_unlock(&self->bus.lock);
    return PyBool_FromLong(found);
}

static PyObject *bus_spirits(BusObject *self, PyObject *Py_UNUSED(arg)) {
    for (;;) { /* allocate outside the lock (it may run the GC), then fill if nothing changed */
        pthread_mutex_lock(&self->bus.lock);
        size_t n = self->bus.count;
        pthread_mutex_unlock(&self->bus.lock);
        PyObject *list = PyList_New((Py_ssize_t)n);
        if (list == NULL) return NULL;
        pthread_mutex_lock(&self->bus.lock);
        if (self->bus.count == n) {
            size_t k = 0;
            for (inbox *ib = self->bus.first; ib != NULL; ib = ib->next, k++)
                PyList_SET_ITEM(list, k, Py_NewRef(ib->pyname));
            pthread_mutex_unlock(&self->bus.lock);
            return list;
        }
        pthread_mutex_unlock(&self->bus.lock);
        Py_DECREF(list);
    }
}

/* sending -------------------------------------------------------------------------------------- */
static PyObject *post_common(BusObject *self, PyObject *from_, PyObject *to, PyObject *payload,
                             int64_t channel, int as_bool) {
    Py_buffer view;
    PyObject *tmp;
    if (payload_of(payload, &view, &tmp) < 0) return NULL;
    int code = nbus_post_py(self, from_, to, view.buf, (size_t)view.len, channel);
    payload_done(&view, tmp);
    if (code == VUDO_PY_ERROR) return NULL;
    return as_bool ? PyBool_FromLong(code == VUDO_OK) : nbus_code_obj(code);
}

static PyObject *bus_post(BusObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames) {
    static const char *const names[] = {"from_", "to", "payload", "channel", NULL};
    PyObject *a[4];
    int64_t ch;
    if (parse("post", args, nargs, kwnames, names, 3, a) < 0 || channel_of(a[3], &ch) < 0)
        return NULL;
    return post_common(self, a[0], a[1], a[2], ch, 0);
}

static PyObject *bus_send(BusObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames) {
    static const char *const names[] = {"from_", "to", "channel", "payload", NULL};
    PyObject *a[4];
    int64_t ch;
    if (parse("send", args, nargs, kwnames, names, 4, a) < 0 || channel_of(a[2], &ch) < 0)
        return NULL;
    return post_common(self, a[0], a[1], a[3], ch, 1);
}

static PyObject *bus_broadcast(BusObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames) {
    static const char *const names[] = {"from_", "payload", "channel", NULL};
    PyObject *a[3], *tmp;
    int64_t ch;
    const char *f;
    Py_ssize_t fn;
    Py_buffer view;
    if (parse("broadcast", args, nargs, kwnames, names, 2, a) < 0 ||
        channel_of(a[2], &ch) < 0 || nbus_utf8_of(a[0], &f, &fn) < 0 ||
        payload_of(a[1], &view, &tmp) < 0)
        return NULL;
    int n = nbus_bus_broadcast(&self->bus, f, (size_t)fn, view.buf, (size_t)view.len, ch, 1,
                               a[0]);
    payload_done(&view, tmp);
    return n == VUDO_PY_ERROR ? NULL : PyLong_FromLong(n);
}

/* receiving ------------------------------------------------------------------------------------ */
static int name_channel(const char *fn, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames, const char **s, Py_ssize_t *n, int64_t *ch) {
    static const char *const names[] = {"name", "channel", NULL};
    PyObject *a[2];
    if (parse(fn, args, nargs, kwnames, names, 1, a) < 0 || channel_of(a[1], ch) < 0)
        return -1;
    return nbus_utf8_of(a[0], s, n);
}

static PyObject *bus_recv(BusObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames) {
    const char *s;
    Py_ssize_t n;
    int64_t ch;
    if (name_channel("recv", args, nargs, kwnames, &s, &n, &ch) < 0) return NULL;
    PyObject *to = NULL;
    vudo_msg *m = bus_recv_core(&self->bus, s, (size_t)n, ch, &to);
    if (m == NULL) Py_RETURN_NONE;
    PyObject *r = nbus_make_message(self, m, NULL, to);
    Py_XDECREF(to);
    if (r == NULL) bus_requeue_core(&self->bus, m); /* nothing is lost on a MemoryError */
    else msg_decref(m);
    return r;
}

static PyObject *bus_peek(BusObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames) {
    const char *s;
    Py_ssize_t n;
    int64_t ch;
    if (name_channel("peek", args, nargs, kwnames, &s, &n, &ch) < 0) return NULL;
    vudo_msg *m = bus_peek_core(&self->bus, s, (size_t)n, ch);
    if (m == NULL) Py_RETURN_NONE;
    PyObject *r = nbus_make_message(self, m, NULL, NULL);
    msg_decref(m);
    return r;
}

static PyObject *bus_pending(BusObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames) {
    const char *s;
    Py_ssize_t n;
    int64_t ch;
    if (name_channel("pending", args, nargs, kwnames, &s, &n, &ch) < 0) return NULL;
    return PyLong_FromLongLong(bus_pending_core(&self->bus, s, (size_t)n, ch));
}

static PyObject *bus_requeue(BusObject *self, PyObject *message) {
    PyObject *from_, *to, *chan, *payload, *ts;
    if (!PyTuple_Check(message) || PyTuple_GET_SIZE(message) != 5) {
        PyErr_SetString(PyExc_TypeError, "requeue() takes a Message");
        return NULL;
    }
    from_ = PyTuple_GET_ITEM(message, 0);
    to = PyTuple_GET_ITEM(message, 1);
    chan = PyTuple_GET_ITEM(message, 2);
    payload = PyTuple_GET_ITEM(message, 3);
    ts = PyTuple_GET_ITEM(message, 4);
    const char *f, *t;
    Py_ssize_t fn, tn;
    int64_t ch;
    double when = PyFloat_AsDouble(ts);
    if ((when == -1.0 && PyErr_Occurred()) || channel_of(chan, &ch) < 0 ||
        nbus_utf8_of(from_, &f, &fn) < 0 || nbus_utf8_of(to, &t, &tn) < 0)
        return NULL;
    Py_buffer view;
    PyObject *tmp;
    if (payload_of(payload, &view, &tmp) < 0) return NULL;
    vudo_msg *m = msg_new(f, (size_t)fn, t, (size_t)tn, view.buf, (size_t)view.len, ch, when);
    payload_done(&view, tmp);
    if (m == NULL) return PyErr_NoMemory();
    bus_requeue_core(&self->bus, m);
    Py_RETURN_NONE;
}

/* emptying ------------------------------------------------------------------------------------- */
static PyObject *bus_clear(BusObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "clear(name=None)");
        return NULL;
    }
    const char *s = NULL;
    Py_ssize_t n = 0;
    if (nargs == 1 && args[0] != Py_None && nbus_utf8_of(args[0], &s, &n) < 0) return NULL;
    vudo_msg *dropped = NULL; /* a chain of detached queues, freed after the lock */
    pthread_mutex_lock(&self->bus.lock);
    for (inbox *ib = self->bus.first; ib != NULL; ib = ib->next) {
        if (s != NULL && (ib->name_len != (size_t)n || memcmp(ib->name, s, n) != 0)) continue;
        if (ib->tail != NULL) {
            ib->tail->next = dropped;
            dropped = ib->head;
        }
        ib->head = ib->tail = NULL;
        ib->count = 0;
    }
    pthread_mutex_unlock(&self->bus.lock);
    while (dropped != NULL) {
        vudo_msg *next = dropped->next;
        dropped->prev = dropped->next = NULL;
        msg_decref(dropped);
        dropped = next;
    }
    Py_RETURN_NONE;
}

static PyObject *bus_close(BusObject *self, PyObject *Py_UNUSED(arg)) {
    drop_all(self);
    Py_RETURN_NONE;
}

/* attributes and type -------------------------------------------------------------------------- */
static PyObject *get_capacity(BusObject *self, void *Py_UNUSED(c)) {
    return PyLong_FromLongLong(self->bus.capacity);
}

static int set_capacity(BusObject *self, PyObject *v, void *Py_UNUSED(c)) {
    int64_t cap;
    if (v == NULL || capacity_of(v, &cap) < 0) {
        if (v == NULL) PyErr_SetString(PyExc_AttributeError, "cannot delete capacity");
        return -1;
    }
    self->bus.capacity = cap;
    return 0;
}

static PyObject *get_debug(BusObject *self, void *Py_UNUSED(c)) {
    return PyBool_FromLong(self->bus.debug);
}

static int set_debug(BusObject *self, PyObject *v, void *Py_UNUSED(c)) {
    int d = v ? PyObject_IsTrue(v) : -1;
    if (d < 0) {
        if (v == NULL) PyErr_SetString(PyExc_AttributeError, "cannot delete debug");
        return -1;
    }
    self->bus.debug = d;
    return 0;
}

/* Keyword-capable entry points for methods written as one-argument functions (the Python
 * class accepts every argument by keyword too). */
#define ONE_ARG_WRAPPER(py, impl, fn, argname)                                                  \
    static PyObject *py(BusObject *self, PyObject *const *args, Py_ssize_t nargs,            \
                        PyObject *kwnames) {                                                  \
        static const char *const names[] = {argname, NULL};                                   \
        PyObject *a[1];                                                                       \
        if (parse(fn, args, nargs, kwnames, names, 1, a) < 0) return NULL;             \
        return impl(self, a[0]);                                                              \
    }
ONE_ARG_WRAPPER(kw_unregister, bus_unregister, "unregister", "name")
ONE_ARG_WRAPPER(kw_is_registered, bus_is_registered, "is_registered", "name")
ONE_ARG_WRAPPER(kw_requeue, bus_requeue, "requeue", "message")

static PyObject *kw_on_message(BusObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames) {
    static const char *const names[] = {"name", "callback", NULL};
    PyObject *a[2];
    if (parse("on_message", args, nargs, kwnames, names, 2, a) < 0) return NULL;
    return nbus_bus_on_message(self, a, 2);
}

static PyObject *kw_clear(BusObject *self, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames) {
    static const char *const names[] = {"name", NULL};
    PyObject *a[1];
    if (parse("clear", args, nargs, kwnames, names, 0, a) < 0) return NULL;
    return bus_clear(self, a, a[0] != NULL);
}

static PyObject *get_supports_requeue(BusObject *self, void *Py_UNUSED(c)) {
    Py_RETURN_TRUE;
}

/* flush(timeout=None): an accepted message is already in its inbox; nothing to hand over. */
static PyObject *bus_flush(BusObject *self, PyObject *const *args, Py_ssize_t n,
                           PyObject *kwnames) {
    Py_RETURN_TRUE;
}

#define FAST(f) (PyCFunction)(void (*)(void))(f)
static PyMethodDef bus_methods[] = {
    {"register", FAST(bus_register), METH_FASTCALL | METH_KEYWORDS,
     "register(name, *, capacity=None): create the inbox of name; ValueError if it exists."},
    {"unregister", FAST(kw_unregister), METH_FASTCALL | METH_KEYWORDS,
     "unregister(name): drop the inbox of name and its messages; unknown names: no-op."},
    {"is_registered", FAST(kw_is_registered), METH_FASTCALL | METH_KEYWORDS,
     "is_registered(name) -> bool: whether name has an inbox."},
    {"spirits", (PyCFunction)bus_spirits, METH_NOARGS,
     "spirits() -> list[str]: registered names, in registration order."},
    {"post", FAST(bus_post), METH_FASTCALL | METH_KEYWORDS,
     "post(from_, to, payload, channel=0) -> ResultCode: OK, NOT_FOUND, or ERROR when full."},
    {"send", FAST(bus_send), METH_FASTCALL | METH_KEYWORDS,
     "send(from_, to, channel, payload) -> bool: True if the message was queued."},
    {"broadcast", FAST(bus_broadcast), METH_FASTCALL | METH_KEYWORDS,
     "broadcast(from_, payload, channel=0) -> int: post to every Spirit, the sender included."},
    {"recv", FAST(bus_recv), METH_FASTCALL | METH_KEYWORDS,
     "recv(name, channel=0) -> Message | None: take the oldest message (channel 0 = any)."},
    {"peek", FAST(bus_peek), METH_FASTCALL | METH_KEYWORDS,
     "peek(name, channel=0) -> Message | None: the oldest message, left in place."},
    {"pending", FAST(bus_pending), METH_FASTCALL | METH_KEYWORDS,
     "pending(name, channel=0) -> int: messages waiting for name."},
    {"requeue", FAST(kw_requeue), METH_FASTCALL | METH_KEYWORDS,
     "requeue(message): put a message just taken back at the front of its inbox."},
    {"on_message", FAST(kw_on_message), METH_FASTCALL | METH_KEYWORDS,
     "on_message(name, callback) -> unsubscribe: call callback(message) after each delivery."},
    {"clear", FAST(kw_clear), METH_FASTCALL | METH_KEYWORDS,
     "clear(name=None): drop the queued messages of name, or of every inbox."},
    {"close", (PyCFunction)bus_close, METH_NOARGS, "close(): drop every inbox."},
    {"done", FAST(bus_flush), METH_FASTCALL | METH_KEYWORDS,
     "done(name, message=None) -> True: a message leaves its inbox when taken."},
    {"flush", FAST(bus_flush), METH_FASTCALL | METH_KEYWORDS,
     "flush(timeout=None) -> True: messages are in their inbox once accepted."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef bus_getset[] = {
    {"supports_requeue", (getter)get_supports_requeue, NULL,
     "requeue() puts a taken message back: vudo_recv takes, then requeues on a full heap.",
     NULL},
    {"capacity", (getter)get_capacity, (setter)set_capacity,
     "Default inbox size for register().", NULL},
    {"debug", (getter)get_debug, (setter)set_debug,
     "Log every delivery and refusal at DEBUG on vudo.bus.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject NbusBusType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vudo._nbus.MessageBus",
    .tp_basicsize = sizeof(BusObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_doc = "MessageBus(*, capacity=10000, debug=False): vudo.broker.MessageBus in C, one "
              "mutex per bus, usable by C code on any thread without the GIL.",
    .tp_new = bus_new,
    .tp_init = (initproc)bus_init_py,
    .tp_dealloc = (destructor)bus_dealloc,
    .tp_traverse = (traverseproc)bus_traverse,
    .tp_clear = (inquiry)bus_clear_refs,
    .tp_methods = bus_methods,
    .tp_getset = bus_getset,
};

vudo_bus *nbus_bus_from_object(void *o) {
    if (!PyObject_TypeCheck((PyObject *)o, &NbusBusType)) {
        PyErr_SetString(PyExc_TypeError, "expected a vudo._nbus.MessageBus");
        return NULL;
    }
    return &((BusObject *)o)->bus;
}
