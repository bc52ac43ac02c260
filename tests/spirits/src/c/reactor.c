/* A WASI reactor whose _initialize must run before its exports: it prints through WASI
 * stdout from a constructor, and counts how often it was initialised. */
#include <stdio.h>
#include <stdint.h>

static int32_t init_count;
static int32_t table[4];

__attribute__((constructor)) static void setup(void) {
    init_count++;
    for (int i = 0; i < 4; i++) table[i] = (i + 1) * 10;
    printf("reactor ready\n");
    fflush(stdout);
}

__attribute__((export_name("init_count"))) int32_t get_init_count(void) { return init_count; }
__attribute__((export_name("lookup"))) int32_t lookup(int32_t i) { return table[i & 3]; }
