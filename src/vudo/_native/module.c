/* vudo._cnative: module init, wasmtime symbol lookup and checks, the GIL policy, the native
 * epoch ticker and the epoch-deadline callback. */
#include "native.h"

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>

vudo_wasmtime_api vudo_wt;
_Thread_local vudo_frame *vudo_current_frame = NULL;
int vudo_gil_policy = 0;
unsigned long long vudo_stats[3];
PyObject *vudo_struct_error = NULL;
PyObject *vudo_memory_access_error = NULL;

static int initialized = 0;
static PyObject *threads_active = NULL; /* threading._active: the live Python threads */
static Py_ssize_t quiet_threads = 0;   /* of those, how many are vudo's idle helpers */
static PyObject *str_interrupt = NULL, *str_keyboard = NULL;

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                      */
/* ------------------------------------------------------------------------------------------ */
PyObject *vudo_fetch_exception(void) {
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

wasm_trap_t *vudo_fail_to_trap(PyObject *fail, PyObject *exc, const char *fallback) {
    /* The handler is Python: a signal can raise at its first bytecode. Each retry carries the
     * newer exception (the KeyboardInterrupt), so the caller still sees what happened. */
    for (int attempt = 0; attempt < 32 && exc != NULL; attempt++) {
        PyObject *r = PyObject_CallOneArg(fail, exc);
        if (r != NULL) {
            void *trap = PyLong_AsVoidPtr(r);
            Py_DECREF(r);
            if (trap != NULL) {
                Py_DECREF(exc);
                return (wasm_trap_t *)trap;
            }
            PyErr_Clear();
            break;
        }
        Py_DECREF(exc);
        exc = vudo_fetch_exception();
    }
    Py_XDECREF(exc);
    return vudo_wt.trap_new(fallback, strlen(fallback));
}

/* ------------------------------------------------------------------------------------------ */
/* GIL policy                                                                                  */
/* ------------------------------------------------------------------------------------------ */
int vudo_release_at_start(void) {
    if (vudo_gil_policy == 1) return 0;
    if (vudo_gil_policy == 2) return 1;
    /* auto: hold the GIL through calls while this is the only Python thread (nobody waits for
     * it); with other threads, release it so Spirits on other threads run in parallel. A held
     * call still lets go at its first epoch tick (epoch_callback below). */
    return threads_active != NULL && PyDict_GET_SIZE(threads_active) > 1 + quiet_threads;
}

/* add_quiet_thread(): one more Python thread that never competes for the GIL while a Spirit
 * runs (vudo's own signal re-deliverer, blocked in read()): the auto policy ignores it. */
static PyObject *add_quiet_thread(PyObject *self, PyObject *unused) {
    quiet_threads++;
    Py_RETURN_NONE;
}

static PyObject *set_gil_policy(PyObject *self, PyObject *arg) {
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    if (v < 0 || v > 2) {
        PyErr_SetString(PyExc_ValueError, "GIL policy is 0 (auto), 1 (hold) or 2 (release)");
        return NULL;
    }
    vudo_gil_policy = (int)v;
    Py_RETURN_NONE;
}

static PyObject *gil_stats(PyObject *self, PyObject *unused) {
    return Py_BuildValue("(KKK)", vudo_stats[0], vudo_stats[1], vudo_stats[2]);
}

/* ------------------------------------------------------------------------------------------ */
/* Epoch-deadline callback                                                                     */
/* ------------------------------------------------------------------------------------------ */
/* `data` is the Python `Spirit._on_epoch` (borrowed: the Spirit keeps it alive). It is called as
 * on_epoch(None, None, cell, cell) with a one-item list standing for the delta/kind pointers. */
static wasmtime_error_t *epoch_callback(wasmtime_context_t *ctx, void *data, uint64_t *delta,
                                        uint8_t *kind) {
    vudo_frame *frame = vudo_current_frame;
    if (frame != NULL && frame->saved == NULL && PyGILState_Check()) {
        /* A native call holding the GIL has run a whole tick: let other threads in now. */
        vudo_stats[2]++; /* counted while the GIL still guards the counters */
        frame->saved = PyEval_SaveThread();
    }
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *fn = (PyObject *)data;
    wasmtime_error_t *err = NULL;
    PyObject *cell = PyList_New(1);
    PyObject *r = NULL;
    if (cell != NULL) {
        Py_INCREF(Py_None);
        PyList_SET_ITEM(cell, 0, Py_None);
        PyObject *argv[4] = {Py_None, Py_None, cell, cell};
        r = PyObject_Vectorcall(fn, argv, 4, NULL);
        Py_DECREF(cell);
    }
    if (r == NULL) {
        /* Ctrl-C landing before the handler's own `try`: stop the call all the same. */
        if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) && PyMethod_Check(fn)) {
            PyErr_Clear();
            if (PyObject_SetAttr(PyMethod_GET_SELF(fn), str_interrupt, str_keyboard) == 0)
                err = vudo_wt.error_new("interrupted: keyboard");
        }
        PyErr_Clear();
    } else {
        void *p = PyLong_AsVoidPtr(r);
        Py_DECREF(r);
        if (p == NULL) PyErr_Clear();
        err = (wasmtime_error_t *)p;
    }
    if (err == NULL) {
        *delta = 1;
        *kind = 0;
    }
    PyGILState_Release(g);
    return err;
}

static PyObject *set_epoch_callback(PyObject *self, PyObject *args) {
    unsigned long long store;
    PyObject *fn, *interrupt_name = NULL;
    if (!PyArg_ParseTuple(args, "KO|U", &store, &fn, &interrupt_name)) return NULL;
    if (interrupt_name != NULL) { /* the attribute naming why a call stopped (process-wide) */
        Py_INCREF(interrupt_name);
        PyUnicode_InternInPlace(&interrupt_name);
        Py_XSETREF(str_interrupt, interrupt_name);
    }
    vudo_wt.store_epoch_deadline_callback((wasmtime_store_t *)(uintptr_t)store, epoch_callback,
                                          fn, NULL);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------------------ */
/* The epoch ticker: a native thread, so a Spirit holding the GIL is still interrupted          */
/* ------------------------------------------------------------------------------------------ */
static pthread_mutex_t ticker_mu = PTHREAD_MUTEX_INITIALIZER;
static int ticker_running = 0;
static int atfork_installed = 0;
static wasm_engine_t *ticker_engine = NULL;
static long ticker_interval_ns = 5000000;

static void *ticker_main(void *unused) {
    struct timespec ts = {ticker_interval_ns / 1000000000L, ticker_interval_ns % 1000000000L};
    for (;;) {
        struct timespec left = ts;
        while (nanosleep(&left, &left) != 0) {
        }
        vudo_wt.engine_increment_epoch(ticker_engine);
    }
    return NULL;
}

/* Called with ticker_mu held (or in a fork child, where no other thread exists). */
static int ticker_spawn(void) {
    pthread_t tid;
    pthread_attr_t attr;
    sigset_t all, old;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    /* Born with every signal blocked: SIGINT and friends go to the Python threads. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&tid, &attr, ticker_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc == 0) ticker_running = 1;
    return rc;
}

static void ticker_atfork_child(void) {
    /* Threads do not survive fork: start a fresh ticker in the child if one ran. */
    pthread_mutex_init(&ticker_mu, NULL);
    ticker_running = 0;
    if (ticker_engine != NULL) ticker_spawn();
}

static PyObject *start_ticker(PyObject *self, PyObject *args) {
    PyObject *engine;
    unsigned long long ptr;
    double interval;
    if (!PyArg_ParseTuple(args, "OKd", &engine, &ptr, &interval)) return NULL;
    int rc = 0;
    pthread_mutex_lock(&ticker_mu);
    if (!ticker_running) {
        if (ticker_engine == NULL) {
            Py_INCREF(engine); /* never freed: the thread uses the engine until exit */
            ticker_engine = (wasm_engine_t *)(uintptr_t)ptr;
            ticker_interval_ns = (long)(interval * 1e9);
            if (ticker_interval_ns < 100000) ticker_interval_ns = 100000;
        }
        if (!atfork_installed && pthread_atfork(NULL, NULL, ticker_atfork_child) == 0)
            atfork_installed = 1;
        rc = ticker_spawn();
    }
    pthread_mutex_unlock(&ticker_mu);
    if (rc != 0) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *ticker_is_running(PyObject *self, PyObject *unused) {
    return PyBool_FromLong(ticker_running);
}

/* ------------------------------------------------------------------------------------------ */
/* Init: resolve and check everything before any fast path is handed out                      */
/* ------------------------------------------------------------------------------------------ */
static void *resolve(void *handle, const char *name) {
    void *p = dlsym(handle, name);
    if (p == NULL) PyErr_Format(PyExc_RuntimeError, "libwasmtime has no symbol %s", name);
    return p;
}

#define RESOLVE(field, name)                                      \
    do {                                                          \
        *(void **)(&api.field) = resolve(handle, name);           \
        if (api.field == NULL) return NULL;                       \
    } while (0)

static PyObject *init(PyObject *self, PyObject *args) {
    unsigned long long handle_int;
    int major;
    Py_ssize_t func_size, memory_size, raw_size;
    if (!PyArg_ParseTuple(args, "Kinnn", &handle_int, &major, &func_size, &memory_size,
                          &raw_size))
        return NULL;
    if (major != VUDO_WASMTIME_MAJOR) {
        return PyErr_Format(PyExc_RuntimeError, "built for wasmtime %d, running wasmtime %d",
                            VUDO_WASMTIME_MAJOR, major);
    }
    if (func_size != (Py_ssize_t)sizeof(wasmtime_func_t) ||
        memory_size != (Py_ssize_t)sizeof(wasmtime_memory_t) ||
        raw_size != (Py_ssize_t)sizeof(wasmtime_val_raw_t)) {
        return PyErr_Format(PyExc_RuntimeError,
                            "struct sizes differ: func %zd/%zu, memory %zd/%zu, val_raw %zd/%zu",
                            func_size, sizeof(wasmtime_func_t), memory_size,
                            sizeof(wasmtime_memory_t), raw_size, sizeof(wasmtime_val_raw_t));
    }
    void *handle = (void *)(uintptr_t)handle_int;
    vudo_wasmtime_api api;
    RESOLVE(func_call_unchecked, "wasmtime_func_call_unchecked");
    RESOLVE(func_new_unchecked, "wasmtime_func_new_unchecked");
    RESOLVE(caller_context, "wasmtime_caller_context");
    RESOLVE(memory_data, "wasmtime_memory_data");
    RESOLVE(memory_data_size, "wasmtime_memory_data_size");
    RESOLVE(trap_new, "wasmtime_trap_new");
    RESOLVE(trap_delete, "wasm_trap_delete");
    RESOLVE(error_new, "wasmtime_error_new");
    RESOLVE(engine_increment_epoch, "wasmtime_engine_increment_epoch");
    RESOLVE(store_epoch_deadline_callback, "wasmtime_store_epoch_deadline_callback");

    PyObject *st = PyImport_ImportModule("_struct");
    if (st == NULL) return NULL;
    PyObject *serr = PyObject_GetAttrString(st, "error");
    Py_DECREF(st);
    if (serr == NULL) return NULL;
    PyObject *errors = PyImport_ImportModule("vudo.errors");
    if (errors == NULL) return NULL;
    PyObject *mae = PyObject_GetAttrString(errors, "MemoryAccessError");
    Py_DECREF(errors);
    if (mae == NULL) return NULL;
    PyObject *threading = PyImport_ImportModule("threading");
    if (threading == NULL) return NULL;
    PyObject *active = PyObject_GetAttrString(threading, "_active");
    Py_DECREF(threading);
    if (active != NULL && !PyDict_Check(active)) Py_CLEAR(active);
    PyErr_Clear();

    Py_XSETREF(vudo_struct_error, serr);
    Py_XSETREF(vudo_memory_access_error, mae);
    Py_XSETREF(threads_active, active);
    vudo_wt = api;
    initialized = 1;
    Py_RETURN_NONE;
}

static PyObject *is_initialized(PyObject *self, PyObject *unused) {
    return PyBool_FromLong(initialized);
}

static PyMethodDef methods[] = {
    {"init", init, METH_VARARGS,
     "init(handle, major, sizeof_func, sizeof_memory, sizeof_val_raw): bind to libwasmtime."},
    {"initialized", is_initialized, METH_NOARGS, "Whether init() succeeded."},
    {"start_ticker", start_ticker, METH_VARARGS,
     "start_ticker(engine, engine_ptr, interval_s): start the epoch thread (idempotent)."},
    {"ticker_running", ticker_is_running, METH_NOARGS, "Whether the epoch thread runs."},
    {"set_epoch_callback", set_epoch_callback, METH_VARARGS,
     "set_epoch_callback(store_ptr, on_epoch[, interrupt_attr]): native epoch-deadline "
     "callback; on_epoch is borrowed, Ctrl-C sets on_epoch.__self__.<interrupt_attr>."},
    {"set_gil_policy", set_gil_policy, METH_O, "0 auto, 1 hold, 2 release."},
    {"add_quiet_thread", add_quiet_thread, METH_NOARGS,
     "Count one more idle vudo thread that the auto GIL policy ignores."},
    {"gil_stats", gil_stats, METH_NOARGS,
     "(calls holding the GIL, released at start, released at an epoch tick)."},
    {"nbus_attach", vudo_nbus_attach, METH_NOARGS,
     "Import vudo._nbus's C API capsule: False if it is absent or of another ABI version."},
    {"func_new", vudo_func_new, METH_VARARGS,
     "func_new(ctx, functype_ptr, host, func_out_ptr): a host Func over a native trampoline."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "vudo._cnative",
    "vudo's native core: call paths, host trampolines, built-in host functions, epoch ticker.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__cnative(void) {
    if (PyType_Ready(&vudo_CallerType) < 0 || PyType_Ready(&vudo_TrampolineType) < 0 ||
        PyType_Ready(&vudo_BuiltinType) < 0 || PyType_Ready(&vudo_RLockType) < 0 ||
        PyType_Ready(&vudo_BusHostType) < 0)
        return NULL;
    if (vudo_caller_init() < 0 || vudo_host_init() < 0) return NULL;
    str_interrupt = PyUnicode_InternFromString("_interrupt");
    str_keyboard = PyUnicode_InternFromString("keyboard");
    if (str_interrupt == NULL || str_keyboard == NULL) return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Caller", (PyObject *)&vudo_CallerType) < 0 ||
        PyModule_AddObjectRef(m, "Trampoline", (PyObject *)&vudo_TrampolineType) < 0 ||
        PyModule_AddObjectRef(m, "Builtin", (PyObject *)&vudo_BuiltinType) < 0 ||
        PyModule_AddObjectRef(m, "BusHost", (PyObject *)&vudo_BusHostType) < 0 ||
        PyModule_AddObjectRef(m, "RLock", (PyObject *)&vudo_RLockType) < 0 ||
        PyModule_AddIntConstant(m, "WASMTIME_MAJOR", VUDO_WASMTIME_MAJOR) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
