/* Shared by host.c (trampolines, registration) and builtins.c (host functions in C). */
#ifndef VUDO_HOST_H
#define VUDO_HOST_H

#include "native.h"

enum { K_TRAMPOLINE = 0, K_NOW = 1, K_MONOTONIC = 2, K_RANDOM = 3, K_RANDOM_BYTES = 4,
       K_TEXT = 5, /* vudo_print & co: decode in C, call the logger's method */
       /* messaging and host heap over vudo._nbus (bushost.c) */
       K_SEND = 6, K_RECV = 7, K_PENDING = 8, K_BROADCAST = 9, K_FREE_MESSAGE = 10,
       K_ALLOC = 11, K_FREE = 12, K_REALLOC = 13 };

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
    PyObject *refuse; /* K_TEXT: called with the length of text over max_text (or NULL) */
    uint64_t max_text; /* K_TEXT: the Spirit's max_string_length (UINT64_MAX: none) */
    host_env *envs;
    int kind;
    int has_memory;
    wasmtime_memory_t memory;
    /* K_SEND..K_REALLOC (bushost.c) */
    PyObject *bushost;   /* the Spirit's BusHost: bus, heap, name, caps */
    PyObject *py;        /* the Python host function: rare paths (faults, caps, full heap) */
    PyObject *exhausted; /* K_ALLOC/K_REALLOC: logs the first refusal of a spell */
    int refusing;        /* K_ALLOC/K_REALLOC: in a spell of refusals (logged once) */
} Builtin;

wasm_trap_t *vudo_builtin_callback(void *envp, wasmtime_caller_t *caller,
                                   wasmtime_val_raw_t *raw, size_t len);
void vudo_detach_envs(host_env *env);
wasm_trap_t *vudo_bus_callback(host_env *env, wasmtime_caller_t *caller,
                               wasmtime_val_raw_t *raw);

int vudo_builtins_init(void);

#endif
