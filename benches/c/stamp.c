/* stamp LOG NAME: appends "NAME <realtime ns>" to LOG, as early as a command can. The action
 * both triggerd and incron run in the latency benchmark, so their figures compare. */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (argc < 3) return 2;
    char line[4096];
    int n = snprintf(line, sizeof line, "%s %lld\n", argv[2],
                     (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    if (n <= 0 || n >= (int)sizeof line) return 3;
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0) return 4;
    ssize_t w = write(fd, line, (size_t)n);
    close(fd);
    return w == n ? 0 : 5;
}
