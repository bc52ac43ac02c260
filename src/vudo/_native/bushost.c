/* The messaging and host-heap host functions (vudo_send, vudo_recv, vudo_pending,
 * vudo_broadcast, vudo_free_message, vudo_alloc, vudo_free, vudo_realloc) over the C bus and
 * heap of vudo._nbus, reached through its capsule (vudo_nbus.h): never linked to it.
 *
 * The common case runs in C without Python: the bodies of _nbus/host.c on the Spirit's memory
 * (base and size re-read at every call, since memory grows). Every rare case is handed to the
 * Spirit's Python host function with the same arguments, so it behaves exactly as the Python
 * Loa: out-of-bounds pointers (MemoryAccessError), a payload over max_message_size (logged),
 * an allocation over max_alloc (logged), a message the heap cannot hold (kept queued, or the
 * dead-letter notice), a Spirit without memory yet. Those cases change nothing before handing
 * over (a message taken by recv is requeued first), so the Python function starts from the
 * same state. The calling Spirit's lock is held by its call path throughout. */
#include "host.h"

#include "../_nbus/vudo_nbus.h"

static const vudo_nbus_api *nbus = NULL;

/* nbus_attach(): import the capsule of vudo._nbus; False if absent or of another ABI. */
PyObject *vudo_nbus_attach(PyObject *self, PyObject *unused) {
    if (nbus == NULL) {
        const vudo_nbus_api *api = PyCapsule_Import(VUDO_NBUS_CAPSULE, 0);
        if (api == NULL) {
            PyErr_Clear();
            Py_RETURN_FALSE;
        }
        if (api->abi_version != VUDO_NBUS_ABI_VERSION) Py_RETURN_FALSE;
        nbus = api;
    }
    Py_RETURN_TRUE;
}

/* ------------------------------------------------------------------------------------------ */
/* BusHost: what the messaging functions of one Spirit share                                   */
/* ------------------------------------------------------------------------------------------ */
typedef struct {
    PyObject_HEAD
    PyObject *bus, *heap, *grow; /* kept alive: the handles below borrow from them */
    vudo_host host;              /* mem is set per call */
    char *name;
} BusHost;

static PyObject *bushost_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *bus, *heap, *grow, *name;
    long long max_message, max_alloc;
    if (!PyArg_ParseTuple(args, "OOOULL:BusHost", &bus, &heap, &grow, &name, &max_message,
                          &max_alloc))
        return NULL;
    if (nbus == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "vudo._nbus is not attached");
        return NULL;
    }
    vudo_bus *b = nbus->bus_from_object(bus);
    vudo_heap *h = b != NULL ? nbus->heap_from_object(heap) : NULL;
    if (h == NULL) return NULL;
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(name, &n);
    if (utf8 == NULL) return NULL;
    BusHost *self = (BusHost *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->name = PyMem_RawMalloc((size_t)n + 1);
    if (self->name == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    memcpy(self->name, utf8, (size_t)n + 1);
    self->bus = Py_NewRef(bus);
    self->heap = Py_NewRef(heap);
    self->grow = Py_NewRef(grow);
    self->host = (vudo_host){b, h, NULL, self->name, (size_t)n, max_message, max_alloc};
    return (PyObject *)self;
}

static int bushost_traverse(PyObject *op, visitproc visit, void *arg) {
    Py_VISIT(((BusHost *)op)->bus);
    Py_VISIT(((BusHost *)op)->heap);
    Py_VISIT(((BusHost *)op)->grow);
    return 0;
}

static int bushost_clear(PyObject *op) {
    Py_CLEAR(((BusHost *)op)->grow);
    return 0; /* bus and heap stay until dealloc: a running call may still use the handles */
}

static void bushost_dealloc(PyObject *op) {
    BusHost *self = (BusHost *)op;
    PyObject_GC_UnTrack(op);
    Py_CLEAR(self->grow);
    Py_CLEAR(self->bus);
    Py_CLEAR(self->heap);
    PyMem_RawFree(self->name);
    Py_TYPE(op)->tp_free(op);
}

PyTypeObject vudo_BusHostType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vudo._cnative.BusHost",
    .tp_basicsize = sizeof(BusHost),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "BusHost(bus, heap, grow, spirit_name, max_message_size, max_alloc): one "
              "Spirit's C bus and heap (-1: no cap).",
    .tp_new = bushost_new,
    .tp_dealloc = bushost_dealloc,
    .tp_traverse = bushost_traverse,
    .tp_clear = bushost_clear,
};

/* ------------------------------------------------------------------------------------------ */
/* One call's view of the Spirit's memory                                                      */
/* ------------------------------------------------------------------------------------------ */
typedef struct {
    vudo_mem mem; /* first: the heap hands back this pointer */
    wasmtime_context_t *ctx;
    const wasmtime_memory_t *memory;
    PyObject *grow;
} call_mem;

static void refresh(call_mem *cm) {
    cm->mem.base = vudo_wt.memory_data(cm->ctx, cm->memory);
    cm->mem.size = vudo_wt.memory_data_size(cm->ctx, cm->memory);
}

/* The heap needs pages: WasmMemory._grow_for_heap in Python (rare), under the GIL. An
 * exception stays set on this thread for the caller (VUDO_PY_ERROR). */
static int grow_cb(vudo_mem *m, uint64_t min_bytes, uint32_t *start, uint32_t *length) {
    call_mem *cm = (call_mem *)m;
    PyGILState_STATE g = PyGILState_Ensure();
    int rc = VUDO_PY_ERROR;
    PyObject *r = PyObject_CallFunction(cm->grow, "K", (unsigned long long)min_bytes);
    if (r == Py_None) {
        rc = VUDO_ERROR;
    } else if (r != NULL) {
        unsigned long long s = 0, n = 0;
        if (PyArg_ParseTuple(r, "KK;grow() must return (start, length) or None", &s, &n)) {
            if (s == 0 || s + n > 0x100000000ull) {
                PyErr_Format(PyExc_ValueError, "grow() returned a region outside 32-bit "
                             "memory: (%llu, %llu)", s, n);
            } else {
                *start = (uint32_t)s;
                *length = (uint32_t)n;
                rc = 0;
            }
        }
    }
    Py_XDECREF(r);
    PyGILState_Release(g);
    refresh(cm);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Handing over to Python                                                                      */
/* ------------------------------------------------------------------------------------------ */
static const int8_t nparams[] = {[K_SEND] = 4, [K_RECV] = 0, [K_PENDING] = 0,
                                 [K_BROADCAST] = 2, [K_FREE_MESSAGE] = 1, [K_ALLOC] = 1,
                                 [K_FREE] = 2, [K_REALLOC] = 3};
static const int8_t nresults[] = {[K_SEND] = 1, [K_RECV] = 1, [K_PENDING] = 1,
                                  [K_BROADCAST] = 1, [K_FREE_MESSAGE] = 0, [K_ALLOC] = 1,
                                  [K_FREE] = 0, [K_REALLOC] = 1};

static wasm_trap_t *raise_pending(Builtin *b) {
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *exc = vudo_fetch_exception();
    if (exc == NULL) exc = PyObject_CallOneArg(PyExc_RuntimeError, Py_None);
    wasm_trap_t *trap = vudo_fail_to_trap(b->fail, exc, "host function failed");
    PyGILState_Release(g);
    return trap;
}

/* Run the Python host function on the raw slots, as the trampoline would. */
static wasm_trap_t *call_python(Builtin *b, int kind, wasmtime_val_raw_t *raw) {
    PyGILState_STATE g = PyGILState_Ensure();
    Py_INCREF(b);
    PyObject *argv[4];
    int n = nparams[kind], made = 0;
    for (; made < n; made++) {
        argv[made] = PyLong_FromLong(raw[made].i32); /* signed, as the trampoline boxes i32 */
        if (argv[made] == NULL) break;
    }
    PyObject *res = NULL;
    if (made == n) {
        PyObject *fn = Py_NewRef(b->py);
        res = PyObject_Vectorcall(fn, argv, (size_t)n, NULL);
        Py_DECREF(fn);
    }
    for (int i = 0; i < made; i++) Py_DECREF(argv[i]);
    wasm_trap_t *trap = NULL;
    if (res != NULL && nresults[kind]) {
        unsigned long long v = PyLong_Check(res) ? PyLong_AsUnsignedLongLongMask(res) : 0;
        if (!PyLong_Check(res))
            PyErr_SetString(vudo_struct_error, "required argument is not an integer");
        if (PyErr_Occurred()) Py_CLEAR(res);
        else raw[0].i32 = (int32_t)(uint32_t)v;
    }
    if (res == NULL) {
        PyObject *exc = vudo_fetch_exception();
        if (exc == NULL) exc = PyObject_CallOneArg(PyExc_RuntimeError, Py_None);
        trap = vudo_fail_to_trap(b->fail, exc, "host function failed");
    }
    Py_XDECREF(res);
    Py_DECREF(b);
    PyGILState_Release(g);
    return trap;
}

/* alloc/realloc returned 0: log the first refusal of a spell, as the Python Loa does. */
static wasm_trap_t *refused(Builtin *b) {
    if (b->refusing || b->exhausted == NULL) return NULL;
    b->refusing = 1;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *r = PyObject_CallNoArgs(b->exhausted);
    wasm_trap_t *trap = NULL;
    if (r == NULL) {
        PyObject *exc = vudo_fetch_exception();
        trap = vudo_fail_to_trap(b->fail, exc, "host function failed");
    }
    Py_XDECREF(r);
    PyGILState_Release(g);
    return trap;
}

/* ------------------------------------------------------------------------------------------ */
/* The callback                                                                                */
/* ------------------------------------------------------------------------------------------ */
wasm_trap_t *vudo_bus_callback(host_env *env, wasmtime_caller_t *caller,
                               wasmtime_val_raw_t *raw) {
    /* The owner outlives every call of its store (the Spirit keeps both), so it is read
     * without the GIL; it is NULL only once the Spirit is gone. */
    Builtin *b = (Builtin *)env->owner;
    int kind = env->kind;
    if (b == NULL || b->bushost == NULL || nbus == NULL) {
        static const char msg[] = "host function called after its Spirit was freed";
        return vudo_wt.trap_new(msg, sizeof msg - 1);
    }
    BusHost *bh = (BusHost *)b->bushost;
    /* The functions that never touch memory: no memory lookup at all (the hot loops). */
    if (kind == K_PENDING) {
        int32_t n;
        nbus->host_pending(&bh->host, &n);
        raw[0].i32 = n;
        return NULL;
    }
    if (kind == K_FREE_MESSAGE || kind == K_FREE) {
        vudo_host h0 = bh->host;
        if (kind == K_FREE) nbus->host_free(&h0, (uint32_t)raw[0].i32, raw[1].i32);
        else nbus->host_free_message(&h0, (uint32_t)raw[0].i32);
        return NULL;
    }
    if (!env->has_memory) return call_python(b, kind, raw); /* before instantiation ends */
    call_mem cm = {{NULL, 0, grow_cb, NULL, NULL, NULL}, vudo_wt.caller_context(caller),
                   &env->memory, bh->grow};
    refresh(&cm);
    vudo_host h = bh->host;
    h.mem = &cm.mem;
    uint32_t a0 = (uint32_t)raw[0].i32, a1 = (uint32_t)raw[1].i32;
    int32_t result = 0;
    int st;
    switch (kind) {
    case K_SEND:
        st = nbus->host_send(&h, a0, a1, (uint32_t)raw[2].i32, (uint32_t)raw[3].i32, &result);
        break;
    case K_RECV:
        st = nbus->host_recv(&h, &result);
        /* 0 with a message waiting: the heap could not hold it (requeued). Python decides:
         * keep it queued, or replace one that can never fit with the dead-letter notice. */
        if (st == VUDO_HOST_DONE && result == 0 &&
            nbus->bus_pending(h.bus, h.name, h.name_len, 0) > 0)
            return call_python(b, kind, raw);
        break;
    case K_PENDING:
        st = nbus->host_pending(&h, &result);
        break;
    case K_BROADCAST:
        st = nbus->host_broadcast(&h, a0, a1, &result);
        break;
    case K_FREE_MESSAGE:
        st = nbus->host_free_message(&h, a0);
        break;
    case K_ALLOC: {
        int32_t size = raw[0].i32;
        if (size > 0 && h.max_alloc >= 0 && size > h.max_alloc)
            return call_python(b, kind, raw); /* refused and logged in Python */
        st = nbus->host_alloc(&h, size, &result);
        if (st == VUDO_HOST_DONE && size > 0) {
            if (result == 0) {
                raw[0].i32 = 0;
                return refused(b);
            }
            b->refusing = 0;
        }
        break;
    }
    case K_FREE:
        st = nbus->host_free(&h, a0, (int32_t)a1);
        break;
    case K_REALLOC: {
        int32_t old = raw[1].i32, size = raw[2].i32;
        if (old >= 0 && size >= 0 && h.max_alloc >= 0 && size > h.max_alloc)
            return call_python(b, kind, raw);
        st = nbus->host_realloc(&h, a0, old, size, &result);
        if (st == VUDO_HOST_DONE && old >= 0 && size >= 0) {
            if (result == 0) {
                raw[0].i32 = 0;
                return refused(b);
            }
            b->refusing = 0;
        }
        break;
    }
    default:
        return vudo_wt.trap_new("unknown native host function", 29);
    }
    switch (st) {
    case VUDO_HOST_DONE:
        if (nresults[kind]) raw[0].i32 = result;
        return NULL;
    case VUDO_HOST_PY_ERROR: /* a hook, the logging or grow raised */
        return raise_pending(b);
    default: /* a fault, over max_message_size, out of C memory: as Python does it */
        return call_python(b, kind, raw);
    }
}
