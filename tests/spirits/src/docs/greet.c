#include <stdint.h>
#include <stdlib.h>
#include <string.h>

__attribute__((import_module("vudo"), import_name("vudo_println")))
void vudo_println(const char *ptr, int32_t len);

/* name: a length-prefixed string [len u32][UTF-8 bytes], as the host writes them. */
__attribute__((export_name("greet")))
void greet(const uint8_t *name) {
    uint32_t len;
    memcpy(&len, name, 4);
    char *text = malloc(len + 8);
    memcpy(text, "Hello, ", 7);
    memcpy(text + 7, name + 4, len);
    text[7 + len] = '!';
    vudo_println(text, (int32_t)len + 8);
    free(text);
}
