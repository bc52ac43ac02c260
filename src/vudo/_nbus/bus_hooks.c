/* bus_hooks.c: MessageBus.on_message and the unsubscriber it returns.
 *
 * Each inbox keeps its hooks in a Python list, created on the first on_message and touched
 * only with the GIL; the unsubscriber holds that list, as the Python version's closure holds
 * its inbox, so unsubscribing after unregister is a harmless no-op.
 */
#include "nbus.h"

/* unsubscribe ---------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    PyObject *hooks, *callback;
} UnsubObject;

static PyObject *unsub_call(UnsubObject *self, PyObject *args, PyObject *kw) {
    if (!_PyArg_NoKeywords("unsubscribe", kw) || !PyArg_ParseTuple(args, ":unsubscribe"))
        return NULL;
    Py_ssize_t i = PySequence_Index(self->hooks, self->callback);
    if (i < 0) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) return NULL;
        PyErr_Clear(); /* already unsubscribed */
    } else if (PySequence_DelItem(self->hooks, i) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int unsub_traverse(UnsubObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->hooks);
    Py_VISIT(self->callback);
    return 0;
}

static int unsub_clear(UnsubObject *self) {
    Py_CLEAR(self->hooks);
    Py_CLEAR(self->callback);
    return 0;
}

static void unsub_dealloc(UnsubObject *self) {
    PyObject_GC_UnTrack(self);
    unsub_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyTypeObject NbusUnsubscribeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vudo._nbus.Unsubscribe",
    .tp_basicsize = sizeof(UnsubObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Calling it removes the on_message hook it was returned for (idempotent).",
    .tp_call = (ternaryfunc)unsub_call,
    .tp_dealloc = (destructor)unsub_dealloc,
    .tp_traverse = (traverseproc)unsub_traverse,
    .tp_clear = (inquiry)unsub_clear,
};

PyObject *nbus_bus_on_message(BusObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "on_message(name, callback)");
        return NULL;
    }
    const char *s;
    Py_ssize_t n;
    if (nbus_utf8_of(args[0], &s, &n) < 0) return NULL;
    PyObject *fresh = PyList_New(0); /* made outside the lock, in case it is the first hook */
    UnsubObject *un = PyObject_GC_New(UnsubObject, &NbusUnsubscribeType);
    if (fresh == NULL || un == NULL) {
        Py_XDECREF(fresh);
        Py_XDECREF(un);
        return NULL;
    }
    un->hooks = un->callback = NULL;
    PyObject *hooks = NULL;
    pthread_mutex_lock(&self->bus.lock);
    inbox *ib = bus_find(&self->bus, s, (size_t)n);
    if (ib != NULL) {
        if (ib->hooks == NULL) {
            ib->hooks = fresh;
            fresh = NULL;
        }
        hooks = Py_NewRef(ib->hooks);
    }
    pthread_mutex_unlock(&self->bus.lock);
    Py_XDECREF(fresh);
    if (hooks == NULL) {
        Py_DECREF(un);
        return PyErr_Format(PyExc_KeyError, "no Spirit named %R is registered", args[0]);
    }
    if (PyList_Append(hooks, args[1]) < 0) {
        Py_DECREF(hooks);
        Py_DECREF(un);
        return NULL;
    }
    un->hooks = hooks;
    un->callback = Py_NewRef(args[1]);
    PyObject_GC_Track(un);
    return (PyObject *)un;
}

