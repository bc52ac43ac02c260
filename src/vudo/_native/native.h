/* Internal declarations shared by the files of vudo's native core. */
#ifndef VUDO_NATIVE_H
#define VUDO_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "wasmtime_api.h"

/* One native call in progress on this thread (innermost first). `saved` is non-NULL once the
 * GIL has been released for the rest of the call: at its start (policy) or at its first epoch
 * tick (a call that runs long must not starve other threads). */
typedef struct vudo_frame {
    struct vudo_frame *prev;
    PyThreadState *saved;
} vudo_frame;

extern _Thread_local vudo_frame *vudo_current_frame;

/* GIL policy while wasm runs: 0 auto, 1 always hold, 2 always release. */
extern int vudo_gil_policy;
/* Calls that held the GIL / released it at the start / released it at an epoch tick. */
extern unsigned long long vudo_stats[3];

/* Whether a call starting now should release the GIL at once (see module.c). */
int vudo_release_at_start(void);

/* The classes the native paths raise or build, resolved at init. */
extern PyObject *vudo_struct_error;
extern PyObject *vudo_memory_access_error;

/* Fetch the raised exception as one object (NULL if none); clears the error indicator. */
PyObject *vudo_fetch_exception(void);

/* Turn `exc` (a new reference, consumed) into a trap through the Python `fail` handler,
 * retrying if the handler itself is interrupted (a signal landing in its first bytecode). */
wasm_trap_t *vudo_fail_to_trap(PyObject *fail, PyObject *exc, const char *fallback);

extern PyTypeObject vudo_CallerType;
extern PyTypeObject vudo_TrampolineType;
extern PyTypeObject vudo_BuiltinType;
extern PyTypeObject vudo_RLockType;
extern PyTypeObject vudo_BusHostType; /* bushost.c: messaging over vudo._nbus */
PyObject *vudo_nbus_attach(PyObject *self, PyObject *unused);

int vudo_rlock_check(PyObject *op);
int vudo_rlock_acquire(PyObject *op, double timeout);
int vudo_rlock_release(PyObject *op);

int vudo_caller_init(void);
int vudo_host_init(void);
PyObject *vudo_func_new(PyObject *self, PyObject *args);

#endif
