/* The vudo host functions (host-abi.md), declared for clang's wasm32 target. */
#ifndef VUDO_H
#define VUDO_H
#include <stdint.h>

#define VUDO_IMPORT(name) __attribute__((import_module("vudo"), import_name(#name)))
#define EXPORT(name) __attribute__((export_name(#name)))

VUDO_IMPORT(vudo_print) void vudo_print(const char *ptr, int32_t len);
VUDO_IMPORT(vudo_println) void vudo_println(const char *ptr, int32_t len);
VUDO_IMPORT(vudo_log) void vudo_log(int32_t level, const char *ptr, int32_t len);
VUDO_IMPORT(vudo_error) void vudo_error(const char *ptr, int32_t len);
VUDO_IMPORT(vudo_now) int64_t vudo_now(void);
VUDO_IMPORT(vudo_monotonic_now) int64_t vudo_monotonic_now(void);
VUDO_IMPORT(vudo_send) int32_t vudo_send(const char *to, int32_t to_len, const void *p, int32_t n);
VUDO_IMPORT(vudo_recv) uint8_t *vudo_recv(void);
VUDO_IMPORT(vudo_pending) int32_t vudo_pending(void);
VUDO_IMPORT(vudo_free_message) void vudo_free_message(uint8_t *msg);
VUDO_IMPORT(vudo_alloc) void *vudo_alloc(int32_t size);
VUDO_IMPORT(vudo_free) void vudo_free(void *ptr, int32_t size);
VUDO_IMPORT(vudo_random) double vudo_random(void);
VUDO_IMPORT(vudo_random_bytes) void vudo_random_bytes(void *ptr, int32_t len);
VUDO_IMPORT(vudo_assert) void vudo_assert(int32_t cond, const char *ptr, int32_t len);
VUDO_IMPORT(vudo_panic) _Noreturn void vudo_panic(const char *ptr, int32_t len);

/* A length-prefixed string: [len u32][UTF-8 bytes]. */
static inline uint32_t lp_len(const uint8_t *lp) { return lp ? *(const uint32_t *)lp : 0; }
static inline const char *lp_data(const uint8_t *lp) { return (const char *)lp + 4; }
#endif
