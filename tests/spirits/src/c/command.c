/* A WASI command: printf, arguments, environment, and a file under a granted directory.
 * Exit status: 0 on success, otherwise the errno of the first failing file operation. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    printf("hello from C: %d argument(s)\n", argc);
    for (int i = 1; i < argc; i++) printf("arg %d: %s\n", i, argv[i]);
    const char *who = getenv("WHO");
    printf("WHO=%s\n", who ? who : "(unset)");
    FILE *in = fopen("/data/input.txt", "r");
    if (!in) {
        int err = errno;
        fprintf(stderr, "cannot open /data/input.txt: %s\n", strerror(err));
        return err;
    }
    char line[256];
    while (fgets(line, sizeof line, in)) printf("read: %s", line);
    fclose(in);
    if (argc > 1 && strcmp(argv[1], "write") == 0) {
        FILE *out = fopen("/data/output.txt", "w");
        if (!out) {
            int err = errno;
            fprintf(stderr, "cannot write /data/output.txt: %s\n", strerror(err));
            return err;
        }
        fputs("written by a Spirit\n", out);
        fclose(out);
        printf("wrote output.txt\n");
    }
    if (argc > 1 && strcmp(argv[1], "exit3") == 0) exit(3);
    return 0;
}
