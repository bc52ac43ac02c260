/* The per-export call path: a callable with vectorcall doing what spirit._caller_template's
 * generated `call` does (same order, same error paths through the Python `arity`, `convert` and
 * `failed` helpers), with wasmtime_func_call_unchecked called directly. */
#include "native.h"

#include <pthread.h>

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *spirit, *name, *acquire, *release, *stack, *failed, *convert, *arity;
    PyObject *buf, *trapbuf; /* kept alive: `raw` and `trap` point into them */
    PyObject *lock;          /* a native RLock whose acquire/release were passed, or NULL */
    PyObject *dict;          /* the Spirit's (or call state's) __dict__, where the guard is */
    PyObject *guard_name;    /* the guard attribute: "_guard" by default */
    wasmtime_context_t *ctx;
    wasmtime_func_t *func;
    wasmtime_val_raw_t *raw;
    wasm_trap_t **trap;
    size_t nslots;
    int tracked;
    Py_ssize_t nparams, nresults;
    char types[]; /* nparams codes then nresults codes: i (i32), q (i64), f (f32), d (f64) */
} Caller;

static PyObject *str_guard;

/* The engine's wasm stack budget is fixed when it is created: a call on a thread whose stack
 * cannot hold it (plus room for host functions) is refused with StackExhausted rather than
 * left to overflow that stack (vudo/_runtime/stackcheck.py has the policy). */
static _Thread_local char *stack_low; /* lowest address of this thread's stack; NULL unknown */
static _Thread_local int stack_known;
static size_t stack_needed;

static PyObject *stackcheck_call(const char *fn, PyObject *a, PyObject *b, size_t left) {
    PyObject *m = PyImport_ImportModule("vudo._runtime.stackcheck");
    if (m == NULL) return NULL;
    PyObject *r = a == NULL ? PyObject_CallMethod(m, fn, NULL)
                            : PyObject_CallMethod(m, fn, "OOn", a, b, (Py_ssize_t)left);
    Py_DECREF(m);
    return r;
}

static int check_stack(Caller *self) {
    if (!stack_known) {
        pthread_attr_t attr;
        void *addr = NULL;
        size_t size = 0;
        if (pthread_getattr_np(pthread_self(), &attr) == 0) {
            if (pthread_attr_getstack(&attr, &addr, &size) == 0) stack_low = addr;
            pthread_attr_destroy(&attr);
        }
        stack_known = 1;
    }
    if (stack_low == NULL) return 0;
    if (stack_needed == 0) {
        PyObject *r = stackcheck_call("needed", NULL, NULL, 0);
        if (r == NULL) return -1;
        stack_needed = PyLong_AsSize_t(r);
        Py_DECREF(r);
        if (stack_needed == (size_t)-1 && PyErr_Occurred()) {
            stack_needed = 0;
            return -1;
        }
    }
    char *here = __builtin_frame_address(0);
    size_t left = here > stack_low ? (size_t)(here - stack_low) : 0;
    if (left >= stack_needed) return 0;
    Py_XDECREF(stackcheck_call("refuse", self->spirit, self->name, left));
    return -1;
}

/* 0: stored; 1: not representable (let `convert` raise the TypeError); -1: error set. */
static int put_int(PyObject *v, char t, wasmtime_val_raw_t *slot) {
    if (!PyLong_Check(v)) {
        if (PyFloat_Check(v)) return 1;
        PyObject *idx = PyNumber_Index(v); /* e.g. numpy integers, which ctypes accepts */
        if (idx == NULL) {
            PyErr_Clear();
            return 1;
        }
        int rc = put_int(idx, t, slot);
        Py_DECREF(idx);
        return rc;
    }
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow == 0) {
        if (x == -1 && PyErr_Occurred()) return -1;
        if (t == 'i') {
            if (x < -2147483648LL || x > 4294967295LL) return 1;
            slot->i32 = (int32_t)(uint32_t)x; /* wraps like wasm: 2**32 - 1 is -1 */
        } else {
            slot->i64 = x;
        }
        return 0;
    }
    if (overflow > 0 && t == 'q') {
        unsigned long long u = PyLong_AsUnsignedLongLong(v);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 1;
        }
        slot->i64 = (int64_t)u;
        return 0;
    }
    return 1;
}

static int put_float(PyObject *v, char t, wasmtime_val_raw_t *slot) {
    double d;
    if (PyFloat_CheckExact(v)) {
        d = PyFloat_AS_DOUBLE(v);
    } else {
        d = PyFloat_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) return -1; /* e.g. int too large */
            PyErr_Clear();
            return 1;
        }
    }
    if (t == 'f')
        slot->f32 = (float)d;
    else
        slot->f64 = d;
    return 0;
}

static PyObject *get_result(char t, const wasmtime_val_raw_t *slot) {
    switch (t) {
    case 'i': return PyLong_FromLong(slot->i32);
    case 'q': return PyLong_FromLongLong(slot->i64);
    case 'f': return PyFloat_FromDouble((double)slot->f32);
    default: return PyFloat_FromDouble(slot->f64);
    }
}

/* Call a Python helper that is expected to raise; make sure an exception is set after it. */
static void call_raiser(PyObject *fn, PyObject *const *argv, Py_ssize_t n) {
    PyObject *r = PyObject_Vectorcall(fn, argv, n, NULL);
    if (r != NULL) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_TypeError, "cannot convert arguments");
    }
}

static void call_with_args_tuple(PyObject *fn, PyObject *const *args, Py_ssize_t n) {
    PyObject *tuple = PyTuple_New(n);
    if (tuple == NULL) return;
    for (Py_ssize_t i = 0; i < n; i++) PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    call_raiser(fn, &tuple, 1);
    Py_DECREF(tuple);
}

static PyObject *caller_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames) {
    Caller *self = (Caller *)op;
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (self->spirit == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "call path of a freed Spirit");
        return NULL;
    }
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        PyErr_Format(PyExc_TypeError, "call() got an unexpected keyword argument '%U'",
                     PyTuple_GET_ITEM(kwnames, 0));
        return NULL;
    }
    if (n != self->nparams) {
        call_with_args_tuple(self->arity, args, n);
        return NULL;
    }
    if (check_stack(self) < 0) return NULL;
    PyObject *r;
    if (self->lock != NULL) {
        if (vudo_rlock_acquire(self->lock, -1) < 0) return NULL;
    } else {
        r = PyObject_CallNoArgs(self->acquire);
        if (r == NULL) return NULL;
        Py_DECREF(r);
    }

    PyObject *result = NULL;
    PyObject *guard = PyDict_GetItemWithError(self->dict, self->guard_name);
    if (guard != NULL) Py_INCREF(guard);
    else if (!PyErr_Occurred()) guard = PyObject_GetAttr(self->spirit, self->guard_name);
    if (guard == NULL) goto done;
    if (guard != Py_None) {
        r = PyObject_CallOneArg(guard, self->name);
        Py_DECREF(guard);
        if (r == NULL) goto done;
        Py_DECREF(r);
    } else {
        Py_DECREF(guard);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        char t = self->types[i];
        int rc = (t == 'i' || t == 'q') ? put_int(args[i], t, &self->raw[i])
                                        : put_float(args[i], t, &self->raw[i]);
        if (rc < 0) goto done;
        if (rc > 0) {
            call_with_args_tuple(self->convert, args, n);
            goto done;
        }
    }
    if (self->tracked && PyList_Append(self->stack, self->name) < 0) goto done;

    *self->trap = NULL; /* a trap left by an interrupted `failed` must not taint this call */
    vudo_frame frame = {vudo_current_frame, NULL};
    if (vudo_release_at_start()) {
        frame.saved = PyEval_SaveThread();
        vudo_stats[1]++;
    } else {
        vudo_stats[0]++;
    }
    vudo_current_frame = &frame;
    wasmtime_error_t *err =
        vudo_wt.func_call_unchecked(self->ctx, self->func, self->raw, self->nslots, self->trap);
    vudo_current_frame = frame.prev;
    if (frame.saved != NULL) PyEval_RestoreThread(frame.saved);

    if (self->tracked) {
        Py_ssize_t size = PyList_GET_SIZE(self->stack);
        if (size == 0) {
            PyErr_SetString(PyExc_IndexError, "pop from empty list");
            goto done;
        }
        if (PyList_SetSlice(self->stack, size - 1, size, NULL) < 0) goto done;
    }
    if (err != NULL || *self->trap != NULL) {
        PyObject *e = err != NULL ? PyLong_FromVoidPtr(err) : Py_NewRef(Py_None);
        if (e == NULL) goto done;
        PyObject *argv[3] = {self->name, e, self->trapbuf};
        r = PyObject_Vectorcall(self->failed, argv, 3, NULL);
        Py_DECREF(e);
        if (r == NULL) goto done;
        Py_DECREF(r);
    }
    const char *rt = self->types + self->nparams;
    if (self->nresults == 0) {
        result = Py_NewRef(Py_None);
    } else if (self->nresults == 1) {
        result = get_result(rt[0], &self->raw[0]);
    } else {
        result = PyTuple_New(self->nresults);
        for (Py_ssize_t i = 0; result != NULL && i < self->nresults; i++) {
            PyObject *v = get_result(rt[i], &self->raw[i]);
            if (v == NULL) Py_CLEAR(result);
            else PyTuple_SET_ITEM(result, i, v);
        }
    }
done:
    if (self->lock != NULL && vudo_rlock_release(self->lock) == 0) return result;
    if (self->lock != NULL) {
        Py_CLEAR(result); /* released by someone else meanwhile: report it */
        return NULL;
    }
    if (result == NULL) {
        PyObject *exc = vudo_fetch_exception();
        r = PyObject_CallNoArgs(self->release);
        if (r == NULL) {
            Py_XDECREF(exc); /* like a `finally` that raises: its exception wins */
        } else {
            Py_DECREF(r);
#if PY_VERSION_HEX >= 0x030C0000
            PyErr_SetRaisedException(exc);
#else
            if (exc != NULL)
                PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc,
                              PyException_GetTraceback(exc));
#endif
        }
    } else {
        r = PyObject_CallNoArgs(self->release);
        if (r == NULL) Py_CLEAR(result);
        else Py_DECREF(r);
    }
    return result;
}

static int valid_codes(const char *s) {
    for (; *s; s++)
        if (*s != 'i' && *s != 'q' && *s != 'f' && *s != 'd') return 0;
    return 1;
}

static PyObject *caller_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *spirit, *name, *acquire, *release, *stack, *buf, *trapbuf, *failed, *convert,
        *arity;
    unsigned long long ctx, faddr, baddr, taddr;
    Py_ssize_t nslots;
    const char *params, *results;
    int tracked;
    PyObject *guard_name = str_guard;
    if (!PyArg_ParseTuple(args, "OUOOO!KKOKOKnOOOssp|U:Caller", &spirit, &name, &acquire,
                          &release, &PyList_Type, &stack, &ctx, &faddr, &buf, &baddr, &trapbuf,
                          &taddr, &nslots, &failed, &convert, &arity, &params, &results,
                          &tracked, &guard_name))
        return NULL;
    size_t np = strlen(params), nr = strlen(results);
    if (!valid_codes(params) || !valid_codes(results)) {
        PyErr_SetString(PyExc_ValueError, "type codes are i, q, f, d");
        return NULL;
    }
    if ((size_t)nslots < (np > nr ? np : nr) || !ctx || !faddr || !baddr || !taddr) {
        PyErr_SetString(PyExc_ValueError, "bad call-path buffers");
        return NULL;
    }
    Caller *self = (Caller *)type->tp_alloc(type, (Py_ssize_t)(np + nr + 1));
    if (self == NULL) return NULL;
    self->vectorcall = caller_vectorcall;
    self->spirit = Py_NewRef(spirit);
    self->name = Py_NewRef(name);
    self->acquire = Py_NewRef(acquire);
    self->release = Py_NewRef(release);
    self->stack = Py_NewRef(stack);
    self->buf = Py_NewRef(buf);
    self->trapbuf = Py_NewRef(trapbuf);
    self->failed = Py_NewRef(failed);
    self->convert = Py_NewRef(convert);
    self->guard_name = Py_NewRef(guard_name);
    self->dict = PyObject_GenericGetDict(spirit, NULL);
    if (self->dict == NULL || !PyDict_Check(self->dict)) {
        Py_DECREF(self);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "the Spirit has no __dict__");
        return NULL;
    }
    if (PyCFunction_Check(acquire) && PyCFunction_Check(release) &&
        PyCFunction_GET_SELF(acquire) != NULL &&
        PyCFunction_GET_SELF(acquire) == PyCFunction_GET_SELF(release) &&
        vudo_rlock_check(PyCFunction_GET_SELF(acquire)))
        self->lock = Py_NewRef(PyCFunction_GET_SELF(acquire));
    self->arity = Py_NewRef(arity);
    self->ctx = (wasmtime_context_t *)(uintptr_t)ctx;
    self->func = (wasmtime_func_t *)(uintptr_t)faddr;
    self->raw = (wasmtime_val_raw_t *)(uintptr_t)baddr;
    self->trap = (wasm_trap_t **)(uintptr_t)taddr;
    self->nslots = (size_t)nslots;
    self->tracked = tracked;
    self->nparams = (Py_ssize_t)np;
    self->nresults = (Py_ssize_t)nr;
    memcpy(self->types, params, np);
    memcpy(self->types + np, results, nr);
    self->types[np + nr] = 0;
    return (PyObject *)self;
}

#define CALLER_FIELDS(X)                                                                    \
    X(spirit) X(name) X(acquire) X(release) X(stack) X(buf) X(trapbuf) X(failed) X(convert) \
    X(arity) X(lock) X(dict) X(guard_name)

static int caller_traverse(PyObject *op, visitproc visit, void *arg) {
    Caller *self = (Caller *)op;
#define VISIT(f) Py_VISIT(self->f);
    CALLER_FIELDS(VISIT)
#undef VISIT
    return 0;
}

static int caller_clear(PyObject *op) {
    Caller *self = (Caller *)op;
#define CLEAR(f) Py_CLEAR(self->f);
    CALLER_FIELDS(CLEAR)
#undef CLEAR
    return 0;
}

static void caller_dealloc(PyObject *op) {
    PyObject_GC_UnTrack(op);
    caller_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyObject *caller_repr(PyObject *op) {
    Caller *self = (Caller *)op;
    return PyUnicode_FromFormat("<native call path %R>", self->name ? self->name : Py_None);
}

PyTypeObject vudo_CallerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vudo._cnative.Caller",
    .tp_basicsize = sizeof(Caller),
    .tp_itemsize = 1,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "The native call path of one export (see vudo._native_core).",
    .tp_new = caller_new,
    .tp_dealloc = caller_dealloc,
    .tp_traverse = caller_traverse,
    .tp_clear = caller_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Caller, vectorcall),
    .tp_repr = caller_repr,
};

int vudo_caller_init(void) {
    str_guard = PyUnicode_InternFromString("_guard");
    return str_guard == NULL ? -1 : 0;
}
