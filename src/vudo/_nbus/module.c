/* module.c: vudo._nbus: the types, and the C API exported as a capsule (see vudo_nbus.h). */
#include "nbus.h"

static int api_post(vudo_bus *bus, const char *from_, size_t from_len, const char *to,
                    size_t to_len, const uint8_t *payload, size_t payload_len,
                    int64_t channel) {
    vudo_msg *m = msg_new(from_, from_len, to, to_len, payload, payload_len, channel, now_ms());
    return m == NULL ? VUDO_OUT_OF_MEMORY : nbus_post_nogil(bus, m);
}

static int api_broadcast(vudo_bus *bus, const char *from_, size_t from_len,
                         const uint8_t *payload, size_t payload_len, int64_t channel) {
    return nbus_bus_broadcast(bus, from_, from_len, payload, payload_len, channel, 0, NULL);
}

static vudo_msg *api_recv(vudo_bus *bus, const char *name, size_t len, int64_t channel) {
    return bus_recv_core(bus, name, len, channel, NULL);
}

static int64_t api_count(vudo_bus *bus) {
    pthread_mutex_lock(&bus->lock);
    int64_t n = (int64_t)bus->count;
    pthread_mutex_unlock(&bus->lock);
    return n;
}

const vudo_nbus_api nbus_api = {
    .abi_version = VUDO_NBUS_ABI_VERSION,
    .bus_from_object = nbus_bus_from_object,
    .heap_from_object = nbus_heap_from_object,
    .bus_post = api_post,
    .bus_broadcast = api_broadcast,
    .bus_recv = api_recv,
    .bus_requeue = bus_requeue_core,
    .bus_peek = bus_peek_core,
    .bus_pending = bus_pending_core,
    .bus_count = api_count,
    .msg_free = msg_decref,
    .heap_alloc = heap_alloc,
    .heap_free = heap_free,
    .heap_realloc = heap_realloc,
    .heap_size_of = heap_size_of,
    .host_send = vudo_host_send,
    .host_recv = vudo_host_recv,
    .host_pending = vudo_host_pending,
    .host_broadcast = vudo_host_broadcast,
    .host_free_message = vudo_host_free_message,
    .host_alloc = vudo_host_alloc,
    .host_free = vudo_host_free,
    .host_realloc = vudo_host_realloc,
};

static struct PyModuleDef nbus_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "vudo._nbus",
    .m_doc = "The in-process message bus and host heap of vudo in C (optional; see "
             "vudo._nbus_select). C API: the capsule _C_API, declared in vudo_nbus.h.",
    .m_size = -1,
    .m_methods = nbus_test_methods,
};

PyMODINIT_FUNC PyInit__nbus(void) {
    if (PyType_Ready(&NbusBusType) < 0 || PyType_Ready(&NbusUnsubscribeType) < 0 ||
        PyType_Ready(&NbusHeapType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&nbus_module);
    if (m == NULL) return NULL;
    PyObject *cap = PyCapsule_New((void *)&nbus_api, VUDO_NBUS_CAPSULE, NULL);
    if (PyModule_AddObjectRef(m, "MessageBus", (PyObject *)&NbusBusType) < 0 ||
        PyModule_AddObjectRef(m, "FreeListAllocator", (PyObject *)&NbusHeapType) < 0 ||
        cap == NULL || PyModule_AddObject(m, "_C_API", cap) < 0 ||
        PyModule_AddIntConstant(m, "ABI_VERSION", VUDO_NBUS_ABI_VERSION) < 0) {
        Py_XDECREF(cap);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
