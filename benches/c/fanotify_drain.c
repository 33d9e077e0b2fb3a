/* Baseline for benches/src/bin/fanotify_drain.rs: a raw fanotify read loop in the same FID
 * mode as triggerd's Watcher (FAN_REPORT_DFID_NAME | FAN_REPORT_FID), marking the same
 * directory for close_write on children, with the same read buffer size. It walks records
 * with FAN_EVENT_NEXT and counts them; no path is resolved.
 * Protocol: prints "ready", then for each line on stdin drains the queue until EAGAIN and
 * prints "<records> <nanoseconds>". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/fanotify.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s DIR BUFFER_BYTES\n", argv[0]);
        return 2;
    }
    size_t len = (size_t)atol(argv[2]);
    char *buf = aligned_alloc(8, len);
    int fd = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME |
                               FAN_REPORT_FID,
                           O_RDONLY | O_LARGEFILE);
    if (fd < 0 || !buf) {
        perror("fanotify_init");
        return 1;
    }
    if (fanotify_mark(fd, FAN_MARK_ADD, FAN_CLOSE_WRITE | FAN_EVENT_ON_CHILD, AT_FDCWD, argv[1])) {
        perror("fanotify_mark");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        struct timespec t0, t1;
        long records = 0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
            ssize_t n = read(fd, buf, len);
            if (n < 0) {
                if (errno == EAGAIN) break;
                if (errno == EINTR) continue;
                perror("read");
                return 1;
            }
            struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
            while (FAN_EVENT_OK(m, n)) {
                records++;
                m = FAN_EVENT_NEXT(m, n);
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long long ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
        printf("%ld %lld\n", records, ns);
        fflush(stdout);
    }
    return 0;
}
