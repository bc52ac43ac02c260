/* vudo_nbus.h: the C API of vudo._nbus, the in-process message bus and host heap in C.
 *
 * Other C code (the native core's host functions) gets this API without linking to _nbus:
 *
 *     const vudo_nbus_api *api = PyCapsule_Import(VUDO_NBUS_CAPSULE, 0);
 *     if (api == NULL || api->abi_version != VUDO_NBUS_ABI_VERSION) ... fall back ...
 *
 * Handles come from the Python objects: api->bus_from_object(py_bus) for a
 * vudo._nbus.MessageBus, api->heap_from_object(py_heap) for a vudo._nbus.FreeListAllocator
 * (both borrow: keep the Python object alive while the handle is used).
 *
 * Threads and the GIL
 *   Every bus function may be called from any thread, with or without the GIL: each bus has
 *   its own mutex, held only for a few pointer operations and never while Python runs. The
 *   two exceptions take the GIL themselves (PyGILState_Ensure, so holding it already is fine):
 *   a post or broadcast into an inbox that has Python on_message hooks runs them, and the
 *   logging of a full inbox (first refusal of a spell, or every event with debug=True).
 *   A heap is not locked: its caller serialises use (in vudo, the Spirit's lock). Heap
 *   functions take the GIL only when the vudo_mem they are given has Python callbacks.
 *
 * Memory
 *   Pointers are offsets into a Spirit's linear memory (32-bit). A heap never touches memory
 *   itself except through the vudo_mem given to each call: with base != NULL it zeroes and
 *   moves bytes with memset/memmove on base (bounds-checked against size), and calls grow()
 *   when it needs more pages; grow may update base and size.
 */
#ifndef VUDO_NBUS_H
#define VUDO_NBUS_H

#include <stddef.h>
#include <stdint.h>

#define VUDO_NBUS_CAPSULE "vudo._nbus._C_API"
#define VUDO_NBUS_ABI_VERSION 1

/* Result codes (vudo.abi.ResultCode). */
#define VUDO_OK 0
#define VUDO_ERROR (-1)
#define VUDO_INVALID_ARG (-2)
#define VUDO_OUT_OF_MEMORY (-3)
#define VUDO_NOT_FOUND (-4)
/* Returned by functions that call back into Python when the callback raised (the Python
 * exception is set; the caller holds the GIL, or must acquire it and handle it). */
#define VUDO_PY_ERROR (-100)

/* Largest block a heap hands out. */
#define VUDO_MAX_ALLOC 0x7FFFFFFFu

typedef struct vudo_bus vudo_bus;
typedef struct vudo_heap vudo_heap;

/* One message. Immutable once queued; reference counted (a message can be queued and held by
 * a hook at once). Free what recv returns with msg_free. Strings are UTF-8, not terminated. */
typedef struct vudo_msg {
    struct vudo_msg *prev, *next; /* inbox links: private to the bus */
    uint32_t refs;                /* private: use msg_free */
    uint32_t from_len, to_len;
    uint32_t payload_len;
    int64_t channel;
    double timestamp; /* milliseconds since the Unix epoch */
    const char *from_, *to;
    const uint8_t *payload;
} vudo_msg;

/* A view of a Spirit's memory for one heap call. */
typedef struct vudo_mem {
    uint8_t *base; /* NULL: no direct access, zero/move go through the callbacks below */
    uint64_t size;
    /* A fresh region of at least min_bytes at the end of memory: 0 and start and length set,
     * VUDO_ERROR when memory is exhausted, VUDO_PY_ERROR when a Python callback raised. A
     * region never starts at 0. */
    int (*grow)(struct vudo_mem *m, uint64_t min_bytes, uint32_t *start, uint32_t *length);
    /* Used only when base == NULL; 0 or VUDO_PY_ERROR. */
    int (*zero)(struct vudo_mem *m, uint32_t ptr, uint32_t length);
    int (*move)(struct vudo_mem *m, uint32_t dst, uint32_t src, uint32_t length);
    void *ctx; /* the caller's */
} vudo_mem;

/* Host functions -----------------------------------------------------------------------------
 * The bodies of vudo_send, vudo_recv, vudo_pending, vudo_broadcast, vudo_free_message,
 * vudo_alloc, vudo_free and vudo_realloc (host-abi.md), with the Python Loas' semantics. The
 * caller (the wasmtime glue) passes the i32 arguments as they came (pointers reinterpreted as
 * u32) and a vudo_host describing the calling Spirit. mem->base must be set: the bodies read and
 * write the Spirit's memory directly. Each returns a status; the i32 result is set only with
 * VUDO_HOST_DONE and VUDO_HOST_OVERSIZED. */
typedef struct vudo_host {
    vudo_bus *bus;
    vudo_heap *heap;
    vudo_mem *mem;
    const char *name; /* this Spirit's name, UTF-8 */
    size_t name_len;
    int64_t max_message_size; /* payload cap of send/broadcast; < 0: none */
    int64_t max_alloc;        /* largest vudo_alloc/vudo_realloc; < 0: VUDO_MAX_ALLOC only */
} vudo_host;

#define VUDO_HOST_DONE 0      /* *result is the function's result */
#define VUDO_HOST_FAULT 1     /* a pointer/length outside memory: raise MemoryAccessError */
#define VUDO_HOST_OVERSIZED 2 /* *result = INVALID_ARG; log the max_message_size warning */
#define VUDO_HOST_PY_ERROR 3  /* a Python callback raised (exception set, GIL needed) */
#define VUDO_HOST_NO_MEMORY 4 /* the host process is out of memory (C malloc failed) */

/* Tag of message blocks in the heap (vudo_free_message frees only those). */
#define VUDO_TAG_MESSAGE 1u

typedef struct vudo_nbus_api {
    int abi_version; /* VUDO_NBUS_ABI_VERSION */

    /* Handles of Python objects (NULL and a TypeError set if the type is wrong; GIL held). */
    vudo_bus *(*bus_from_object)(void *py_object);
    vudo_heap *(*heap_from_object)(void *py_object);

    /* Queue a copy of payload for `to`: VUDO_OK, VUDO_NOT_FOUND, VUDO_ERROR (inbox full). */
    int (*bus_post)(vudo_bus *bus, const char *from_, size_t from_len, const char *to,
                    size_t to_len, const uint8_t *payload, size_t payload_len, int64_t channel);
    /* Post to every registered inbox; returns how many accepted it. */
    int (*bus_broadcast)(vudo_bus *bus, const char *from_, size_t from_len,
                         const uint8_t *payload, size_t payload_len, int64_t channel);
    /* Take the oldest message (channel 0 = any) or NULL. The caller owns it: msg_free. */
    vudo_msg *(*bus_recv)(vudo_bus *bus, const char *name, size_t name_len, int64_t channel);
    /* Put a message just taken with recv back at the front of its inbox; takes ownership
     * (NULL: no-op). Only what recv returned: a message from peek is still queued. */
    void (*bus_requeue)(vudo_bus *bus, vudo_msg *msg);
    /* The oldest message without taking it (a new reference: msg_free it) or NULL. */
    vudo_msg *(*bus_peek)(vudo_bus *bus, const char *name, size_t name_len, int64_t channel);
    /* Messages waiting (channel 0 = any); 0 for an unknown name. */
    int64_t (*bus_pending)(vudo_bus *bus, const char *name, size_t name_len, int64_t channel);
    /* Number of registered inboxes. */
    int64_t (*bus_count)(vudo_bus *bus);
    void (*msg_free)(vudo_msg *msg);

    /* FreeListAllocator semantics. alloc/realloc return the pointer, 0 on failure (bad
     * arguments or memory exhausted; realloc keeps the old block), VUDO_PY_ERROR if a callback
     * raised. zero=0 skips clearing a block the caller overwrites at once. */
    int64_t (*heap_alloc)(vudo_heap *heap, vudo_mem *mem, uint64_t size, uint64_t align,
                          int zero);
    void (*heap_free)(vudo_heap *heap, uint32_t ptr); /* unknown pointers are ignored */
    int64_t (*heap_realloc)(vudo_heap *heap, vudo_mem *mem, uint32_t ptr, int64_t old_size,
                            int64_t new_size);
    int64_t (*heap_size_of)(vudo_heap *heap, uint32_t ptr); /* usable size, or -1 */

    /* The host functions' bodies (below), so the native core needs no code of its own. */
    int (*host_send)(const vudo_host *h, uint32_t to_ptr, uint32_t to_len, uint32_t ptr,
                     uint32_t len, int32_t *result);
    int (*host_recv)(const vudo_host *h, int32_t *result);
    int (*host_pending)(const vudo_host *h, int32_t *result);
    int (*host_broadcast)(const vudo_host *h, uint32_t ptr, uint32_t len, int32_t *result);
    int (*host_free_message)(const vudo_host *h, uint32_t ptr);
    int (*host_alloc)(const vudo_host *h, int32_t size, int32_t *result);
    int (*host_free)(const vudo_host *h, uint32_t ptr, int32_t size);
    int (*host_realloc)(const vudo_host *h, uint32_t ptr, int32_t old_size, int32_t new_size,
                        int32_t *result);
} vudo_nbus_api;

#endif /* VUDO_NBUS_H */
