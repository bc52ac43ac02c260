/* host_test.c: thin entry points that let the tests drive the C API and the host function
 * bodies from Python (private: names start with an underscore). */
#include "nbus.h"

#include <stdlib.h>
#include <string.h>

#define TEST_PAGE 65536u

/* A bytearray standing in for linear memory: `size` bytes in use, grown a page at a time up
 * to the bytearray's length (like WasmMemory._grow_for_heap: a memory starting empty skips 8). */
static int test_grow(vudo_mem *m, uint64_t min_bytes, uint32_t *start, uint32_t *length) {
    uint64_t cap = *(uint64_t *)m->ctx;
    uint64_t reserve = m->size == 0 ? 8 : 0;
    uint64_t pages = (min_bytes + reserve + TEST_PAGE - 1) / TEST_PAGE;
    if (m->size + pages * TEST_PAGE > cap) return VUDO_ERROR;
    *start = (uint32_t)(m->size + reserve);
    *length = (uint32_t)(pages * TEST_PAGE - reserve);
    m->size += pages * TEST_PAGE;
    return 0;
}

/* _host_call(fn, bus, heap, memory, size, name, args, max_message_size=-1, max_alloc=-1)
 *   -> (status, result, size). Runs without the GIL, as the native core would. */
static PyObject *host_call(PyObject *mod, PyObject *args) {
    const char *fn, *name;
    Py_ssize_t name_len;
    PyObject *busobj, *heapobj, *memobj, *fargs;
    unsigned long long size;
    long long max_msg = -1, max_alloc = -1;
    if (!PyArg_ParseTuple(args, "sOOOKs#O!|LL:_host_call", &fn, &busobj, &heapobj, &memobj,
                          &size, &name, &name_len, &PyTuple_Type, &fargs, &max_msg, &max_alloc))
        return NULL;
    vudo_bus *bus = nbus_bus_from_object(busobj);
    vudo_heap *heap = bus ? nbus_heap_from_object(heapobj) : NULL;
    if (heap == NULL) return NULL;
    int64_t a[3] = {0, 0, 0};
    Py_ssize_t na = PyTuple_GET_SIZE(fargs);
    for (Py_ssize_t i = 0; i < na && i < 4; i++)
        if (i < 3 && nbus_as_i64(PyTuple_GET_ITEM(fargs, i), &a[i]) != 0) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_OverflowError, "argument too big");
            return NULL;
        }
    int64_t a3 = 0;
    if (na > 3 && nbus_as_i64(PyTuple_GET_ITEM(fargs, 3), &a3) != 0) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(memobj, &view, PyBUF_WRITABLE) < 0) return NULL;
    uint64_t cap = (uint64_t)view.len;
    if (size > cap) {
        PyBuffer_Release(&view);
        return PyErr_Format(PyExc_ValueError, "size %llu is beyond the memory", size);
    }
    vudo_mem m = {view.buf, size, test_grow, NULL, NULL, &cap};
    vudo_host h = {bus, heap, &m, name, (size_t)name_len, max_msg, max_alloc};
    int status = -1;
    int32_t r = 0;
    uint32_t u0 = (uint32_t)a[0], u1 = (uint32_t)a[1], u2 = (uint32_t)a[2], u3 = (uint32_t)a3;
    Py_BEGIN_ALLOW_THREADS
    if (!strcmp(fn, "send")) status = vudo_host_send(&h, u0, u1, u2, u3, &r);
    else if (!strcmp(fn, "recv")) status = vudo_host_recv(&h, &r);
    else if (!strcmp(fn, "pending")) status = vudo_host_pending(&h, &r);
    else if (!strcmp(fn, "broadcast")) status = vudo_host_broadcast(&h, u0, u1, &r);
    else if (!strcmp(fn, "free_message")) status = vudo_host_free_message(&h, u0);
    else if (!strcmp(fn, "alloc")) status = vudo_host_alloc(&h, (int32_t)u0, &r);
    else if (!strcmp(fn, "free")) status = vudo_host_free(&h, u0, (int32_t)u1);
    else if (!strcmp(fn, "realloc"))
        status = vudo_host_realloc(&h, u0, (int32_t)u1, (int32_t)u2, &r);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (status < 0) return PyErr_Format(PyExc_ValueError, "unknown host function %s", fn);
    return Py_BuildValue("iiK", status, (int)r, (unsigned long long)m.size);
}

typedef struct {
    vudo_bus *bus;
    const char *to;
    long n;
    int sender;
    long ok;
} poster;

static void *post_many(void *arg) {
    poster *p = arg;
    char from[16];
    int fl = snprintf(from, sizeof from, "t%d", p->sender);
    for (long i = 0; i < p->n; i++) {
        uint32_t v = (uint32_t)i;
        p->ok += nbus_api.bus_post(p->bus, from, (size_t)fl, p->to, strlen(p->to),
                                   (const uint8_t *)&v, 4, 0) == VUDO_OK;
    }
    return NULL;
}

/* _post_from_threads(bus, to, threads, per_thread) -> accepted: C threads without the GIL
 * post u32 sequence numbers as senders "t0", "t1", ... through the C API. */
static PyObject *post_from_threads(PyObject *mod, PyObject *args) {
    PyObject *busobj;
    const char *to;
    int threads;
    long per;
    if (!PyArg_ParseTuple(args, "Osil:_post_from_threads", &busobj, &to, &threads, &per))
        return NULL;
    vudo_bus *bus = nbus_bus_from_object(busobj);
    if (bus == NULL) return NULL;
    if (threads < 1 || threads > 64) return PyErr_Format(PyExc_ValueError, "1..64 threads");
    poster ps[64];
    pthread_t ts[64];
    int started = 0;
    long ok = 0;
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < threads; i++) {
        ps[i] = (poster){bus, to, per, i, 0};
        if (pthread_create(&ts[i], NULL, post_many, &ps[i]) == 0) started++;
        else break;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(ts[i], NULL);
        ok += ps[i].ok;
    }
    Py_END_ALLOW_THREADS
    if (started < threads) return PyErr_Format(PyExc_RuntimeError, "pthread_create failed");
    return PyLong_FromLong(ok);
}

/* _bench_roundtrip(bus, heap, memory, size, sender, receiver, n, payload_len) -> size:
 * n times vudo_send + vudo_recv + vudo_free_message in C, without the GIL (benchmarks). */
static PyObject *bench_roundtrip(PyObject *mod, PyObject *args) {
    PyObject *busobj, *heapobj, *memobj;
    unsigned long long size;
    const char *from_, *to;
    Py_ssize_t fl, tl;
    long n;
    unsigned int plen;
    if (!PyArg_ParseTuple(args, "OOOKs#s#lI:_bench_roundtrip", &busobj, &heapobj, &memobj,
                          &size, &from_, &fl, &to, &tl, &n, &plen))
        return NULL;
    vudo_bus *bus = nbus_bus_from_object(busobj);
    vudo_heap *heap = bus ? nbus_heap_from_object(heapobj) : NULL;
    if (heap == NULL) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(memobj, &view, PyBUF_WRITABLE) < 0) return NULL;
    uint64_t cap = (uint64_t)view.len;
    if (size > cap || (uint64_t)tl + plen + 64 > size) {
        PyBuffer_Release(&view);
        return PyErr_Format(PyExc_ValueError, "memory too small");
    }
    vudo_mem m = {view.buf, size, test_grow, NULL, NULL, &cap};
    vudo_host tx = {bus, heap, &m, from_, (size_t)fl, -1, -1};
    vudo_host rx = {bus, heap, &m, to, (size_t)tl, -1, -1};
    memcpy(m.base + 16, to, (size_t)tl); /* the recipient's name, then the payload */
    uint32_t payload = (uint32_t)(16 + tl + 7) & ~7u;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (long i = 0; i < n && !bad; i++) {
        int32_t r, ptr;
        memcpy(m.base + payload, &i, sizeof i < plen ? sizeof i : plen);
        bad |= vudo_host_send(&tx, 16, (uint32_t)tl, payload, plen, &r) || r != VUDO_OK;
        bad |= vudo_host_recv(&rx, &ptr) || ptr == 0;
        if (!bad) vudo_host_free_message(&rx, (uint32_t)ptr);
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (bad) return PyErr_Format(PyExc_RuntimeError, "a round trip failed");
    return PyLong_FromUnsignedLongLong(m.size);
}

/* _capsule_selftest(bus, name) -> dict: the C API table used as a native caller would, on
 * the registered inbox `name` (left empty) and a heap over a fresh 2-page buffer. */
static PyObject *capsule_selftest(PyObject *mod, PyObject *args) {
    PyObject *busobj;
    const char *name;
    Py_ssize_t nl;
    if (!PyArg_ParseTuple(args, "Os#:_capsule_selftest", &busobj, &name, &nl)) return NULL;
    const vudo_nbus_api *api = PyCapsule_Import(VUDO_NBUS_CAPSULE, 0);
    vudo_bus *bus = api ? api->bus_from_object(busobj) : NULL;
    if (bus == NULL) return NULL;
    size_t n = (size_t)nl;
    int post1 = api->bus_post(bus, "me", 2, name, n, (const uint8_t *)"one", 3, 1);
    int post2 = api->bus_post(bus, "me", 2, name, n, (const uint8_t *)"two", 3, 2);
    int64_t all = api->bus_pending(bus, name, n, 0), on2 = api->bus_pending(bus, name, n, 2);
    vudo_msg *p = api->bus_peek(bus, name, n, 2);
    int peek_ok = p && p->payload_len == 3 && !memcmp(p->payload, "two", 3) && p->channel == 2;
    api->msg_free(p);
    api->bus_requeue(bus, NULL); /* harmless */
    vudo_msg *r = api->bus_recv(bus, name, n, 1);
    api->bus_requeue(bus, r);
    vudo_msg *first = api->bus_recv(bus, name, n, 0);
    int requeue_ok = first && !memcmp(first->payload, "one", 3) && first->from_len == 2 &&
                     !memcmp(first->from_, "me", 2) && first->to_len == n;
    api->msg_free(first);
    api->msg_free(api->bus_recv(bus, name, n, 0));
    int64_t left = api->bus_pending(bus, name, n, 0), count = api->bus_count(bus);

    vudo_heap heap;
    heap_init(&heap);
    uint64_t cap = 2 * TEST_PAGE;
    uint8_t *buf = calloc(1, cap);
    if (buf == NULL) return PyErr_NoMemory();
    vudo_mem m = {buf, 0, test_grow, NULL, NULL, &cap};
    int64_t a = api->heap_alloc(&heap, &m, 10, 8, 1);
    int64_t size10 = api->heap_size_of(&heap, (uint32_t)a);
    int64_t b = api->heap_realloc(&heap, &m, (uint32_t)a, 10, 100);
    int64_t huge = api->heap_alloc(&heap, &m, 3 * TEST_PAGE, 8, 1); /* beyond the buffer */
    api->heap_free(&heap, (uint32_t)b);
    int64_t freed = api->heap_size_of(&heap, (uint32_t)b);
    heap_destroy(&heap);
    free(buf);
    return Py_BuildValue("{si,si,sL,sL,si,si,sL,sL,sL,sL,sL,sL,sL}", "post1", post1, "post2",
                         post2, "pending", (long long)all, "pending_2", (long long)on2,
                         "peek_ok", peek_ok, "requeue_ok", requeue_ok, "left", (long long)left,
                         "count", (long long)count, "alloc", (long long)a, "size_of",
                         (long long)size10, "realloc", (long long)b, "huge", (long long)huge,
                         "freed", (long long)freed);
}

/* _capsule_ok() -> bool: the capsule imports back to this module's table. */
static PyObject *capsule_ok(PyObject *mod, PyObject *Py_UNUSED(arg)) {
    const vudo_nbus_api *api = PyCapsule_Import(VUDO_NBUS_CAPSULE, 0);
    if (api == NULL) return NULL;
    return PyBool_FromLong(api == &nbus_api && api->abi_version == VUDO_NBUS_ABI_VERSION);
}

PyMethodDef nbus_test_methods[] = {
    {"_host_call", host_call, METH_VARARGS, "Run a host function body on a bytearray (tests)."},
    {"_post_from_threads", post_from_threads, METH_VARARGS,
     "Post from C threads without the GIL through the C API (tests)."},
    {"_bench_roundtrip", bench_roundtrip, METH_VARARGS,
     "send + recv + free_message n times in C (benchmarks)."},
    {"_capsule_selftest", capsule_selftest, METH_VARARGS,
     "Use the C API table as a native caller would (tests)."},
    {"_capsule_ok", capsule_ok, METH_NOARGS, "Whether the C API capsule imports (tests)."},
    {NULL, NULL, 0, NULL},
};
