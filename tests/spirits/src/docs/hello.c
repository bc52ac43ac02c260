#include <stdio.h>

int main(void) {
    FILE *f = fopen("/data/name.txt", "r");
    if (!f) {
        perror("/data/name.txt");
        return 1;
    }
    char name[64] = {0};
    fgets(name, sizeof name, f);
    printf("Hello, %s", name);
    return 0;
}
