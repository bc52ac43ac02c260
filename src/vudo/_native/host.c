/* Host functions: the trampoline into a Python callable (spirit._trampoline_template's `cb` in
 * C) and the built-in host functions that need no Python (clocks and randomness with the default
 * providers). Each registration gets a small env owned by the wasmtime store; it points back at
 * its Python owner without a reference (a reference from the store would form a cycle the
 * garbage collector cannot see), and the owner's dealloc clears that pointer. */
#include "native.h"
#include "vudo_native_host.h"

#include <errno.h>
#include <pthread.h>
#include <sys/random.h>
#include <time.h>

enum { K_TRAMPOLINE = 0, K_NOW = 1, K_MONOTONIC = 2, K_RANDOM = 3, K_RANDOM_BYTES = 4,
       K_TEXT = 5 /* vudo_print & co: decode in C, call the logger's method */ };

typedef struct host_env {
    PyObject *owner; /* Trampoline or Builtin; NULL once it is freed */
    struct host_env *next;
    int kind;
    int has_memory;
    wasmtime_memory_t memory;
    _Atomic int64_t last; /* vudo_monotonic_now never decreases */
} host_env;

typedef struct {
    PyObject_HEAD
    PyObject *fail, *fn;
    host_env *envs;
    Py_ssize_t nparams, nresults;
    char types[]; /* parameter codes then result codes */
} Trampoline;

typedef struct {
    PyObject_HEAD
    PyObject *fail, *spirit_name;
    PyObject *out; /* K_TEXT: the logger method called with the decoded text */
    host_env *envs;
    int kind;
    int has_memory;
    wasmtime_memory_t memory;
} Builtin;

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
/* Built-in host functions                                                                     */
/* ------------------------------------------------------------------------------------------ */
static _Thread_local uint64_t rand_pool[32];
static _Thread_local int rand_left = 0;

static int fill_random(void *dst, size_t n) {
    uint8_t *p = dst;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

static void rand_atfork_child(void) {
    rand_left = 0; /* the child must not replay the parent's pool */
}

static wasm_trap_t *trap_msg(const char *msg) {
    return vudo_wt.trap_new(msg, strlen(msg));
}

/* Out of bounds: the same MemoryAccessError the Python Loa raises, through `fail`. */
static wasm_trap_t *out_of_bounds(host_env *env, uint32_t ptr, uint32_t len, size_t size) {
    PyGILState_STATE g = PyGILState_Ensure();
    wasm_trap_t *trap;
    Builtin *b = (Builtin *)env->owner;
    if (b == NULL) {
        trap = trap_msg("out-of-bounds memory access");
    } else {
        Py_INCREF(b);
        PyObject *args = Py_BuildValue("(IIn)", ptr, len, (Py_ssize_t)size);
        PyObject *kw = args ? Py_BuildValue("{sO}", "spirit", b->spirit_name) : NULL;
        PyObject *exc = kw ? PyObject_Call(vudo_memory_access_error, args, kw) : NULL;
        Py_XDECREF(args);
        Py_XDECREF(kw);
        if (exc == NULL) exc = vudo_fetch_exception();
        trap = vudo_fail_to_trap(b->fail, exc, "out-of-bounds memory access");
        Py_DECREF(b);
    }
    PyGILState_Release(g);
    return trap;
}

/* vudo_print/println/error: read_string's bounds check and decoding, then out(text). */
static wasm_trap_t *text_callback(host_env *env, wasmtime_caller_t *caller,
                                  wasmtime_val_raw_t *raw) {
    uint32_t ptr = (uint32_t)raw[0].i32, n = (uint32_t)raw[1].i32;
    wasmtime_context_t *ctx = vudo_wt.caller_context(caller);
    size_t size = env->has_memory ? vudo_wt.memory_data_size(ctx, &env->memory) : 0;
    if ((uint64_t)ptr + n > size) return out_of_bounds(env, ptr, n, size);
    PyGILState_STATE g = PyGILState_Ensure();
    wasm_trap_t *trap = NULL;
    Builtin *b = (Builtin *)env->owner;
    if (b == NULL || b->out == NULL) {
        trap = trap_msg("host function called after its Spirit was freed");
    } else {
        Py_INCREF(b);
        const char *data = n ? (const char *)vudo_wt.memory_data(ctx, &env->memory) + ptr : "";
        PyObject *text = PyUnicode_DecodeUTF8(data, (Py_ssize_t)n, "replace");
        PyObject *r = NULL;
        if (text != NULL) {
            PyObject *out = Py_NewRef(b->out);
            r = PyObject_CallOneArg(out, text);
            Py_DECREF(out);
            Py_DECREF(text);
        }
        if (r != NULL) {
            Py_DECREF(r);
        } else {
            PyObject *exc = vudo_fetch_exception();
            trap = vudo_fail_to_trap(b->fail, exc, "host function failed");
        }
        Py_DECREF(b);
    }
    PyGILState_Release(g);
    return trap;
}

static wasm_trap_t *builtin_callback(void *envp, wasmtime_caller_t *caller,
                                     wasmtime_val_raw_t *raw, size_t len) {
    host_env *env = envp;
    struct timespec ts;
    switch (env->kind) {
    case K_NOW:
        clock_gettime(CLOCK_REALTIME, &ts);
        raw[0].i64 = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        return NULL;
    case K_MONOTONIC: {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        int64_t last = env->last;
        while (now > last && !__atomic_compare_exchange_n(&env->last, &last, now, 0,
                                                          __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        }
        raw[0].i64 = now > last ? now : last;
        return NULL;
    }
    case K_RANDOM:
        if (rand_left == 0) {
            if (fill_random(rand_pool, sizeof rand_pool) < 0)
                return trap_msg("vudo_random: the system CSPRNG failed");
            rand_left = 32;
        }
        /* 53 random bits scaled into [0, 1), as SystemRandomProvider does. */
        raw[0].f64 = (double)(rand_pool[--rand_left] >> 11) * (1.0 / 9007199254740992.0);
        return NULL;
    case K_RANDOM_BYTES: {
        uint32_t ptr = (uint32_t)raw[0].i32, n = (uint32_t)raw[1].i32;
        wasmtime_context_t *ctx = vudo_wt.caller_context(caller);
        size_t size = env->has_memory ? vudo_wt.memory_data_size(ctx, &env->memory) : 0;
        if ((uint64_t)ptr + n > size) return out_of_bounds(env, ptr, n, size);
        if (n > 0 && fill_random(vudo_wt.memory_data(ctx, &env->memory) + ptr, n) < 0)
            return trap_msg("vudo_random_bytes: the system CSPRNG failed");
        return NULL;
    }
    case K_TEXT:
        return text_callback(env, caller, raw);
    }
    return trap_msg("unknown native host function");
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

static void detach_envs(host_env *env) {
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
        cb = builtin_callback;
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

PyObject *vudo_func_new_raw(PyObject *self, PyObject *args) {
    unsigned long long ctx, ty, out;
    PyObject *capsule;
    if (!PyArg_ParseTuple(args, "KKOK", &ctx, &ty, &capsule, &out)) return NULL;
    vudo_native_host_fn *fn = PyCapsule_GetPointer(capsule, VUDO_NATIVE_HOST_CAPSULE);
    if (fn == NULL) return NULL;
    if (!ctx || !ty || !out || fn->callback == NULL) {
        PyErr_SetString(PyExc_ValueError, "null context, type, output or callback");
        return NULL;
    }
    vudo_wt.func_new_unchecked((wasmtime_context_t *)(uintptr_t)ctx,
                               (const wasm_functype_t *)(uintptr_t)ty, fn->callback, fn->env,
                               fn->finalizer, (wasmtime_func_t *)(uintptr_t)out);
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
    detach_envs(((Trampoline *)op)->envs);
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

/* ------------------------------------------------------------------------------------------ */
/* Builtin type                                                                                */
/* ------------------------------------------------------------------------------------------ */
static PyObject *builtin_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    int kind;
    PyObject *fail, *name;
    if (!PyArg_ParseTuple(args, "iOU:Builtin", &kind, &fail, &name)) return NULL;
    if (kind < K_NOW || kind > K_TEXT) {
        PyErr_SetString(PyExc_ValueError, "unknown built-in host function");
        return NULL;
    }
    Builtin *b = (Builtin *)type->tp_alloc(type, 0);
    if (b == NULL) return NULL;
    b->kind = kind;
    b->fail = Py_NewRef(fail);
    b->spirit_name = Py_NewRef(name);
    return (PyObject *)b;
}

/* set_memory(memory_ptr): the Spirit's memory (a wasmtime_memory_t), known after instantiation. */
static PyObject *builtin_set_memory(PyObject *op, PyObject *arg) {
    Builtin *b = (Builtin *)op;
    unsigned long long addr = PyLong_AsUnsignedLongLong(arg);
    if (addr == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (addr == 0) {
        b->has_memory = 0;
    } else {
        memcpy(&b->memory, (void *)(uintptr_t)addr, sizeof(wasmtime_memory_t));
        b->has_memory = 1;
    }
    for (host_env *env = b->envs; env != NULL; env = env->next) {
        env->memory = b->memory;
        env->has_memory = b->has_memory;
    }
    Py_RETURN_NONE;
}

/* set_output(callable): where K_TEXT sends the decoded text. */
static PyObject *builtin_set_output(PyObject *op, PyObject *out) {
    Py_XSETREF(((Builtin *)op)->out, Py_NewRef(out));
    Py_RETURN_NONE;
}

static int builtin_traverse(PyObject *op, visitproc visit, void *arg) {
    Py_VISIT(((Builtin *)op)->fail);
    Py_VISIT(((Builtin *)op)->out);
    return 0;
}

static int builtin_clear(PyObject *op) {
    Py_CLEAR(((Builtin *)op)->fail);
    Py_CLEAR(((Builtin *)op)->out);
    return 0;
}

static void builtin_dealloc(PyObject *op) {
    PyObject_GC_UnTrack(op);
    detach_envs(((Builtin *)op)->envs);
    builtin_clear(op);
    Py_CLEAR(((Builtin *)op)->spirit_name);
    Py_TYPE(op)->tp_free(op);
}

static PyMethodDef builtin_methods[] = {
    {"set_memory", builtin_set_memory, METH_O, "Point at the Spirit's memory (address or 0)."},
    {"set_output", builtin_set_output, METH_O, "The logger method vudo_print & co call."},
    {NULL, NULL, 0, NULL},
};

PyTypeObject vudo_BuiltinType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vudo._cnative.Builtin",
    .tp_basicsize = sizeof(Builtin),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Builtin(kind, fail, spirit_name): a host function implemented in C.",
    .tp_new = builtin_new,
    .tp_dealloc = builtin_dealloc,
    .tp_traverse = builtin_traverse,
    .tp_clear = builtin_clear,
    .tp_methods = builtin_methods,
};

int vudo_host_init(void) {
    mask32 = PyLong_FromUnsignedLong(0xFFFFFFFFUL);
    mask64 = PyLong_FromUnsignedLongLong(0xFFFFFFFFFFFFFFFFULL);
    if (mask32 == NULL || mask64 == NULL) return -1;
    pthread_atfork(NULL, NULL, rand_atfork_child);
    return 0;
}
