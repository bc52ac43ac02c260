/* heap_py.c: vudo._nbus.FreeListAllocator, the C heap behind vudo's Allocator Protocol.
 *
 * Constructed like vudo.allocator.FreeListAllocator(grow, zero, move): from Python the heap
 * reaches memory through those callables; C callers pass their own vudo_mem (a base pointer)
 * to the same heap through the C API, so Python and C host functions share one bookkeeping.
 */
#include "nbus.h"

typedef struct {
    PyObject_HEAD
    vudo_heap heap;
    PyObject *grow, *zero, *move;
} HeapObject;

/* Python callbacks as a vudo_mem -------------------------------------------------------------- */
static int py_grow(vudo_mem *m, uint64_t min_bytes, uint32_t *start, uint32_t *length) {
    HeapObject *self = m->ctx;
    PyObject *r = PyObject_CallFunction(self->grow, "K", (unsigned long long)min_bytes);
    if (r == NULL) return VUDO_PY_ERROR;
    if (r == Py_None) {
        Py_DECREF(r);
        return VUDO_ERROR;
    }
    unsigned long long s = 0, n = 0;
    int ok = PyArg_ParseTuple(r, "KK;grow() must return (start, length) or None", &s, &n);
    Py_DECREF(r);
    if (!ok) return VUDO_PY_ERROR;
    if (s == 0 || s > 0xFFFFFFFFull || n > 0xFFFFFFFFull || s + n > 0x100000000ull) {
        PyErr_Format(PyExc_ValueError, "grow() returned a region outside 32-bit memory: "
                     "(%llu, %llu)", s, n);
        return VUDO_PY_ERROR;
    }
    *start = (uint32_t)s;
    *length = (uint32_t)n;
    return 0;
}

static int py_call3(PyObject *fn, const char *fmt, uint32_t a, uint32_t b, uint32_t c) {
    PyObject *r = PyObject_CallFunction(fn, fmt, (unsigned long)a, (unsigned long)b,
                                        (unsigned long)c);
    if (r == NULL) return VUDO_PY_ERROR;
    Py_DECREF(r);
    return 0;
}

static int py_zero(vudo_mem *m, uint32_t ptr, uint32_t len) {
    return py_call3(((HeapObject *)m->ctx)->zero, "kk", ptr, len, 0);
}

static int py_move(vudo_mem *m, uint32_t dst, uint32_t src, uint32_t len) {
    return py_call3(((HeapObject *)m->ctx)->move, "kkk", dst, src, len);
}

static vudo_mem py_mem(HeapObject *self) {
    return (vudo_mem){NULL, 0, py_grow, py_zero, py_move, self};
}

/* A Python int as int64: 0, 1 when it does not fit (the caller treats it as out of range),
 * -1 with TypeError when it is not an int. */
int nbus_as_i64(PyObject *o, int64_t *out) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow) return 1;
    *out = v;
    return 0;
}

static PyObject *ptr_result(int64_t r) {
    if (r < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "host heap: memory access out of bounds");
        return NULL;
    }
    return PyLong_FromLongLong(r);
}

/* methods ------------------------------------------------------------------------------------ */
static int heap_init_py(HeapObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"grow", "zero", "move", NULL};
    PyObject *g, *z, *m;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO:FreeListAllocator", names, &g, &z, &m))
        return -1;
    Py_INCREF(g);
    Py_INCREF(z);
    Py_INCREF(m);
    Py_XSETREF(self->grow, g);
    Py_XSETREF(self->zero, z);
    Py_XSETREF(self->move, m);
    heap_destroy(&self->heap);
    heap_init(&self->heap);
    return 0;
}

static PyObject *heap_alloc_py(HeapObject *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames) {
    PyObject *size_o = NULL, *align_o = NULL, *zero_o = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "alloc(size, align=8, *, zero=True)");
        return NULL;
    }
    size_o = args[0];
    if (nargs == 2) align_o = args[1];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_CompareWithASCIIString(k, "align") == 0 && align_o == NULL) align_o = args[nargs + i];
        else if (PyUnicode_CompareWithASCIIString(k, "zero") == 0) zero_o = args[nargs + i];
        else {
            PyErr_Format(PyExc_TypeError, "alloc() got an unexpected keyword argument %R", k);
            return NULL;
        }
    }
    int64_t size, align = 8;
    int rc = nbus_as_i64(size_o, &size);
    if (rc < 0) return NULL;
    if (rc > 0 || size < 0) return PyLong_FromLong(0);
    if (align_o != NULL) {
        rc = nbus_as_i64(align_o, &align);
        if (rc < 0) return NULL;
        if (rc > 0 || align < 1) return PyLong_FromLong(0);
    }
    int zero = 1;
    if (zero_o != NULL && (zero = PyObject_IsTrue(zero_o)) < 0) return NULL;
    vudo_mem m = py_mem(self);
    return ptr_result(heap_alloc(&self->heap, &m, (uint64_t)size, (uint64_t)align, zero));
}

/* A pointer argument: -1 on error, 1 when it cannot be a block (outside 32 bits). */
static int as_ptr(PyObject *o, uint32_t *out) {
    int64_t v;
    int rc = nbus_as_i64(o, &v);
    if (rc) return rc;
    if (v < 0 || v > 0xFFFFFFFFll) return 1;
    *out = (uint32_t)v;
    return 0;
}

static PyObject *heap_free_py(HeapObject *self, PyObject *arg) {
    uint32_t ptr;
    int rc = as_ptr(arg, &ptr);
    if (rc < 0) return NULL;
    if (rc == 0) heap_free(&self->heap, ptr);
    Py_RETURN_NONE;
}

static PyObject *heap_realloc_py(HeapObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "realloc(ptr, old_size, new_size)");
        return NULL;
    }
    uint32_t ptr = 0;
    int64_t old_size = 0, new_size = 0;
    int rc = as_ptr(args[0], &ptr);
    int rc2 = rc < 0 ? -1 : nbus_as_i64(args[1], &old_size);
    int rc3 = rc2 < 0 ? -1 : nbus_as_i64(args[2], &new_size);
    if (rc < 0 || rc2 < 0 || rc3 < 0) return NULL;
    if (rc3 > 0 || (rc > 0)) return PyLong_FromLong(0);
    if (rc2 > 0) { /* an old size beyond int64: huge (keep all) or hugely negative (keep none) */
        PyObject *zero = PyLong_FromLong(0);
        int gt = zero ? PyObject_RichCompareBool(args[1], zero, Py_GT) : -1;
        Py_XDECREF(zero);
        if (gt < 0) return NULL;
        old_size = gt ? INT64_MAX : 0;
    }
    vudo_mem m = py_mem(self);
    return ptr_result(heap_realloc(&self->heap, &m, ptr, old_size, new_size));
}

static PyObject *heap_size_of_py(HeapObject *self, PyObject *arg) {
    uint32_t ptr;
    int rc = as_ptr(arg, &ptr);
    if (rc < 0) return NULL;
    int64_t n = rc ? -1 : heap_size_of(&self->heap, ptr);
    if (n < 0) Py_RETURN_NONE;
    return PyLong_FromLongLong(n);
}

/* Message blocks carry a tag, so vudo_free_message recognises them whichever path (the C host
 * functions or the Python Loa) received them. */
static PyObject *heap_mark_message_py(HeapObject *self, PyObject *arg) {
    uint32_t ptr;
    int rc = as_ptr(arg, &ptr);
    if (rc < 0) return NULL;
    return PyBool_FromLong(rc == 0 && heap_set_tag(&self->heap, ptr, VUDO_TAG_MESSAGE) == 0);
}

static PyObject *heap_is_message_py(HeapObject *self, PyObject *arg) {
    uint32_t ptr;
    int rc = as_ptr(arg, &ptr);
    if (rc < 0) return NULL;
    return PyBool_FromLong(rc == 0 && heap_tag_of(&self->heap, ptr) == VUDO_TAG_MESSAGE);
}

static PyObject *heap_reset_py(HeapObject *self, PyObject *Py_UNUSED(arg)) {
    heap_reset(&self->heap);
    Py_RETURN_NONE;
}

static PyObject *heap_in_use(HeapObject *self, void *Py_UNUSED(c)) {
    return PyLong_FromUnsignedLongLong(self->heap.in_use);
}

static PyObject *heap_heap_bytes(HeapObject *self, void *Py_UNUSED(c)) {
    return PyLong_FromUnsignedLongLong(self->heap.heap_bytes);
}

static int heap_traverse(HeapObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->grow);
    Py_VISIT(self->zero);
    Py_VISIT(self->move);
    return 0;
}

static int heap_clear_refs(HeapObject *self) {
    Py_CLEAR(self->grow);
    Py_CLEAR(self->zero);
    Py_CLEAR(self->move);
    return 0;
}

static void heap_dealloc(HeapObject *self) {
    PyObject_GC_UnTrack(self);
    heap_clear_refs(self);
    heap_destroy(&self->heap);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef heap_methods[] = {
    {"alloc", (PyCFunction)(void (*)(void))heap_alloc_py, METH_FASTCALL | METH_KEYWORDS,
     "alloc(size, align=8, *, zero=True) -> int: a block, 0 when memory is exhausted."},
    {"free", (PyCFunction)heap_free_py, METH_O,
     "free(ptr): release a block; unknown or double-freed pointers are ignored."},
    {"realloc", (PyCFunction)(void (*)(void))heap_realloc_py, METH_FASTCALL,
     "realloc(ptr, old_size, new_size) -> int: keeps min(old, new) bytes, zeroes the rest; "
     "0 on failure with the old block kept."},
    {"size_of", (PyCFunction)heap_size_of_py, METH_O,
     "size_of(ptr) -> int | None: the usable size of the live block at ptr."},
    {"mark_message", (PyCFunction)heap_mark_message_py, METH_O,
     "mark_message(ptr) -> bool: tag the live block at ptr as a received message."},
    {"is_message", (PyCFunction)heap_is_message_py, METH_O,
     "is_message(ptr) -> bool: whether ptr is a live block tagged as a message."},
    {"reset", (PyCFunction)heap_reset_py, METH_NOARGS, "reset(): free every block at once."},
    {NULL, NULL, 0, NULL},
};

static PyObject *heap_grow(HeapObject *self, void *Py_UNUSED(c)) {
    return Py_NewRef(self->grow ? self->grow : Py_None);
}

static PyGetSetDef heap_getset[] = {
    {"grow", (getter)heap_grow, NULL, "The grow callable the heap was made with.", NULL},
    {"in_use", (getter)heap_in_use, NULL, "Bytes currently allocated.", NULL},
    {"heap_bytes", (getter)heap_heap_bytes, NULL, "Bytes of memory owned by the host heap.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject NbusHeapType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vudo._nbus.FreeListAllocator",
    .tp_basicsize = sizeof(HeapObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .tp_doc = "FreeListAllocator(grow, zero, move): vudo's default host heap with its "
              "bookkeeping in C (same algorithm and addresses as the Python version).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)heap_init_py,
    .tp_dealloc = (destructor)heap_dealloc,
    .tp_traverse = (traverseproc)heap_traverse,
    .tp_clear = (inquiry)heap_clear_refs,
    .tp_methods = heap_methods,
    .tp_getset = heap_getset,
};

vudo_heap *nbus_heap_from_object(void *o) {
    if (!PyObject_TypeCheck((PyObject *)o, &NbusHeapType)) {
        PyErr_SetString(PyExc_TypeError, "expected a vudo._nbus.FreeListAllocator");
        return NULL;
    }
    return &((HeapObject *)o)->heap;
}
