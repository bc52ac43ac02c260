/* nbus.h: declarations shared by the files of vudo._nbus (private). */
#ifndef VUDO_NBUS_INTERNAL_H
#define VUDO_NBUS_INTERNAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>

#include "heap.h"
#include "vudo_nbus.h"

/* bus core (bus.c): no Python except the PyObject pointers it stores for the Python layer. */
typedef struct inbox {
    char *name;
    uint32_t name_len;
    uint64_t hash;
    int64_t capacity, count;
    int refusing; /* full, and the refusal was logged (until a message fits again) */
    uint64_t serial;
    vudo_msg *head, *tail;
    PyObject *pyname; /* the name as a str (GIL-protected, immutable) */
    PyObject *hooks;  /* a list of on_message callbacks, NULL until the first (GIL-protected) */
    struct inbox *hnext, *prev, *next; /* hash chain; registration order */
} inbox;

struct vudo_bus {
    pthread_mutex_t lock;
    inbox **buckets;
    size_t nbuckets, count;
    inbox *first, *last;
    uint64_t serial;
    int64_t capacity;
    int debug;
    PyObject *owner; /* the Python MessageBus (borrowed), for hooks and logging */
};

/* What a post did, for the follow-up that needs Python (logging, hooks). */
typedef struct {
    int code;
    int first_refusal; /* the first refusal of a spell of fullness */
    int64_t capacity;
    vudo_msg *hooked;  /* a reference for the hooks (inbox with hooks), else NULL */
    PyObject *hooks;   /* with gil_held: a new reference to the hooks list */
    PyObject *pyname;  /* with gil_held and hooks: a new reference to the inbox's name */
} post_info;

int bus_init(vudo_bus *bus, int64_t capacity);
void bus_destroy(vudo_bus *bus);
vudo_msg *msg_new(const char *from_, size_t from_len, const char *to, size_t to_len,
                  const uint8_t *payload, size_t payload_len, int64_t channel, double ts);
void msg_decref(vudo_msg *msg);
double now_ms(void);
inbox *bus_find(vudo_bus *bus, const char *name, size_t len); /* lock held */
int bus_add(vudo_bus *bus, const char *name, size_t len, int64_t capacity, PyObject *pyname);
inbox *bus_unlink(vudo_bus *bus, const char *name, size_t len); /* lock held */
void inbox_drop_messages(inbox *ib);
int bus_post_core(vudo_bus *bus, vudo_msg *msg, int gil_held, post_info *info);
vudo_msg *bus_recv_core(vudo_bus *bus, const char *name, size_t len, int64_t channel,
                        PyObject **pyname);
vudo_msg *bus_peek_core(vudo_bus *bus, const char *name, size_t len, int64_t channel);
void bus_requeue_core(vudo_bus *bus, vudo_msg *msg);
int64_t bus_pending_core(vudo_bus *bus, const char *name, size_t len, int64_t channel);

/* bus_py.c: helpers of the Python MessageBus */
#define FROM_CACHE 64
typedef struct {
    PyObject_HEAD
    vudo_bus bus;
    PyObject *from_cache[FROM_CACHE]; /* decoded sender names, so recv rarely decodes */
} BusObject;

int nbus_utf8_of(PyObject *o, const char **s, Py_ssize_t *n);
PyObject *nbus_code_obj(int code);
PyObject *nbus_make_message(BusObject *self, const vudo_msg *m, PyObject *from_, PyObject *to);
int nbus_post_py(BusObject *self, PyObject *from_, PyObject *to, const uint8_t *data,
                 size_t len, int64_t channel);
int nbus_bus_after_post(vudo_bus *bus, post_info *info, vudo_msg *m, PyObject *from_,
                        PyObject *to);
int nbus_bus_broadcast(vudo_bus *bus, const char *from_, size_t from_len,
                       const uint8_t *payload, size_t len, int64_t channel, int gil_held,
                       PyObject *from_obj); /* gil_held 2: no GIL, exceptions propagate */
int nbus_post_nogil(vudo_bus *bus, vudo_msg *msg);
int nbus_post_host(vudo_bus *bus, vudo_msg *msg); /* VUDO_PY_ERROR: exception set */
int nbus_import_python_types(void);
extern PyObject *nbus_name_taken;  /* vudo.errors.NameTaken, set by nbus_import_python_types */

/* bus_type.c, bus_hooks.c */
extern PyTypeObject NbusBusType;
extern PyTypeObject NbusUnsubscribeType;
PyObject *nbus_bus_on_message(BusObject *self, PyObject *const *args, Py_ssize_t nargs);
vudo_bus *nbus_bus_from_object(void *o);

/* heap_py.c */
extern PyTypeObject NbusHeapType;
vudo_heap *nbus_heap_from_object(void *o);
int nbus_as_i64(PyObject *o, int64_t *out);

/* host.c */
int vudo_host_send(const vudo_host *h, uint32_t to_ptr, uint32_t to_len, uint32_t ptr,
                   uint32_t len, int32_t *result);
int vudo_host_recv(const vudo_host *h, int32_t *result);
int vudo_host_pending(const vudo_host *h, int32_t *result);
int vudo_host_broadcast(const vudo_host *h, uint32_t ptr, uint32_t len, int32_t *result);
int vudo_host_free_message(const vudo_host *h, uint32_t ptr);
int vudo_host_alloc(const vudo_host *h, int32_t size, int32_t *result);
int vudo_host_free(const vudo_host *h, uint32_t ptr, int32_t size);
int vudo_host_realloc(const vudo_host *h, uint32_t ptr, int32_t old_size, int32_t new_size,
                      int32_t *result);

/* host_test.c: entry points for the tests */
extern PyMethodDef nbus_test_methods[];

/* module.c: the C API table (also used by the host functions in host.c) */
extern const vudo_nbus_api nbus_api;

#endif
