/*
 * triggerd.h - publish messages into a triggerd shared-memory channel.
 *
 * A channel is declared in /etc/triggerd.conf ([[channel]] name = "...") and exists as
 * /dev/shm/triggerd.<name> while triggerd runs: a Unix socket whose owner, group and mode decide
 * who may publish. Connecting hands the publisher the channel's memory (a memfd sealed against
 * resizing). Each message becomes one event whose payload is the message bytes.
 *
 * Link with libtriggerd_ipc.a (plus -lpthread -ldl -lm) or libtriggerd_ipc.so.
 *
 * A publisher handle holds one of the channel's lanes until freed; use it from one thread at a
 * time (give each thread its own handle) and not across fork().
 */
#ifndef TRIGGERD_H
#define TRIGGERD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes: 0 on success, negative on failure. */
#define TRIGGERD_OK 0
#define TRIGGERD_EWOULDBLOCK (-1) /* channel full; nothing was written, retry later */
#define TRIGGERD_ETOOLARGE (-2)   /* message longer than the channel's maximum (>= 64 KiB) */
#define TRIGGERD_ENOCHANNEL (-3)  /* no such channel (triggerd not running, or not configured) */
#define TRIGGERD_EACCES (-4)      /* the channel's owner/group/mode exclude this user */
#define TRIGGERD_EINVAL (-5)      /* invalid argument (null pointer, bad channel name) */
#define TRIGGERD_ECORRUPT (-6)    /* the channel's region is corrupted or incompatible */
#define TRIGGERD_ENOLANE (-7)     /* every publisher lane of the channel is in use */
#define TRIGGERD_EOS (-8)         /* a system call failed */
#define TRIGGERD_ECLOSED (-9)     /* triggerd removed the channel; free the handle, reconnect */

typedef struct TriggerdPublisher triggerd_publisher;

/* Connects to the channel `channel`; on success stores a handle in *out. */
int triggerd_publisher_connect(const char *channel, triggerd_publisher **out);

/* Publishes `len` bytes; TRIGGERD_EWOULDBLOCK at once if the channel is full. */
int triggerd_publish(triggerd_publisher *publisher, const void *data, size_t len);

/* Like triggerd_publish, but waits up to timeout_ms milliseconds for space. */
int triggerd_publish_timeout(triggerd_publisher *publisher, const void *data, size_t len,
                             uint64_t timeout_ms);

/* Releases the handle's lane and frees it; NULL is ignored. */
void triggerd_publisher_free(triggerd_publisher *publisher);

/* A static description of a return code. */
const char *triggerd_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif /* TRIGGERD_H */
