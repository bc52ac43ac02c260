/* The slice of the wasmtime C API (v50) that vudo's native core uses.
 *
 * The wasmtime wheel ships the shared library but no headers, so the types and prototypes are
 * declared here from crates/c-api/include at v50. Every entry point is looked up at import in the
 * library handle wasmtime-py already loaded (no link-time dependency), and the struct sizes are
 * checked against wasmtime-py's ctypes bindings before anything is used (see module.c).
 */
#ifndef VUDO_WASMTIME_API_H
#define VUDO_WASMTIME_API_H

#include <stddef.h>
#include <stdint.h>

#define VUDO_WASMTIME_MAJOR 50

typedef struct wasmtime_context wasmtime_context_t;
typedef struct wasmtime_store wasmtime_store_t;
typedef struct wasmtime_caller wasmtime_caller_t;
typedef struct wasmtime_error wasmtime_error_t;
typedef struct wasm_trap_t wasm_trap_t;
typedef struct wasm_engine_t wasm_engine_t;
typedef struct wasm_functype_t wasm_functype_t;

/* 16 bytes: a store id and a private index/pointer. */
typedef struct wasmtime_func {
    uint64_t store_id;
    void *private_;
} wasmtime_func_t;

/* 24 bytes at v50. */
typedef struct wasmtime_memory {
    struct {
        uint64_t store_id;
        uint32_t private1;
    } anon;
    uint32_t private2;
} wasmtime_memory_t;

/* One 16-byte argument/result slot of the unchecked call API. */
typedef union wasmtime_val_raw {
    int32_t i32;
    int64_t i64;
    float f32;
    double f64;
    uint8_t v128[16];
    uint32_t anyref;
    uint32_t externref;
    void *funcref;
} wasmtime_val_raw_t;

typedef wasm_trap_t *(*wasmtime_func_unchecked_callback_t)(
    void *env, wasmtime_caller_t *caller, wasmtime_val_raw_t *args_and_results, size_t len);
typedef wasmtime_error_t *(*wasmtime_epoch_callback_t)(
    wasmtime_context_t *context, void *data, uint64_t *delta, uint8_t *update_kind);

/* The entry points, resolved once by vudo_wasmtime_load(). */
typedef struct vudo_wasmtime_api {
    wasmtime_error_t *(*func_call_unchecked)(wasmtime_context_t *, const wasmtime_func_t *,
                                             wasmtime_val_raw_t *, size_t, wasm_trap_t **);
    void (*func_new_unchecked)(wasmtime_context_t *, const wasm_functype_t *,
                               wasmtime_func_unchecked_callback_t, void *, void (*)(void *),
                               wasmtime_func_t *);
    wasmtime_context_t *(*caller_context)(wasmtime_caller_t *);
    uint8_t *(*memory_data)(const wasmtime_context_t *, const wasmtime_memory_t *);
    size_t (*memory_data_size)(const wasmtime_context_t *, const wasmtime_memory_t *);
    wasm_trap_t *(*trap_new)(const char *, size_t);
    void (*trap_delete)(wasm_trap_t *);
    wasmtime_error_t *(*error_new)(const char *);
    void (*engine_increment_epoch)(wasm_engine_t *);
    void (*store_epoch_deadline_callback)(wasmtime_store_t *, wasmtime_epoch_callback_t, void *,
                                          void (*)(void *));
} vudo_wasmtime_api;

extern vudo_wasmtime_api vudo_wt;

#endif
