/* heap.h: the host heap's bookkeeping in C (no Python). See vudo_nbus.h for the contract. */
#ifndef VUDO_NBUS_HEAP_H
#define VUDO_NBUS_HEAP_H

#include "vudo_nbus.h"

#define HEAP_QUICK_MAX_SIZE 4096u
#define HEAP_QUICK_MAX_BLOCKS 64u
#define HEAP_QUICK_CLASSES (HEAP_QUICK_MAX_SIZE / 8u + 1u)

typedef struct { uint64_t start, size; } heap_span;
/* ptr 0: empty slot; tag: the caller's mark (vudo_recv marks message blocks) */
typedef struct { uint64_t ptr, start, size; uint32_t tag; } heap_live;

struct vudo_heap {
    heap_span *free_; /* free blocks, sorted by start, never adjacent (always coalesced) */
    size_t nfree, free_cap;
    heap_live *live; /* open addressing, linear probing; capacity a power of two */
    size_t nlive, live_cap;
    heap_span *regions; /* every region obtained from grow */
    size_t nregions, regions_cap;
    uint32_t *quick[HEAP_QUICK_CLASSES]; /* recently freed blocks by size/8, LIFO */
    uint8_t nquick[HEAP_QUICK_CLASSES];
    /* Size classes touched since the last flush (the Python version's dict keys). */
    size_t quick_keys;
    uint64_t in_use;
    uint64_t heap_bytes;
};

int heap_init(vudo_heap *h);
void heap_destroy(vudo_heap *h);
int64_t heap_alloc(vudo_heap *h, vudo_mem *m, uint64_t size, uint64_t align, int zero);
void heap_free(vudo_heap *h, uint32_t ptr);
int64_t heap_realloc(vudo_heap *h, vudo_mem *m, uint32_t ptr, int64_t old_size,
                     int64_t new_size);
int64_t heap_size_of(vudo_heap *h, uint32_t ptr);
void heap_reset(vudo_heap *h);
int heap_set_tag(vudo_heap *h, uint32_t ptr, uint32_t tag); /* -1: not a live block */
int64_t heap_tag_of(vudo_heap *h, uint32_t ptr);               /* -1: not a live block */

#endif
