/* host.c: the messaging and memory host functions as plain C over the bus and heap.
 *
 * Semantics follow vudo/loas/messaging.py and vudo/loas/memory.py: recv takes the message and
 * puts it back if the heap is full; free_message frees only blocks recv handed out.
 */
#include "nbus.h"

#include <string.h>

static int in_bounds(const vudo_mem *m, uint64_t ptr, uint64_t len) {
    return m->base != NULL && ptr + len <= m->size;
}

/* Whether s is strict UTF-8 (as Python's decoder: no overlongs, surrogates or > U+10FFFF). */
static int valid_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                   : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (len == 0 || i + len > n) return 0;
        uint8_t c1 = s[i + 1];
        uint8_t lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
        uint8_t hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
        if (c1 < lo || c1 > hi) return 0;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return 0;
        i += len;
    }
    return 1;
}

/* The recipient name as UTF-8: invalid bytes become U+FFFD, as read_string("replace") does
 * (through Python: rare, and it must match exactly). *owned is a bytes object to release. */
static int recipient(const uint8_t *s, size_t n, const char **out, size_t *out_len,
                     PyObject **owned) {
    *owned = NULL;
    *out = (const char *)s;
    *out_len = n;
    if (valid_utf8(s, n)) return VUDO_HOST_DONE;
    PyGILState_STATE g = PyGILState_Ensure();
    PyObject *str = PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n, "replace");
    PyObject *b = str ? PyUnicode_AsUTF8String(str) : NULL;
    Py_XDECREF(str);
    int rc = VUDO_HOST_DONE;
    if (b == NULL) {
        PyErr_Clear();
        rc = VUDO_HOST_NO_MEMORY;
    } else {
        *owned = b;
        *out = PyBytes_AS_STRING(b);
        *out_len = (size_t)PyBytes_GET_SIZE(b);
    }
    PyGILState_Release(g);
    return rc;
}

static void release_owned(PyObject *owned) {
    if (owned == NULL) return;
    PyGILState_STATE g = PyGILState_Ensure();
    Py_DECREF(owned);
    PyGILState_Release(g);
}

int vudo_host_send(const vudo_host *h, uint32_t to_ptr, uint32_t to_len, uint32_t ptr,
                   uint32_t len, int32_t *result) {
    vudo_mem *m = h->mem;
    if (!in_bounds(m, to_ptr, to_len)) return VUDO_HOST_FAULT;
    if (h->max_message_size >= 0 && len > (uint64_t)h->max_message_size) {
        if (!in_bounds(m, ptr, len)) return VUDO_HOST_FAULT; /* a bad pointer is still a fault */
        *result = VUDO_INVALID_ARG;
        return VUDO_HOST_OVERSIZED;
    }
    if (!in_bounds(m, ptr, len)) return VUDO_HOST_FAULT;
    const char *to;
    size_t tn;
    PyObject *owned;
    int rc = recipient(m->base + to_ptr, to_len, &to, &tn, &owned);
    if (rc != VUDO_HOST_DONE) return rc;
    vudo_msg *msg = msg_new(h->name, h->name_len, to, tn, m->base + ptr, len, 0, now_ms());
    release_owned(owned);
    if (msg == NULL) return VUDO_HOST_NO_MEMORY;
    int code = nbus_post_host(h->bus, msg); /* a raising on_message hook raises here too */
    if (code == VUDO_PY_ERROR) return VUDO_HOST_PY_ERROR;
    *result = code;
    return VUDO_HOST_DONE;
}

int vudo_host_recv(const vudo_host *h, int32_t *result) {
    *result = 0;
    vudo_msg *msg = bus_recv_core(h->bus, h->name, h->name_len, 0, NULL);
    if (msg == NULL) return VUDO_HOST_DONE;
    uint64_t size = 8ull + msg->from_len + msg->payload_len;
    int64_t ptr = heap_alloc(h->heap, h->mem, size, 8, 0); /* written in full below */
    if (ptr <= 0) {
        bus_requeue_core(h->bus, msg); /* the Spirit may free memory and retry */
        return ptr < 0 ? VUDO_HOST_PY_ERROR : VUDO_HOST_DONE;
    }
    vudo_mem *m = h->mem;
    if (!in_bounds(m, (uint64_t)ptr, size)) { /* a grow callback that lied */
        heap_free(h->heap, (uint32_t)ptr);
        bus_requeue_core(h->bus, msg);
        return VUDO_HOST_FAULT;
    }
    uint8_t *p = m->base + ptr;
    uint32_t fl = msg->from_len, pl = msg->payload_len;
    memcpy(p, &fl, 4); /* wasm memory is little-endian, as is every host vudo builds on */
    memcpy(p + 4, msg->from_, fl);
    memcpy(p + 4 + fl, &pl, 4);
    memcpy(p + 8 + fl, msg->payload, pl);
    heap_set_tag(h->heap, (uint32_t)ptr, VUDO_TAG_MESSAGE);
    msg_decref(msg);
    *result = (int32_t)ptr;
    return VUDO_HOST_DONE;
}

int vudo_host_pending(const vudo_host *h, int32_t *result) {
    int64_t n = bus_pending_core(h->bus, h->name, h->name_len, 0);
    *result = n > INT32_MAX ? INT32_MAX : (int32_t)n;
    return VUDO_HOST_DONE;
}

int vudo_host_broadcast(const vudo_host *h, uint32_t ptr, uint32_t len, int32_t *result) {
    vudo_mem *m = h->mem;
    if (!in_bounds(m, ptr, len)) return VUDO_HOST_FAULT;
    if (h->max_message_size >= 0 && len > (uint64_t)h->max_message_size) {
        *result = VUDO_INVALID_ARG;
        return VUDO_HOST_OVERSIZED;
    }
    int n = nbus_bus_broadcast(h->bus, h->name, h->name_len, m->base + ptr, len, 0, 2, NULL);
    if (n == VUDO_PY_ERROR) return VUDO_HOST_PY_ERROR;
    /* Counted afterwards, as the Python Loa's peers() is. */
    pthread_mutex_lock(&h->bus->lock);
    int64_t expected = (int64_t)h->bus->count;
    pthread_mutex_unlock(&h->bus->lock);
    *result = n >= expected ? VUDO_OK : VUDO_ERROR;
    return VUDO_HOST_DONE;
}

int vudo_host_free_message(const vudo_host *h, uint32_t ptr) {
    if (heap_tag_of(h->heap, ptr) == VUDO_TAG_MESSAGE) heap_free(h->heap, ptr);
    return VUDO_HOST_DONE; /* not a message block: never free what the Spirit did not receive */
}

static int too_big(const vudo_host *h, int64_t size) {
    return size < 0 || (h->max_alloc >= 0 && size > h->max_alloc);
}

int vudo_host_alloc(const vudo_host *h, int32_t size, int32_t *result) {
    *result = 0;
    if (size <= 0 || too_big(h, size)) return VUDO_HOST_DONE; /* alloc(0) is 0, as in Python */
    int64_t ptr = heap_alloc(h->heap, h->mem, (uint64_t)size, 8, 1);
    if (ptr < 0) return ptr == VUDO_PY_ERROR ? VUDO_HOST_PY_ERROR : VUDO_HOST_FAULT;
    *result = (int32_t)ptr;
    return VUDO_HOST_DONE;
}

int vudo_host_free(const vudo_host *h, uint32_t ptr, int32_t size) {
    heap_free(h->heap, ptr);
    return VUDO_HOST_DONE;
}

int vudo_host_realloc(const vudo_host *h, uint32_t ptr, int32_t old_size, int32_t new_size,
                      int32_t *result) {
    *result = 0;
    if (old_size < 0 || too_big(h, new_size)) return VUDO_HOST_DONE; /* as the Python Loa */
    int64_t r = heap_realloc(h->heap, h->mem, ptr, old_size, new_size);
    if (r < 0) return r == VUDO_PY_ERROR ? VUDO_HOST_PY_ERROR : VUDO_HOST_FAULT;
    *result = (int32_t)r;
    return VUDO_HOST_DONE;
}
