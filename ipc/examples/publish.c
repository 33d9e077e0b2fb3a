/*
 * publish.c - publish messages into a triggerd channel from C.
 *
 *   cc -I ipc/include ipc/examples/publish.c target/release/libtriggerd_ipc.a \
 *      -lpthread -ldl -lm -o publish
 *   ./publish CHANNEL MESSAGE...      publishes each MESSAGE as one event
 *   ./publish CHANNEL                 publishes each line of stdin as one event
 */
#include <stdio.h>
#include <string.h>

#include "triggerd.h"

static int publish_one(triggerd_publisher *publisher, const char *data, size_t len) {
    /* Wait up to a second for space if the daemon is behind. */
    int rc = triggerd_publish_timeout(publisher, data, len, 1000);
    if (rc != TRIGGERD_OK) {
        fprintf(stderr, "publish: %s\n", triggerd_strerror(rc));
    }
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CHANNEL [MESSAGE...]\n", argv[0]);
        return 2;
    }
    triggerd_publisher *publisher = NULL;
    int rc = triggerd_publisher_connect(argv[1], &publisher);
    if (rc != TRIGGERD_OK) {
        fprintf(stderr, "connect to channel %s: %s\n", argv[1], triggerd_strerror(rc));
        return 1;
    }
    if (argc > 2) {
        for (int i = 2; i < argc && rc == TRIGGERD_OK; i++) {
            rc = publish_one(publisher, argv[i], strlen(argv[i]));
        }
    } else {
        char line[4096];
        while (rc == TRIGGERD_OK && fgets(line, sizeof line, stdin) != NULL) {
            size_t len = strcspn(line, "\n");
            rc = publish_one(publisher, line, len);
        }
    }
    triggerd_publisher_free(publisher);
    return rc == TRIGGERD_OK ? 0 : 1;
}
