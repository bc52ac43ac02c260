/* heap.c: the host heap (vudo.allocator.FreeListAllocator's algorithm) with its bookkeeping
 * in C, so host functions can allocate in a Spirit's memory without Python.
 *
 * Same choices as the Python version, so both hand out the same addresses: first fit over a
 * free list sorted by address, coalesced on every insertion; freed blocks of up to 4 KiB wait
 * in per-size LIFO quick lists (64 per size) and are flushed back when nothing fits.
 */
#include "heap.h"

#include <stdlib.h>
#include <string.h>

static uint64_t round_up(uint64_t v, uint64_t align) { return (v + align - 1) & ~(align - 1); }

/* memory access ---------------------------------------------------------------------------- */
static int mem_zero(vudo_mem *m, uint64_t ptr, uint64_t len) {
    if (len == 0) return 0;
    if (m->base == NULL) return m->zero(m, (uint32_t)ptr, (uint32_t)len);
    if (ptr + len > m->size) return VUDO_ERROR; /* a grow callback that lied */
    memset(m->base + ptr, 0, len);
    return 0;
}

static int mem_move(vudo_mem *m, uint64_t dst, uint64_t src, uint64_t len) {
    if (len == 0) return 0;
    if (m->base == NULL) return m->move(m, (uint32_t)dst, (uint32_t)src, (uint32_t)len);
    if (dst + len > m->size || src + len > m->size) return VUDO_ERROR;
    memmove(m->base + dst, m->base + src, len);
    return 0;
}

/* growable arrays -------------------------------------------------------------------------- */
static int reserve(void **items, size_t *cap, size_t need, size_t item) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < need) n *= 2;
    void *p = realloc(*items, n * item);
    if (p == NULL) return -1;
    *items = p;
    *cap = n;
    return 0;
}

/* live blocks: ptr -> (start, size) -------------------------------------------------------- */
static size_t live_slot(const vudo_heap *h, uint64_t ptr) {
    return (size_t)(((ptr >> 3) * 0x9E3779B97F4A7C15ull) >> 17) & (h->live_cap - 1);
}

static heap_live *live_find(vudo_heap *h, uint64_t ptr) {
    if (h->nlive == 0) return NULL;
    for (size_t i = live_slot(h, ptr);; i = (i + 1) & (h->live_cap - 1)) {
        if (h->live[i].ptr == ptr) return &h->live[i];
        if (h->live[i].ptr == 0) return NULL;
    }
}

static void live_put_nogrow(heap_live *table, size_t cap, heap_live e, const vudo_heap *h) {
    size_t i = (size_t)(((e.ptr >> 3) * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
    (void)h;
    while (table[i].ptr != 0 && table[i].ptr != e.ptr) i = (i + 1) & (cap - 1);
    table[i] = e;
}

static int live_put(vudo_heap *h, uint64_t ptr, uint64_t start, uint64_t size) {
    heap_live *e = live_find(h, ptr);
    if (e != NULL) {
        e->start = start;
        e->size = size;
        e->tag = 0;
        return 0;
    }
    if ((h->nlive + 1) * 4 > h->live_cap * 3) { /* keep the load under 3/4 */
        size_t cap = h->live_cap ? h->live_cap * 2 : 64;
        heap_live *t = calloc(cap, sizeof *t);
        if (t == NULL) return -1;
        for (size_t i = 0; i < h->live_cap; i++)
            if (h->live[i].ptr) live_put_nogrow(t, cap, h->live[i], h);
        free(h->live);
        h->live = t;
        h->live_cap = cap;
    }
    live_put_nogrow(h->live, h->live_cap, (heap_live){ptr, start, size, 0}, h);
    h->nlive++;
    return 0;
}

static void live_remove(vudo_heap *h, heap_live *e) {
    /* Backward-shift deletion keeps probe sequences unbroken without tombstones. */
    size_t mask = h->live_cap - 1, i = (size_t)(e - h->live), j = i;
    h->live[i].ptr = 0;
    for (;;) {
        j = (j + 1) & mask;
        if (h->live[j].ptr == 0) break;
        size_t home = live_slot(h, h->live[j].ptr);
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            h->live[i] = h->live[j];
            h->live[j].ptr = 0;
            i = j;
        }
    }
    h->nlive--;
}

/* free list ---------------------------------------------------------------------------------- */
static size_t free_lower_bound(const vudo_heap *h, uint64_t start) {
    size_t lo = 0, hi = h->nfree;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (h->free_[mid].start < start) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Needs room for one more entry (reserve_free before). */
static void insert_free(vudo_heap *h, uint64_t start, uint64_t size) {
    size_t i = free_lower_bound(h, start);
    if (i < h->nfree && h->free_[i].start == start + size) { /* coalesce with the next */
        size += h->free_[i].size;
        memmove(&h->free_[i], &h->free_[i + 1], (h->nfree - i - 1) * sizeof(heap_span));
        h->nfree--;
    }
    if (i > 0 && h->free_[i - 1].start + h->free_[i - 1].size == start) { /* and the previous */
        h->free_[i - 1].size += size;
        return;
    }
    memmove(&h->free_[i + 1], &h->free_[i], (h->nfree - i) * sizeof(heap_span));
    h->free_[i] = (heap_span){start, size};
    h->nfree++;
}

static int reserve_free(vudo_heap *h, size_t extra) {
    return reserve((void **)&h->free_, &h->free_cap, h->nfree + extra, sizeof(heap_span));
}

static uint64_t take(vudo_heap *h, uint64_t size, uint64_t align) {
    for (size_t idx = 0; idx < h->nfree; idx++) {
        uint64_t start = h->free_[idx].start, bsize = h->free_[idx].size;
        uint64_t ptr = round_up(start, align), end = ptr + size;
        if (end > start + bsize) continue;
        if (reserve_free(h, 2) < 0 || live_put(h, ptr, ptr, size) < 0) return 0;
        memmove(&h->free_[idx], &h->free_[idx + 1], (h->nfree - idx - 1) * sizeof(heap_span));
        h->nfree--;
        if (ptr > start) insert_free(h, start, ptr - start);
        if (end < start + bsize) insert_free(h, end, start + bsize - end);
        h->in_use += size;
        return ptr;
    }
    return 0;
}

static void flush_quick(vudo_heap *h) {
    for (size_t c = 0; c < HEAP_QUICK_CLASSES; c++) {
        for (size_t k = 0; k < h->nquick[c]; k++) {
            if (reserve_free(h, 1) < 0) break; /* out of host memory: those blocks leak */
            insert_free(h, h->quick[c][k], (uint64_t)c * 8);
        }
        h->nquick[c] = 0;
    }
    h->quick_keys = 0;
}

/* public ------------------------------------------------------------------------------------- */
int heap_init(vudo_heap *h) {
    memset(h, 0, sizeof *h);
    return 0;
}

void heap_destroy(vudo_heap *h) {
    free(h->free_);
    free(h->live);
    free(h->regions);
    for (size_t c = 0; c < HEAP_QUICK_CLASSES; c++) free(h->quick[c]);
    memset(h, 0, sizeof *h);
}

int64_t heap_alloc(vudo_heap *h, vudo_mem *m, uint64_t size, uint64_t align, int zero) {
    if (size > VUDO_MAX_ALLOC || align < 1 || (align & (align - 1)) || align > 0x80000000u)
        return 0;
    size = size ? (size + 7) & ~(uint64_t)7 : 8;
    uint64_t ptr = 0;
    size_t c = (size_t)(size / 8);
    if (align <= 8 && size <= HEAP_QUICK_MAX_SIZE && h->nquick[c]) {
        ptr = h->quick[c][--h->nquick[c]];
        if (live_put(h, ptr, ptr, size) < 0) {
            h->nquick[c]++;
            return 0;
        }
        h->in_use += size;
    } else {
        ptr = take(h, size, align);
        if (ptr == 0 && h->quick_keys) {
            flush_quick(h);
            ptr = take(h, size, align);
        }
        if (ptr == 0) {
            uint32_t start = 0, length = 0;
            int rc = m->grow ? m->grow(m, size + align, &start, &length) : VUDO_ERROR;
            if (rc == VUDO_PY_ERROR) return rc;
            if (rc != 0 || start == 0) return 0;
            if (reserve((void **)&h->regions, &h->regions_cap, h->nregions + 1,
                        sizeof(heap_span)) < 0 || reserve_free(h, 1) < 0)
                return 0;
            h->regions[h->nregions++] = (heap_span){start, length};
            h->heap_bytes += length;
            insert_free(h, start, length);
            ptr = take(h, size, align);
            if (ptr == 0) return 0;
        }
    }
    if (zero) {
        int rc = mem_zero(m, ptr, size);
        if (rc) return rc;
    }
    return (int64_t)ptr;
}

void heap_free(vudo_heap *h, uint32_t ptr) {
    heap_live *e = live_find(h, ptr);
    if (e == NULL || ptr == 0) return;
    uint64_t start = e->start, size = e->size;
    live_remove(h, e);
    h->in_use -= size;
    if (start == ptr && size <= HEAP_QUICK_MAX_SIZE) {
        size_t c = (size_t)(size / 8);
        if (h->quick[c] == NULL) {
            h->quick[c] = malloc(HEAP_QUICK_MAX_BLOCKS * sizeof(uint32_t));
        }
        if (h->quick[c] != NULL) {
            if (h->nquick[c] == 0) h->quick_keys++; /* approximates "a dict key exists" */
            if (h->nquick[c] < HEAP_QUICK_MAX_BLOCKS) {
                h->quick[c][h->nquick[c]++] = (uint32_t)start;
                return;
            }
        }
    }
    if (reserve_free(h, 1) == 0) insert_free(h, start, size);
}

int64_t heap_realloc(vudo_heap *h, vudo_mem *m, uint32_t ptr, int64_t old_size,
                     int64_t new_size) {
    if (ptr == 0) return new_size < 0 ? 0 : heap_alloc(h, m, (uint64_t)new_size, 8, 1);
    heap_live *e = live_find(h, ptr);
    if (e == NULL || new_size < 0 || new_size > (int64_t)VUDO_MAX_ALLOC) return 0;
    uint64_t start = e->start, size = e->size;
    uint64_t keep = old_size > 0 ? (uint64_t)old_size : 0;
    if (keep > (uint64_t)new_size) keep = (uint64_t)new_size;
    if (keep > size) keep = size;
    uint64_t want = round_up(new_size ? (uint64_t)new_size : 1, 8);
    if (want <= size) {
        if (keep < size) {
            int rc = mem_zero(m, ptr + keep, size - keep);
            if (rc) return rc;
        }
        return ptr;
    }
    /* Grow in place into an adjacent free block (which may wait in a quick list). */
    uint64_t nxt = start + size;
    size_t i = free_lower_bound(h, nxt);
    int found = i < h->nfree && h->free_[i].start == nxt;
    if (!found && h->quick_keys) {
        flush_quick(h);
        e = live_find(h, ptr);
        i = free_lower_bound(h, nxt);
        found = i < h->nfree && h->free_[i].start == nxt;
    }
    if (found && size + h->free_[i].size >= want && reserve_free(h, 1) == 0) {
        uint64_t nsize = h->free_[i].size;
        memmove(&h->free_[i], &h->free_[i + 1], (h->nfree - i - 1) * sizeof(heap_span));
        h->nfree--;
        if (size + nsize > want) insert_free(h, start + want, size + nsize - want);
        e->size = want;
        h->in_use += want - size;
        int rc = mem_zero(m, ptr + keep, want - keep);
        return rc ? rc : (int64_t)ptr;
    }
    int64_t new_ptr = heap_alloc(h, m, (uint64_t)new_size, 8, 1);
    if (new_ptr <= 0) return new_ptr;
    if (keep) {
        int rc = mem_move(m, (uint64_t)new_ptr, ptr, keep);
        if (rc) return rc;
    }
    heap_free(h, ptr);
    return new_ptr;
}

int64_t heap_size_of(vudo_heap *h, uint32_t ptr) {
    heap_live *e = live_find(h, ptr);
    return e == NULL || ptr == 0 ? -1 : (int64_t)(e->size - (ptr - e->start));
}

void heap_reset(vudo_heap *h) {
    for (size_t c = 0; c < HEAP_QUICK_CLASSES; c++) h->nquick[c] = 0;
    h->quick_keys = 0;
    if (h->live) memset(h->live, 0, h->live_cap * sizeof *h->live);
    h->nlive = 0;
    h->nfree = 0;
    h->in_use = 0;
    for (size_t r = 0; r < h->nregions; r++) {
        if (reserve_free(h, 1) < 0) break;
        insert_free(h, h->regions[r].start, h->regions[r].size);
    }
}

int heap_set_tag(vudo_heap *h, uint32_t ptr, uint32_t tag) {
    heap_live *e = ptr ? live_find(h, ptr) : NULL;
    if (e == NULL) return -1;
    e->tag = tag;
    return 0;
}

int64_t heap_tag_of(vudo_heap *h, uint32_t ptr) {
    heap_live *e = ptr ? live_find(h, ptr) : NULL;
    return e == NULL ? -1 : (int64_t)e->tag;
}
