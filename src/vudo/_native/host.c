/* Host functions: the trampoline into a Python callable (spirit._trampoline_template's `cb` in
 * C) and the registration of every native host function (see builtins.c). Each registration gets a small env owned by the wasmtime store; it points back at
 * its Python owner without a reference (a reference from the store would form a cycle the
 * garbage collector cannot see), and the owner's dealloc clears that pointer. */
#include "host.h"



static PyObject *mask32, *mask64;

/* ------------------------------------------------------------------------------------------ */
/* Packing                                                                                     */
/* ------------------------------------------------------------------------------------------ */
static PyObject *box(char t, const wasmtime_val_raw_t *slot) {
    switch (t) {
    case 'i': return PyLong_FromLong(slot->i32);
    case 'q': return PyLong_FromLongLong(slot->i64);
    case 'f': return PyFloat_FromDouble((double)slot->f32);
    default: return PyFloat_FromDouble(slot->f64);
    }
}

/* `value & mask` packed as struct's I/Q would (the Python trampoline's exact errors). */
static int pack(PyObject *v, char t, wasmtime_val_raw_t *slot) {
    if (t == 'i' || t == 'q') {
        if (PyLong_Check(v)) {
            int overflow;
            long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
            if (overflow == 0 && !(x == -1 && PyErr_Occurred())) {
                if (t == 'i') slot->i32 = (int32_t)(uint32_t)(unsigned long long)x;
                else slot->i64 = x;
                return 0;
            }
            PyErr_Clear();
        }
        PyObject *m = PyNumber_And(v, t == 'i' ? mask32 : mask64);
        if (m == NULL) return -1;
        PyObject *idx = PyNumber_Index(m);
        Py_DECREF(m);
        if (idx == NULL) {
            PyErr_SetString(vudo_struct_error, "required argument is not an integer");
            return -1;
        }
        unsigned long long u = PyLong_AsUnsignedLongLongMask(idx);
        Py_DECREF(idx);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) return -1;
        if (t == 'i') slot->i32 = (int32_t)(uint32_t)u;
        else slot->i64 = (int64_t)u;
        return 0;
    }
    double d = PyFloat_AsDouble(v);
    if (d == -1.0 && PyErr_Occurred()) {
        PyErr_SetString(vudo_struct_error, "required argument is not a float");
        return -1;
    }
    if (t == 'f') {
        float f = (float)d;
        if (isinf(f) && !isinf(d)) {
            PyErr_SetString(PyExc_OverflowError, "float too large to pack with f format");
            return -1;
        }
        slot->f32 = f;
    } else {
        slot->f64 = d;
    }
    return 0;
}

/* Run the Python host function on the raw slots; NULL or a trap. Needs the GIL. */
static wasm_trap_t *trampoline_run(Trampoline *t, wasmtime_val_raw_t *raw) {
    PyObject *small[8];
    PyObject **argv = t->nparams <= 8 ? small : PyMem_Malloc(sizeof(PyObject *) * t->nparams);
    Py_ssize_t made = 0;
    PyObject *res = NULL;
    if (argv == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (; made < t->nparams; made++) {
        argv[made] = box(t->types[made], &raw[made]);
        if (argv[made] == NULL) break;
    }
    if (made == t->nparams) {
        PyObject *fn = Py_NewRef(t->fn); /* bind() may replace it meanwhile */
        res = PyObject_Vectorcall(fn, argv, t->nparams, NULL);
        Py_DECREF(fn);
    }
    for (Py_ssize_t i = 0; i < made; i++) Py_DECREF(argv[i]);
    if (argv != small) PyMem_Free(argv);
    if (res == NULL) goto fail;
    const char *rt = t->types + t->nparams;
    int rc = 0;
    if (t->nresults == 1) {
        rc = pack(res, rt[0], &raw[0]);
    } else if (t->nresults > 1) {
        /* All results are computed before any slot is written, like one pack_into. */
        wasmtime_val_raw_t tmp[16];
        wasmtime_val_raw_t *out =
            t->nresults <= 16 ? tmp : PyMem_Malloc(sizeof(wasmtime_val_raw_t) * t->nresults);
        if (out == NULL) {
            PyErr_NoMemory();
            rc = -1;
        }
        for (Py_ssize_t i = 0; rc == 0 && i < t->nresults; i++) {
            PyObject *key = PyLong_FromSsize_t(i);
            PyObject *item = key != NULL ? PyObject_GetItem(res, key) : NULL;
            Py_XDECREF(key);
            rc = item != NULL ? pack(item, rt[i], &out[i]) : -1;
            Py_XDECREF(item);
        }
        if (rc == 0) memcpy(raw, out, sizeof(wasmtime_val_raw_t) * t->nresults);
        if (out != NULL && out != tmp) PyMem_Free(out);
    }
    Py_DECREF(res);
    if (rc == 0) return NULL;
fail:;
    PyObject *exc = vudo_fetch_exception();
    if (exc == NULL) exc = PyObject_CallOneArg(PyExc_RuntimeError, Py_None);
    return vudo_fail_to_trap(t->fail, exc, "host function failed");
}

static wasm_trap_t *trampoline_callback(void *envp, wasmtime_caller_t *caller,
                                        wasmtime_val_raw_t *raw, size_t len) {
    host_env *env = envp;
    PyGILState_STATE g = PyGILState_Ensure();
    wasm_trap_t *trap;
    PyObject *owner = env->owner;
    if (owner == NULL) {
        static const char msg[] = "host function called after its Spirit was freed";
        trap = vudo_wt.trap_new(msg, sizeof msg - 1);
    } else {
        Py_INCREF(owner);
        trap = trampoline_run((Trampoline *)owner, raw);
        Py_DECREF(owner);
    }
    PyGILState_Release(g);
    return trap;
}


/* ------------------------------------------------------------------------------------------ */
/* Registration                                                                                */
/* ------------------------------------------------------------------------------------------ */
static void env_finalizer(void *envp) {
    host_env *env = envp;
    if (!Py_IsInitialized()) return; /* leaked at exit rather than touched without a runtime */
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *owner = env->owner;
    if (owner != NULL) {
        host_env **link = PyObject_TypeCheck(owner, &vudo_TrampolineType)
                              ? &((Trampoline *)owner)->envs
                              : &((Builtin *)owner)->envs;
        for (; *link != NULL; link = &(*link)->next) {
            if (*link == env) {
                *link = env->next;
                break;
            }
        }
    }
    PyMem_RawFree(env);
    PyGILState_Release(g);
}

void vudo_detach_envs(host_env *env) {
    for (; env != NULL; env = env->next) env->owner = NULL;
}

PyObject *vudo_func_new(PyObject *self, PyObject *args) {
    unsigned long long ctx, ty, out;
    PyObject *host;
    if (!PyArg_ParseTuple(args, "KKOK", &ctx, &ty, &host, &out)) return NULL;
    if (!ctx || !ty || !out) {
        PyErr_SetString(PyExc_ValueError, "null context, type or output");
        return NULL;
    }
    host_env *env = PyMem_RawCalloc(1, sizeof(host_env));
    if (env == NULL) return PyErr_NoMemory();
    env->owner = host;
    wasmtime_func_unchecked_callback_t cb;
    if (PyObject_TypeCheck(host, &vudo_TrampolineType)) {
        Trampoline *t = (Trampoline *)host;
        env->kind = K_TRAMPOLINE;
        env->next = t->envs;
        t->envs = env;
        cb = trampoline_callback;
    } else if (PyObject_TypeCheck(host, &vudo_BuiltinType)) {
        Builtin *b = (Builtin *)host;
        env->kind = b->kind;
        env->has_memory = b->has_memory;
        env->memory = b->memory;
        env->next = b->envs;
        b->envs = env;
        cb = vudo_builtin_callback;
    } else {
        PyMem_RawFree(env);
        PyErr_SetString(PyExc_TypeError, "func_new() needs a Trampoline or a Builtin");
        return NULL;
    }
    vudo_wt.func_new_unchecked((wasmtime_context_t *)(uintptr_t)ctx,
                               (const wasm_functype_t *)(uintptr_t)ty, cb, env, env_finalizer,
                               (wasmtime_func_t *)(uintptr_t)out);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------------------ */
/* Trampoline type                                                                             */
/* ------------------------------------------------------------------------------------------ */
static int valid_codes(const char *s) {
    for (; *s; s++)
        if (*s != 'i' && *s != 'q' && *s != 'f' && *s != 'd') return 0;
    return 1;
}

static PyObject *trampoline_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    const char *params, *results;
    PyObject *fail, *fn;
    if (!PyArg_ParseTuple(args, "ssOO:Trampoline", &params, &results, &fail, &fn)) return NULL;
    if (!valid_codes(params) || !valid_codes(results)) {
        PyErr_SetString(PyExc_ValueError, "type codes are i, q, f, d");
        return NULL;
    }
    size_t np = strlen(params), nr = strlen(results);
    Trampoline *t = (Trampoline *)type->tp_alloc(type, (Py_ssize_t)(np + nr + 1));
    if (t == NULL) return NULL;
    t->fail = Py_NewRef(fail);
    t->fn = Py_NewRef(fn);
    t->nparams = (Py_ssize_t)np;
    t->nresults = (Py_ssize_t)nr;
    memcpy(t->types, params, np);
    memcpy(t->types + np, results, nr);
    t->types[np + nr] = 0;
    return (PyObject *)t;
}

static PyObject *trampoline_bind(PyObject *op, PyObject *fn) {
    Trampoline *t = (Trampoline *)op;
    Py_XSETREF(t->fn, Py_NewRef(fn));
    Py_RETURN_NONE;
}

/* cb(env, caller, addr, n): the ctypes HOST_CALLBACK signature, for drop-in use from Python. */
static PyObject *trampoline_call(PyObject *op, PyObject *args, PyObject *kwds) {
    Trampoline *t = (Trampoline *)op;
    PyObject *env, *caller;
    unsigned long long addr, n;
    if (!PyArg_ParseTuple(args, "OOKK", &env, &caller, &addr, &n)) return NULL;
    if (addr == 0 || n < (unsigned long long)(t->nparams > t->nresults ? t->nparams
                                                                        : t->nresults)) {
        PyErr_SetString(PyExc_ValueError, "bad argument slots");
        return NULL;
    }
    wasm_trap_t *trap = trampoline_run(t, (wasmtime_val_raw_t *)(uintptr_t)addr);
    return PyLong_FromVoidPtr(trap);
}

static int trampoline_traverse(PyObject *op, visitproc visit, void *arg) {
    Trampoline *t = (Trampoline *)op;
    Py_VISIT(t->fail);
    Py_VISIT(t->fn);
    return 0;
}

static int trampoline_clear(PyObject *op) {
    Trampoline *t = (Trampoline *)op;
    Py_CLEAR(t->fail);
    Py_CLEAR(t->fn);
    return 0;
}

static void trampoline_dealloc(PyObject *op) {
    PyObject_GC_UnTrack(op);
    vudo_detach_envs(((Trampoline *)op)->envs);
    trampoline_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyMethodDef trampoline_methods[] = {
    {"bind", trampoline_bind, METH_O, "Replace the Python callable (late-bound factories)."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject vudo_TrampolineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vudo._cnative.Trampoline",
    .tp_basicsize = sizeof(Trampoline),
    .tp_itemsize = 1,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Trampoline(params, results, fail, fn): a host function calling a Python callable.",
    .tp_new = trampoline_new,
    .tp_dealloc = trampoline_dealloc,
    .tp_traverse = trampoline_traverse,
    .tp_clear = trampoline_clear,
    .tp_call = trampoline_call,
    .tp_methods = trampoline_methods,
};

int vudo_host_init(void) {
    mask32 = PyLong_FromUnsignedLong(0xFFFFFFFFUL);
    mask64 = PyLong_FromUnsignedLongLong(0xFFFFFFFFFFFFFFFFULL);
    if (mask32 == NULL || mask64 == NULL) return -1;
    return vudo_builtins_init();
}
