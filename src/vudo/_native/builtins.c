/* The built-in host functions that need no Python with the default providers: clocks and
 * CSPRNG randomness without the GIL; vudo_print & co decode in C and call the logger's method.
 * Out-of-bounds accesses raise the same MemoryAccessError as the Python Loa, through `fail`. */
#include "host.h"

#include <structmember.h>

#include <errno.h>
#include <pthread.h>
#include <sys/random.h>
#include <time.h>

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
        PyObject *r = NULL;
        if ((uint64_t)n > b->max_text && b->refuse != NULL) {
            /* Over max_string_length: refused (and logged) in Python, never decoded. */
            PyObject *refuse = Py_NewRef(b->refuse);
            PyObject *len_obj = PyLong_FromUnsignedLong(n);
            r = len_obj ? PyObject_CallOneArg(refuse, len_obj) : NULL;
            Py_XDECREF(len_obj);
            Py_DECREF(refuse);
        } else {
            const char *data =
                n ? (const char *)vudo_wt.memory_data(ctx, &env->memory) + ptr : "";
            PyObject *text = PyUnicode_DecodeUTF8(data, (Py_ssize_t)n, "replace");
            if (text != NULL) {
                PyObject *out = Py_NewRef(b->out);
                r = PyObject_CallOneArg(out, text);
                Py_DECREF(out);
                Py_DECREF(text);
            }
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

wasm_trap_t *vudo_builtin_callback(void *envp, wasmtime_caller_t *caller,
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
    default:
        if (env->kind >= K_SEND && env->kind <= K_REALLOC)
            return vudo_bus_callback(env, caller, raw);
    }
    return trap_msg("unknown native host function");
}
/* ------------------------------------------------------------------------------------------ */
/* Builtin type                                                                                */
/* ------------------------------------------------------------------------------------------ */
static PyObject *builtin_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    int kind;
    PyObject *fail, *name;
    if (!PyArg_ParseTuple(args, "iOU:Builtin", &kind, &fail, &name)) return NULL;
    if (kind < K_NOW || kind > K_REALLOC) {
        PyErr_SetString(PyExc_ValueError, "unknown built-in host function");
        return NULL;
    }
    Builtin *b = (Builtin *)type->tp_alloc(type, 0);
    if (b == NULL) return NULL;
    b->kind = kind;
    b->fail = Py_NewRef(fail);
    b->spirit_name = Py_NewRef(name);
    b->max_text = UINT64_MAX;
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

/* set_text_cap(cap, refuse): K_TEXT longer than cap bytes calls refuse(length) instead. */
static PyObject *builtin_set_text_cap(PyObject *op, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_text_cap(cap, refuse)");
        return NULL;
    }
    unsigned long long cap = PyLong_AsUnsignedLongLong(args[0]);
    if (cap == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    Builtin *b = (Builtin *)op;
    Py_XSETREF(b->refuse, Py_NewRef(args[1]));
    b->max_text = (uint64_t)cap;
    Py_RETURN_NONE;
}

/* set_bus(bushost, py, exhausted): the messaging/heap kinds' BusHost, the Python host
 * function for the rare paths and (alloc/realloc) the logger of a spell of refusals. */
static PyObject *builtin_set_bus(PyObject *op, PyObject *const *args, Py_ssize_t nargs) {
    Builtin *b = (Builtin *)op;
    if (nargs != 3 || !PyObject_TypeCheck(args[0], &vudo_BusHostType)) {
        PyErr_SetString(PyExc_TypeError, "set_bus(bushost, py, exhausted)");
        return NULL;
    }
    if (b->kind < K_SEND) {
        PyErr_SetString(PyExc_ValueError, "set_bus() is for the messaging and heap kinds");
        return NULL;
    }
    Py_XSETREF(b->bushost, Py_NewRef(args[0]));
    Py_XSETREF(b->py, Py_NewRef(args[1]));
    Py_XSETREF(b->exhausted, args[2] == Py_None ? NULL : Py_NewRef(args[2]));
    Py_RETURN_NONE;
}

static int builtin_traverse(PyObject *op, visitproc visit, void *arg) {
    Py_VISIT(((Builtin *)op)->bushost);
    Py_VISIT(((Builtin *)op)->py);
    Py_VISIT(((Builtin *)op)->exhausted);
    Py_VISIT(((Builtin *)op)->fail);
    Py_VISIT(((Builtin *)op)->out);
    Py_VISIT(((Builtin *)op)->refuse);
    return 0;
}

static int builtin_clear(PyObject *op) {
    Py_CLEAR(((Builtin *)op)->py);
    Py_CLEAR(((Builtin *)op)->exhausted);
    Py_CLEAR(((Builtin *)op)->fail);
    Py_CLEAR(((Builtin *)op)->out);
    Py_CLEAR(((Builtin *)op)->refuse);
    return 0;
}

static void builtin_dealloc(PyObject *op) {
    PyObject_GC_UnTrack(op);
    vudo_detach_envs(((Builtin *)op)->envs);
    builtin_clear(op);
    Py_CLEAR(((Builtin *)op)->bushost); /* after the envs are detached: no call can use it */
    Py_CLEAR(((Builtin *)op)->spirit_name);
    Py_TYPE(op)->tp_free(op);
}

static PyMethodDef builtin_methods[] = {
    {"set_memory", builtin_set_memory, METH_O, "Point at the Spirit's memory (address or 0)."},
    {"set_output", builtin_set_output, METH_O, "The logger method vudo_print & co call."},
    {"set_bus", (PyCFunction)(void (*)(void))builtin_set_bus, METH_FASTCALL,
     "set_bus(bushost, py, exhausted): serve a messaging/heap function over vudo._nbus."},
    {"set_text_cap", (PyCFunction)(void (*)(void))builtin_set_text_cap, METH_FASTCALL,
     "set_text_cap(cap, refuse): text over cap bytes calls refuse(length) instead."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef builtin_members[] = {
    {"kind", T_INT, offsetof(Builtin, kind), READONLY, "Which host function (host.h K_*)."},
    {NULL, 0, 0, 0, NULL},
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
    .tp_members = builtin_members,
};

int vudo_builtins_init(void) {
    return pthread_atfork(NULL, NULL, rand_atfork_child) == 0 ? 0 : -1;
}
