/* A re-entrant lock with threading.RLock's API whose uncontended acquire costs a few
 * nanoseconds when the native call path takes it directly: RLock.acquire parses its arguments
 * and reads the clock on every call, which was a third of a native `add` call. Waiting
 * releases the GIL and is interruptible: a signal handler that raises (Ctrl-C) ends the wait
 * with its exception, as with threading.RLock. A contended acquire goes through a Python hook
 * (deadlock detection, waits bounded by the caller's timeout/interrupt/dismiss). */
#include "native.h"

#include <errno.h>
#include <limits.h>
#include <semaphore.h>
#include <time.h>

typedef struct {
    PyObject_HEAD
    sem_t sem;
    _Atomic unsigned long owner;
    unsigned long count;
    PyObject *weakrefs;
} RLock;

int vudo_rlock_check(PyObject *op) { return PyObject_TypeCheck(op, &vudo_RLockType); }

/* Python's handler of a contended acquire (vudo._runtime.spiritlock.contended_wait), or NULL.
 * It checks the waits-for graph for a deadlock and waits in slices through `_wait`, so a
 * timeout, `interrupt()` or `dismiss()` of the caller ends the wait. */
static PyObject *wait_hook = NULL;

/* Block until acquired: 1 acquired, 0 timed out, -1 exception set. timeout < 0: forever. */
static int rlock_wait(RLock *self, double timeout) {
    struct timespec deadline;
    if (timeout > 0) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        double whole = (double)(time_t)timeout;
        deadline.tv_sec += (time_t)timeout;
        deadline.tv_nsec += (long)((timeout - whole) * 1e9);
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    for (;;) {
        int rc, err;
        Py_BEGIN_ALLOW_THREADS
        rc = timeout < 0    ? sem_wait(&self->sem)
             : timeout == 0 ? sem_trywait(&self->sem)
                            : sem_clockwait(&self->sem, CLOCK_MONOTONIC, &deadline);
        err = errno;
        Py_END_ALLOW_THREADS
        if (rc == 0) break;
        if (err == EINTR) {
            if (Py_MakePendingCalls() < 0) return -1; /* runs signal handlers */
            continue;
        }
        if (err == ETIMEDOUT || err == EAGAIN) return 0;
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->owner = PyThread_get_thread_ident();
    self->count = 1;
    return 1;
}

/* 1 acquired, 0 timed out (or busy with timeout 0), -1 exception set. timeout < 0: forever. */
int vudo_rlock_acquire(PyObject *op, double timeout) {
    RLock *self = (RLock *)op;
    unsigned long tid = PyThread_get_thread_ident();
    if (self->count > 0 && self->owner == tid) {
        if (self->count == ULONG_MAX) {
            PyErr_SetString(PyExc_OverflowError, "internal lock count overflowed");
            return -1;
        }
        self->count++;
        return 1;
    }
    if (sem_trywait(&self->sem) == 0) {
        self->owner = tid;
        self->count = 1;
        return 1;
    }
    if (timeout == 0) return 0;
    if (wait_hook != NULL) {
        PyObject *r = PyObject_CallFunction(wait_hook, "Od", op, timeout);
        if (r == NULL) return -1;
        int ok = PyObject_IsTrue(r);
        Py_DECREF(r);
        return ok;
    }
    return rlock_wait(self, timeout);
}

int vudo_rlock_release(PyObject *op) {
    RLock *self = (RLock *)op;
    if (self->count == 0 || self->owner != PyThread_get_thread_ident()) {
        PyErr_SetString(PyExc_RuntimeError, "cannot release un-acquired lock");
        return -1;
    }
    if (--self->count == 0) {
        self->owner = 0;
        sem_post(&self->sem);
    }
    return 0;
}

static PyObject *rlock_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (!_PyArg_NoPositional("RLock", args) || !_PyArg_NoKeywords("RLock", kwds)) return NULL;
    RLock *self = (RLock *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    if (sem_init(&self->sem, 0, 1) != 0) {
        Py_DECREF(self);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return (PyObject *)self;
}

static void rlock_dealloc(PyObject *op) {
    RLock *self = (RLock *)op;
    if (self->weakrefs != NULL) PyObject_ClearWeakRefs(op);
    sem_destroy(&self->sem);
    Py_TYPE(op)->tp_free(op);
}

static PyObject *rlock_acquire_py(PyObject *op, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"blocking", "timeout", NULL};
    int blocking = 1;
    double timeout = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|pd:acquire", kwlist, &blocking, &timeout))
        return NULL;
    if (!blocking && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return NULL;
    }
    if (timeout < 0 && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return NULL;
    }
    int r = vudo_rlock_acquire(op, blocking ? timeout : 0);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

static PyObject *rlock_enter(PyObject *op, PyObject *unused) {
    int r = vudo_rlock_acquire(op, -1);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

static PyObject *rlock_release_py(PyObject *op, PyObject *unused) {
    if (vudo_rlock_release(op) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *rlock_exit(PyObject *op, PyObject *args) {
    return rlock_release_py(op, NULL);
}

static PyObject *rlock_is_owned(PyObject *op, PyObject *unused) {
    RLock *self = (RLock *)op;
    return PyBool_FromLong(self->count > 0 && self->owner == PyThread_get_thread_ident());
}

static PyObject *rlock_wait_py(PyObject *op, PyObject *arg) {
    double seconds = PyFloat_AsDouble(arg);
    if (seconds == -1 && PyErr_Occurred()) return NULL;
    int r = rlock_wait((RLock *)op, seconds < 0 ? 0 : seconds);
    if (r < 0) return NULL;
    return PyBool_FromLong(r);
}

static PyObject *rlock_owner(PyObject *op, void *unused) {
    RLock *self = (RLock *)op;
    return PyLong_FromUnsignedLong(self->count > 0 ? self->owner : 0);
}

static PyObject *rlock_set_wait_hook(PyObject *unused, PyObject *hook) {
    if (hook != Py_None && !PyCallable_Check(hook)) {
        PyErr_SetString(PyExc_TypeError, "the wait hook must be callable or None");
        return NULL;
    }
    Py_XSETREF(wait_hook, hook == Py_None ? NULL : Py_NewRef(hook));
    Py_RETURN_NONE;
}

static PyGetSetDef rlock_getset[] = {
    {"_owner", rlock_owner, NULL, "Ident of the thread holding it, or 0.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *rlock_repr(PyObject *op) {
    RLock *self = (RLock *)op;
    return PyUnicode_FromFormat("<vudo native RLock %s owner=%lu count=%lu>",
                                self->count ? "locked" : "unlocked", self->owner, self->count);
}

static PyMethodDef rlock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))rlock_acquire_py, METH_VARARGS | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool, like threading.RLock."},
    {"release", rlock_release_py, METH_NOARGS, "Release once (RuntimeError if not owned)."},
    {"__enter__", rlock_enter, METH_NOARGS, "acquire()"},
    {"__exit__", rlock_exit, METH_VARARGS, "release()"},
    {"_is_owned", rlock_is_owned, METH_NOARGS, "Whether the calling thread holds it."},
    {"_wait", rlock_wait_py, METH_O,
     "_wait(seconds) -> bool: block up to `seconds` for the lock (the contended path)."},
    {"_set_wait_hook", rlock_set_wait_hook, METH_O | METH_STATIC,
     "Set the Python handler of contended acquires (None: wait in C)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject vudo_RLockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vudo._cnative.RLock",
    .tp_basicsize = sizeof(RLock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A re-entrant lock (threading.RLock's API) the native call path takes directly.",
    .tp_new = rlock_new,
    .tp_dealloc = rlock_dealloc,
    .tp_methods = rlock_methods,
    .tp_getset = rlock_getset,
    .tp_repr = rlock_repr,
    .tp_weaklistoffset = offsetof(RLock, weakrefs),
};
