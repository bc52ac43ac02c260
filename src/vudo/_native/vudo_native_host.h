/* The extension point for host functions written in C by other extensions (e.g. vudo_pending
 * over a C message bus): put a pointer to this struct in a PyCapsule named
 * "vudo.native_host_fn" and return it from a provider registered in
 * vudo._native_core.BUILTIN_PROVIDERS. vudo registers `callback` with `env` through
 * wasmtime_func_new_unchecked; `finalizer` (may be NULL) runs when the store drops the function.
 * The capsule is kept alive as long as the Spirit. */
#ifndef VUDO_NATIVE_HOST_H
#define VUDO_NATIVE_HOST_H

#include "wasmtime_api.h"

#define VUDO_NATIVE_HOST_CAPSULE "vudo.native_host_fn"

typedef struct vudo_native_host_fn {
    wasmtime_func_unchecked_callback_t callback;
    void *env;
    void (*finalizer)(void *);
} vudo_native_host_fn;

#endif
