/* PostgreSQL backend: the monitor, one thread per client.  It watches every
 * connection that holds locks for the server closing it (POLLRDHUP), so a
 * terminated session is reported LOST at once, not at the next renewal,
 * and it reads the NOTIFYs of releases on the lease mode's LISTEN
 * connection, waking the waiters on that key.
 *
 * Why a thread of the backend's own: the store forces it.  A session
 * advisory lock dies with its connection, and the server says so only on
 * that connection's socket (a FATAL message, then the close); libpq has no
 * thread or callback of its own, so an idle connection's socket is read
 * only if someone polls it, and without that a lock whose session ended
 * would be called HELD until its next renewal (DLOCK_CAP_LOSS_DETECT
 * promises better).  A NOTIFY too comes only on its socket.  The core's
 * threads wait on no backend's descriptors, so neither job can move
 * there.  Giving back an advisory lock whose ttl ran out unrenewed is not
 * the monitor's: the core does it (give_back_expired, set at open), with
 * release() on its give-back thread. */
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "backends/postgres/pg.h"

/* How soon the monitor watches a newly held lock's session. */
#define MONITOR_TICK_MS 200
#define MONITOR_LINGER_MS 5000

void dlock__pg_wake_monitor(pg_client *pc) {
  uint64_t one = 1;
  if (pc->evfd >= 0 && write(pc->evfd, &one, sizeof one) < 0) {
    /* A full counter still wakes the monitor. */
  }
}

static void fire_waiters(pg_client *pc, const char *key) {
  for (pg_waiter *w = pc->waiters; w; w = w->next)
    if (!key || strcmp(w->key, key) == 0)
      w->fired = 1;
  pthread_cond_broadcast(&pc->cv);
}

static void listener_read(pg_client *pc) {
  PGconn *l = pc->listener;
  int ok = PQconsumeInput(l) && PQstatus(l) != CONNECTION_BAD;
  PGnotify *n;
  pthread_mutex_lock(&pc->mu);
  while ((n = PQnotifies(l)) != NULL) {
    fire_waiters(pc, n->extra);
    PQfreemem(n);
  }
  if (!ok) {
    /* Releases may go unseen now: every waiter re-checks, and the next one
     * to wait connects a new listener. */
    pc->listener = NULL;
    fire_waiters(pc, NULL);
  }
  pthread_mutex_unlock(&pc->mu);
  if (!ok)
    PQfinish(l);
}

/* A connection the server closed or spoke on while idle (REVENTS): if no
 * one is using it, find out now; otherwise its user does, on
 * dlock__pg_conn_put().  Bytes that come while a statement runs are its
 * reply. */
static void monitor_hup(pg_client *pc, pg_conn *cn, short revents) {
  pthread_mutex_lock(&pc->mu);
  int mine = 0;
  for (pg_conn *o = pc->conns; o; o = o->next)
    if (o == cn && !o->dead && !o->hup && (o->users == 0 || (revents & ~POLLIN))) {
      o->hup = 1;
      if (!o->users) {
        o->users = 1;
        mine = 1;
      }
    }
  pthread_mutex_unlock(&pc->mu);
  if (mine) {
    pthread_mutex_lock(&cn->mu);
    dlock__pg_conn_put(pc, cn, 0);
  }
}

/* Under pc->mu: whether a live session holds locks. */
static int holding(const pg_client *pc) {
  for (const pg_conn *o = pc->conns; o; o = o->next)
    if (o->nheld && !o->dead)
      return 1;
  return 0;
}

static void *monitor_main(void *arg) {
  pg_client *pc = arg;
  struct pollfd *pfd = NULL;
  pg_conn **who = NULL;
  size_t cap = 0;
  for (;;) {
    pthread_mutex_lock(&pc->mu);
    if (pc->stop) {
      pthread_mutex_unlock(&pc->mu);
      break;
    }
    size_t need = pc->nconns + 2;
    if (need > cap) {
      struct pollfd *np = realloc(pfd, need * sizeof *np);
      if (np)
        pfd = np;
      pg_conn **nw = realloc(who, need * sizeof *nw);
      if (nw)
        who = nw;
      if (np && nw)
        cap = need;
    }
    size_t n = 0;
    if (cap > 0) {
      pfd[n] = (struct pollfd){.fd = pc->evfd, .events = POLLIN};
      who[n++] = NULL;
      if (pc->listener) {
        pfd[n] = (struct pollfd){.fd = PQsocket(pc->listener), .events = POLLIN};
        who[n++] = NULL;
      }
      for (pg_conn *o = pc->conns; o && n < cap; o = o->next)
        if (o->nheld && !o->dead && !o->hup && o->pg) {
          /* An idle session that holds locks has nothing to say but that
           * it is ending (see session_notice, pg-conn.c); a busy one, its
           * reply. */
          pfd[n] = (struct pollfd){.fd = o->fd,
                                   .events = (short)(o->users ? POLLRDHUP : POLLRDHUP | POLLIN)};
          who[n++] = o;
        }
    }
    int64_t now = dlock_backend_now_ns();
    int active = holding(pc) || now - pc->last_held_ns < MONITOR_LINGER_MS * 1000000LL;
    pc->mon_sleeping = !active;
    int64_t wake_ns = active ? now + MONITOR_TICK_MS * 1000000LL : -1;
    int has_listener = pc->listener != NULL;
    pthread_mutex_unlock(&pc->mu);
    if (cap == 0) {
      /* Out of memory: the renewals still find dead sessions. */
      struct timespec ts = {0, 100 * 1000000};
      nanosleep(&ts, NULL);
      continue;
    }
    int64_t ms = ms_left(wake_ns);
    int r = poll(pfd, n, ms < 0 ? -1 : ms > 60000 ? 60000 : (int)ms);
    if (r <= 0)
      continue;
    if (pfd[0].revents & POLLIN) {
      uint64_t v;
      if (read(pc->evfd, &v, sizeof v) < 0) {
        /* EAGAIN: already drained */
      }
    }
    size_t i = 1;
    if (has_listener) {
      if (pfd[1].revents)
        listener_read(pc);
      i = 2;
    }
    for (; i < n; i++)
      if (pfd[i].revents)
        monitor_hup(pc, who[i], pfd[i].revents);
  }
  free(pfd);
  free(who);
  return NULL;
}

int dlock__pg_monitor_start(pg_client *pc) {
  if (pthread_create(&pc->mon, NULL, monitor_main, pc) != 0)
    return dlock_seterr(DLOCK_ENOMEM, "postgres: cannot start the monitor thread");
  pc->mon_started = 1;
  return 0;
}

void dlock__pg_monitor_stop(pg_client *pc) {
  if (!pc->mon_started)
    return;
  pthread_mutex_lock(&pc->mu);
  pc->stop = 1;
  pthread_mutex_unlock(&pc->mu);
  dlock__pg_wake_monitor(pc);
  pthread_join(pc->mon, NULL);
}
