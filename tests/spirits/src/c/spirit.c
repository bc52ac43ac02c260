/* A C Spirit (clang + wasi-libc, reactor): strings, genes, messaging, clocks/random/log,
 * assert/panic, and the guest side of the host-allocator tests. Built twice: with malloc/free
 * exported (the host allocates through them) and without (the host grows pages; vudo warns). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "vudo.h"

static int initialized;
__attribute__((constructor)) static void init(void) { initialized = 42; }

/* Set by _initialize (the reactor's constructors): 42 once vudo has called it. */
EXPORT(initialized) int32_t initialized_value(void) { return initialized; }

static uint8_t *lp_new(const char *text, uint32_t len) {
    uint8_t *lp = malloc(4 + len);
    if (!lp) return 0;
    memcpy(lp, &len, 4);
    memcpy(lp + 4, text, len);
    return lp;
}

/* greet("Ada") -> "Hello, Ada!" as a length-prefixed string the caller frees with lp_free. */
EXPORT(greet) uint8_t *greet(const uint8_t *name) {
    char buf[256];
    int n = snprintf(buf, sizeof buf, "Hello, %.*s!", (int)lp_len(name), lp_data(name));
    vudo_println(buf, n);
    return lp_new(buf, (uint32_t)n);
}

EXPORT(lp_free) void lp_free(uint8_t *lp) { free(lp); }

/* A gene: struct Reading { int64_t at; double value; int32_t ok; const uint8_t *label; }. */
struct Reading {
    int64_t at;
    double value;
    int32_t ok;
    const uint8_t *label;
};

EXPORT(new_Reading) struct Reading *new_reading(int64_t at, double value, int32_t ok) {
    struct Reading *r = calloc(1, sizeof *r);
    static const char label[] = "sensor-7";
    r->at = at;
    r->value = value;
    r->ok = ok;
    r->label = lp_new(label, sizeof label - 1);
    return r;
}

EXPORT(Reading.value) double reading_value(const struct Reading *r) { return r->value; }
EXPORT(Reading.label_len) int32_t reading_label_len(const struct Reading *r) {
    return (int32_t)lp_len(r->label);
}

/* Clocks, random and logging: returns 1 when every value looked right. */
EXPORT(observe) int32_t observe(void) {
    int64_t wall = vudo_now();
    int64_t m1 = vudo_monotonic_now(), m2 = vudo_monotonic_now();
    double r = vudo_random();
    uint8_t bytes[16] = {0};
    vudo_random_bytes(bytes, sizeof bytes);
    char buf[128];
    int n = snprintf(buf, sizeof buf, "now=%lld random=%.3f", (long long)wall, r);
    vudo_log(1, buf, n);
    vudo_log(2, "careful", 7);
    vudo_error("something failed", 16);
    int any = 0;
    for (unsigned i = 0; i < sizeof bytes; i++) any |= bytes[i];
    return wall > 0 && m2 >= m1 && r >= 0 && r < 1 && any;
}

EXPORT(check) void check(int32_t value) { vudo_assert(value > 0, "value must be positive", 22); }
EXPORT(boom) void boom(void) { vudo_panic("boom from C", 11); }

/* Messaging: send a payload to a Spirit by name. */
EXPORT(send_to) int32_t send_to(const uint8_t *to, const uint8_t *payload) {
    return vudo_send(lp_data(to), (int32_t)lp_len(to), lp_data(payload), (int32_t)lp_len(payload));
}

/* The oldest message's payload as a length-prefixed string (0 if none); the message is freed. */
EXPORT(recv_payload) uint8_t *recv_payload(void) {
    uint8_t *msg = vudo_recv();
    if (!msg) return 0;
    uint32_t slen = *(uint32_t *)msg;
    uint32_t plen = *(uint32_t *)(msg + 4 + slen);
    uint8_t *out = lp_new((const char *)msg + 8 + slen, plen);
    vudo_free_message(msg);
    return out;
}

/* ---- guest side of the allocator tests ---------------------------------------------- */
EXPORT(g_alloc) uint8_t *g_alloc(int32_t size, int32_t pattern) {
    uint8_t *p = malloc((size_t)size);
    if (p) memset(p, pattern, (size_t)size);
    return p;
}

EXPORT(g_check) int32_t g_check(const uint8_t *p, int32_t size, int32_t pattern) {
    for (int32_t i = 0; i < size; i++)
        if (p[i] != (uint8_t)pattern) return 0;
    return 1;
}

EXPORT(g_free) void g_free(uint8_t *p) { free(p); }

/* Payload byte i of a test message of n bytes. */
static uint8_t expected(uint32_t i, uint32_t n) { return (uint8_t)(i * 31u + n); }

/* Receive one message, copy it into a guest block while the host block is live, check both;
 * returns the payload length, -1 on a wrong byte, -2 when the inbox is empty. */
EXPORT(recv_check) int32_t recv_check(void) {
    uint8_t *msg = vudo_recv();
    if (!msg) return -2;
    uint32_t slen = *(uint32_t *)msg;
    uint32_t n = *(uint32_t *)(msg + 4 + slen);
    const uint8_t *payload = msg + 8 + slen;
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, payload, n);
    int32_t result = (int32_t)n;
    for (uint32_t i = 0; i < n; i++)
        if (payload[i] != expected(i, n) || copy[i] != expected(i, n)) { result = -1; break; }
    vudo_free_message(msg);
    free(copy);
    return result;
}
