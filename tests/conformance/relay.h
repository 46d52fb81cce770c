/* A TCP relay to put between a client under test and its store, for
 * network faults without touching either: replies that come late, a
 * network that swallows everything (a partition, as TCP sees it), cut
 * connections.  It runs on its own thread with a poll() loop and listens on
 * an ephemeral port of 127.0.0.1; point the client's URL at that port. */
#ifndef DLOCK_CONF_RELAY_H
#define DLOCK_CONF_RELAY_H

#include <stdint.h>

typedef struct conf_relay conf_relay;

enum conf_relay_mode {
  /* Forward both ways, each direction after its delay (0 = at once). */
  CONF_RELAY_PASS,
  /* Discard whatever either side sends, and what is still waiting out a
   * delay; connections stay open and new ones are accepted. */
  CONF_RELAY_DROP,
  /* Close every connection now, and each new one as soon as it is
   * accepted. */
  CONF_RELAY_CUT,
};

/* A relay to HOST:PORT (numeric or a name).  NULL, with the reason on
 * stderr, when it cannot listen or start its thread. */
conf_relay *conf_relay_start(const char *host, int port);
/* The port it listens on. */
int conf_relay_port(const conf_relay *r);
/* Switch to MODE, bytes towards the store held TO_STORE_MS and bytes
 * towards the client TO_CLIENT_MS before they are passed on (PASS only).
 * A delay of -1 discards that direction (with what it still held) while
 * the other goes on: requests lost while late replies still arrive.
 * Returns 0 once the relay thread has applied it (bytes read after that
 * follow the new rule), -1 on failure. */
int conf_relay_set(conf_relay *r, enum conf_relay_mode mode, int64_t to_store_ms,
                   int64_t to_client_ms);
/* Stop the thread and close every socket. */
void conf_relay_stop(conf_relay *r);

#endif
