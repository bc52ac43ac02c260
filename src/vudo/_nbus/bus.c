/* bus.c: the message bus core: bounded FIFO inboxes behind one mutex per bus, no Python.
 *
 * Messages are built (malloc, copy, timestamp) before the lock is taken, so the critical
 * sections are a hash lookup and a few pointer updates. Nothing here calls Python or needs the
 * GIL; the Python layer (bus_py.c) and the C API (module.c) add hooks and logging after.
 */
#include "nbus.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

vudo_msg *msg_new(const char *from_, size_t from_len, const char *to, size_t to_len,
                  const uint8_t *payload, size_t payload_len, int64_t channel, double ts) {
    if (from_len > 0xFFFFFFFFu || to_len > 0xFFFFFFFFu || payload_len > 0xFFFFFFFFu)
        return NULL;
    /* One block: the header, then payload, sender and recipient bytes. */
    vudo_msg *m = malloc(sizeof *m + payload_len + from_len + to_len);
    if (m == NULL) return NULL;
    uint8_t *p = (uint8_t *)(m + 1);
    memcpy(p, payload, payload_len);
    memcpy(p + payload_len, from_, from_len);
    memcpy(p + payload_len + from_len, to, to_len);
    m->prev = m->next = NULL;
    m->refs = 1;
    m->from_len = (uint32_t)from_len;
    m->to_len = (uint32_t)to_len;
    m->payload_len = (uint32_t)payload_len;
    m->channel = channel;
    m->timestamp = ts;
    m->payload = p;
    m->from_ = (const char *)p + payload_len;
    m->to = (const char *)p + payload_len + from_len;
    return m;
}

void msg_decref(vudo_msg *msg) {
    if (msg != NULL && __atomic_sub_fetch(&msg->refs, 1, __ATOMIC_ACQ_REL) == 0) free(msg);
}

static uint64_t name_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

int bus_init(vudo_bus *bus, int64_t capacity) {
    memset(bus, 0, sizeof *bus);
    bus->nbuckets = 64;
    bus->buckets = calloc(bus->nbuckets, sizeof *bus->buckets);
    if (bus->buckets == NULL) return -1;
    bus->capacity = capacity;
    pthread_mutex_init(&bus->lock, NULL);
    return 0;
}

void inbox_drop_messages(inbox *ib) {
    vudo_msg *m = ib->head;
    while (m != NULL) {
        vudo_msg *next = m->next;
        m->prev = m->next = NULL;
        msg_decref(m);
        m = next;
    }
    ib->head = ib->tail = NULL;
    ib->count = 0;
}

void bus_destroy(vudo_bus *bus) {
    /* Inboxes are unlinked and released by the Python layer first (they hold PyObjects). */
    free(bus->buckets);
    bus->buckets = NULL;
    pthread_mutex_destroy(&bus->lock);
}

inbox *bus_find(vudo_bus *bus, const char *name, size_t len) {
    uint64_t h = name_hash(name, len);
    for (inbox *ib = bus->buckets[h & (bus->nbuckets - 1)]; ib != NULL; ib = ib->hnext)
        if (ib->hash == h && ib->name_len == len && memcmp(ib->name, name, len) == 0) return ib;
    return NULL;
}

static void rehash(vudo_bus *bus) {
    size_t n = bus->nbuckets * 2;
    inbox **b = calloc(n, sizeof *b);
    if (b == NULL) return; /* keep the longer chains */
    for (inbox *ib = bus->first; ib != NULL; ib = ib->next) {
        ib->hnext = b[ib->hash & (n - 1)];
        b[ib->hash & (n - 1)] = ib;
    }
    free(bus->buckets);
    bus->buckets = b;
    bus->nbuckets = n;
}

/* 0, 1 if the name is taken, -1 when out of memory. Takes the lock. */
int bus_add(vudo_bus *bus, const char *name, size_t len, int64_t capacity, PyObject *pyname) {
    inbox *ib = calloc(1, sizeof *ib);
    char *copy = malloc(len ? len : 1);
    if (ib == NULL || copy == NULL || len > 0xFFFFFFFFu) {
        free(ib);
        free(copy);
        return -1;
    }
    memcpy(copy, name, len);
    ib->name = copy;
    ib->name_len = (uint32_t)len;
    ib->hash = name_hash(name, len);
    ib->capacity = capacity;
    ib->pyname = pyname;
    pthread_mutex_lock(&bus->lock);
    if (bus_find(bus, name, len) != NULL) {
        pthread_mutex_unlock(&bus->lock);
        free(copy);
        free(ib);
        return 1;
    }
    ib->serial = ++bus->serial;
    if (bus->count + 1 > bus->nbuckets) rehash(bus);
    size_t slot = ib->hash & (bus->nbuckets - 1);
    ib->hnext = bus->buckets[slot];
    bus->buckets[slot] = ib;
    ib->prev = bus->last;
    if (bus->last) bus->last->next = ib;
    else bus->first = ib;
    bus->last = ib;
    bus->count++;
    pthread_mutex_unlock(&bus->lock);
    return 0;
}

inbox *bus_unlink(vudo_bus *bus, const char *name, size_t len) {
    inbox *ib = bus_find(bus, name, len);
    if (ib == NULL) return NULL;
    inbox **pp = &bus->buckets[ib->hash & (bus->nbuckets - 1)];
    while (*pp != ib) pp = &(*pp)->hnext;
    *pp = ib->hnext;
    if (ib->prev) ib->prev->next = ib->next;
    else bus->first = ib->next;
    if (ib->next) ib->next->prev = ib->prev;
    else bus->last = ib->prev;
    bus->count--;
    return ib;
}

int bus_post_core(vudo_bus *bus, vudo_msg *msg, int gil_held, post_info *info) {
    memset(info, 0, sizeof *info);
    pthread_mutex_lock(&bus->lock);
    inbox *ib = bus_find(bus, msg->to, msg->to_len);
    if (ib == NULL) {
        info->code = VUDO_NOT_FOUND;
    } else if (ib->count >= ib->capacity) {
        info->code = VUDO_ERROR;
        info->first_refusal = !ib->refusing;
        ib->refusing = 1;
        info->capacity = ib->capacity;
    } else {
        ib->refusing = 0;
        msg->prev = ib->tail;
        msg->next = NULL;
        if (ib->tail) ib->tail->next = msg;
        else ib->head = msg;
        ib->tail = msg;
        ib->count++;
        info->code = VUDO_OK;
        if (ib->hooks != NULL) {
            __atomic_add_fetch(&msg->refs, 1, __ATOMIC_RELAXED);
            info->hooked = msg;
            if (gil_held) { /* only a GIL holder may touch reference counts */
                Py_INCREF(ib->hooks);
                info->hooks = ib->hooks;
                Py_INCREF(ib->pyname);
                info->pyname = ib->pyname;
            }
        }
    }
    pthread_mutex_unlock(&bus->lock);
    return info->code; /* not queued: the caller still owns msg (it names the refusal) */
}

static vudo_msg *find_on_channel(inbox *ib, int64_t channel) {
    vudo_msg *m = ib->head;
    if (channel != 0)
        while (m != NULL && m->channel != channel) m = m->next;
    return m;
}

vudo_msg *bus_recv_core(vudo_bus *bus, const char *name, size_t len, int64_t channel,
                        PyObject **pyname) {
    pthread_mutex_lock(&bus->lock);
    inbox *ib = bus_find(bus, name, len);
    vudo_msg *m = ib ? find_on_channel(ib, channel) : NULL;
    if (m != NULL) {
        if (m->prev) m->prev->next = m->next;
        else ib->head = m->next;
        if (m->next) m->next->prev = m->prev;
        else ib->tail = m->prev;
        m->prev = m->next = NULL;
        ib->count--;
        if (pyname != NULL) { /* the caller holds the GIL */
            Py_INCREF(ib->pyname);
            *pyname = ib->pyname;
        }
    }
    pthread_mutex_unlock(&bus->lock);
    return m;
}

vudo_msg *bus_peek_core(vudo_bus *bus, const char *name, size_t len, int64_t channel) {
    pthread_mutex_lock(&bus->lock);
    inbox *ib = bus_find(bus, name, len);
    vudo_msg *m = ib ? find_on_channel(ib, channel) : NULL;
    if (m != NULL) __atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&bus->lock);
    return m;
}

void bus_requeue_core(vudo_bus *bus, vudo_msg *msg) {
    if (msg == NULL) return; /* what a recv that found nothing returned */
    pthread_mutex_lock(&bus->lock);
    inbox *ib = bus_find(bus, msg->to, msg->to_len);
    if (ib != NULL) { /* no capacity check: the message held its place before */
        msg->prev = NULL;
        msg->next = ib->head;
        if (ib->head) ib->head->prev = msg;
        else ib->tail = msg;
        ib->head = msg;
        ib->count++;
        msg = NULL;
    }
    pthread_mutex_unlock(&bus->lock);
    msg_decref(msg);
}

int64_t bus_pending_core(vudo_bus *bus, const char *name, size_t len, int64_t channel) {
    int64_t n = 0;
    pthread_mutex_lock(&bus->lock);
    inbox *ib = bus_find(bus, name, len);
    if (ib != NULL) {
        if (channel == 0) n = ib->count;
        else
            for (vudo_msg *m = ib->head; m != NULL; m = m->next) n += m->channel == channel;
    }
    pthread_mutex_unlock(&bus->lock);
    return n;
}
