/*
 * dlock: a model of one lock key shared by two clients, a store with
 * leases, an unreliable network and a fenced resource.
 *
 * Time is discrete. Each step of the Clock process is one tick of real
 * time. The store's clock is taken as real time (only the rate of each
 * client's clock relative to the store's matters: a client's HELD answer is
 * compared with the store's lease, and a second client can only start
 * believing after the store has granted it). A client's monotonic clock may
 * run slow: it misses at most one tick in any DRIFT_K consecutive ticks
 * (DRIFT_K = 0: no drift). Running fast is never unsafe and is not modelled.
 *
 * Every timer is a countdown, so the state space is finite without a time
 * horizon:
 *   lease          store ticks left on the holder's lease (0: expired, free)
 *   valid[c]       client c's validity left, in c's clock ticks
 *   pend[c]        validity an answer to c's request in flight would give:
 *                  TTL - MARGIN when the request was sent, counted down since
 *
 * The library's rule: on a grant or a renewal the deadline is
 *   send time of that request + ttl - margin   (valid[c] = pend[c])
 * and dlock_lock_state() says HELD only while valid[c] > 0. The store
 * expires the lease at its receipt time + ttl.
 *
 * Process pauses are free in this model: any process may be left unscheduled
 * while the Clock ticks. A holder's write is two steps: the HELD check puts
 * the write (with its token) on the wire, and the resource takes it whenever
 * it likes, so a pause between the check and the write, or a slow network,
 * are both one delayed delivery.
 *
 * Build-time switches (spin -D...):
 *   FENCING               the resource rejects a token below the highest seen
 *   DEADLINE_FROM_REPLY   mutant: deadline = reply receipt + ttl - margin
 *   MARGIN=n              margin in ticks (default 1; 0 = no margin)
 *   DRIFT_K=n             clock drift bound (default 4; 0 = none)
 *   DRIFT_UNBOUNDED       mutant: a client's clock may stop (system suspend)
 *   STORE_JUMP            mutant: the store's clock may step forward once
 *   FENCE_RESET           mutant: the store may restart once, forgetting
 *                         its lock and its fencing counter
 *   NO_WRITES             no tokens, writes or resource (so no grant budget):
 *                         for the properties of the HELD answers alone
 *   NO_RELEASE            holders never release: the lock changes hands
 *                         only through expiry
 *   LIVE                  liveness variant (implies NO_WRITES): a bounded
 *                         number of losses, only client 0 crashes, and only
 *                         while it believes HELD
 *   NO_EXPIRY             mutant: the store never expires a lease
 */

#define N 2

#if defined(LIVE) && !defined(NO_WRITES)
#define NO_WRITES
#endif

#ifndef TTL
#define TTL 4
#endif
#ifndef MARGIN
#define MARGIN 1
#endif
#ifndef DRIFT_K
#define DRIFT_K 4
#endif
#define V (TTL - MARGIN)

#ifndef MAXGRANT
#define MAXGRANT 3        /* grants in one run: bounds tokens (safety runs) */
#endif
#ifndef MAXCRASH
#define MAXCRASH 1
#endif
#ifndef MAXLOSS
#define MAXLOSS 1         /* LIVE only; the safety runs lose without bound */
#endif
#ifndef JUMP
#define JUMP 2            /* STORE_JUMP: ticks the store's clock steps */
#endif

/* client states */
mtype = { IDLE, WACQ, HOLD, WREN, DEAD };
/* requests and replies; NONE = empty slot */
mtype = { NONE, ACQ, RENEW, REL, GRANT, BUSY, RENEWED, REFUSED };

/* store */
byte owner;               /* 0 = free, c+1 = client c */
byte lease;
byte fence;               /* last token issued */
byte grants;              /* ghost: acquisition sequence number */

/* network: one request and one reply slot per client (a connection) */
mtype req[N] = NONE;
mtype rep[N] = NONE;
byte rtok[N];             /* token in a GRANT */
byte rgen[N];             /* ghost: which acquisition that GRANT is */

/* clients */
mtype cst[N] = IDLE;
byte valid[N];
byte pend[N];
byte tok[N];
byte gen[N];              /* ghost */
byte gap[N];              /* ticks since the client's clock last missed one */

/* writes on the way to the resource: token and ghost acquisition number */
byte wtok[N];             /* 0 = none (tokens start at 1) */
byte wgen[N];

/* resource */
byte seen;                /* highest token seen */
byte hig;                 /* ghost: newest acquisition whose write was accepted */

byte crashes, losses, restarts, jumps;

#define BEL(c)   ((cst[c] == HOLD || cst[c] == WREN) && valid[c] > 0)
#define LIVE_AT_STORE(c) (owner == (c) + 1 && lease > 0)

/* properties over the believed-HELD answers (safety runs, -N name) */
ltl mutex { [] !(BEL(0) && BEL(1)) }
ltl lease_covers { [] ((!BEL(0) || LIVE_AT_STORE(0)) && (!BEL(1) || LIVE_AT_STORE(1))) }
/* after client 0 crashes, the store grants the lock to client 1 */
ltl handover { [] ((cst[0] == DEAD) -> <> (owner == 2)) }

/* ------------------------------------------------------------ clock */

inline client_tick(c) {
  if
#ifdef DRIFT_UNBOUNDED
  :: cst[c] != DEAD -> skip                       /* clock stopped */
#else
  :: DRIFT_K > 0 && gap[c] == DRIFT_K - 1 -> gap[c] = 0  /* missed tick */
#endif
  :: true ->
     if :: valid[c] > 0 -> valid[c]-- :: else fi;
     if :: pend[c] > 0 -> pend[c]-- :: else fi;
     if :: DRIFT_K > 0 && gap[c] < DRIFT_K - 1 -> gap[c]++ :: else fi
  fi
}

active proctype Clock() {
  do
  :: atomic {
#ifndef NO_EXPIRY
       if
       :: lease > 0 ->
          lease--;
          if
          :: lease == 0 -> printf("EXPIRE client=%d\n", owner - 1); owner = 0
          :: else
          fi
       :: else
       fi;
#endif
       client_tick(0);
       client_tick(1)
     }
#ifdef STORE_JUMP
  :: atomic {
       jumps == 0 && lease > 0 ->
       jumps++;
       if :: lease > JUMP -> lease = lease - JUMP
          :: else -> lease = 0; owner = 0
       fi
     }
#endif
  od
}

/* ------------------------------------------------------------ store */

inline serve(c) {
  atomic {
    req[c] != NONE && rep[c] == NONE ->
    if
    :: req[c] == ACQ ->
       if
#ifdef NO_WRITES
       :: owner == 0 ->
          owner = c + 1; lease = TTL; rep[c] = GRANT
#else
       :: owner == 0 && grants < MAXGRANT ->
          owner = c + 1; lease = TTL;
          fence++; grants++;
          rep[c] = GRANT; rtok[c] = fence; rgen[c] = grants;
          printf("GRANT client=%d token=%d\n", c, fence)
#endif
       :: else -> rep[c] = BUSY
       fi
    :: req[c] == RENEW ->             /* compare-and-extend */
       if
       :: owner == c + 1 -> lease = TTL; rep[c] = RENEWED
       :: else -> rep[c] = REFUSED
       fi
    :: req[c] == REL ->               /* compare-and-delete, no answer */
       if
       :: owner == c + 1 -> owner = 0; lease = 0
       :: else
       fi
    fi;
    req[c] = NONE
  }
}

#ifdef LIVE
#define CAN_LOSE (losses < MAXLOSS)
#else
#define CAN_LOSE true
#endif

inline lose(slot) {
  atomic { slot != NONE && CAN_LOSE -> slot = NONE
#ifdef LIVE
           ; losses++
#endif
  }
}

active proctype Store() {
  do
  :: serve(0)
  :: serve(1)
  /* the network drops a request or a reply */
  :: lose(req[0])
  :: lose(req[1])
  :: lose(rep[0])
  :: lose(rep[1])
#ifdef FENCE_RESET
  :: atomic { restarts == 0 -> restarts++; owner = 0; lease = 0; fence = 0 }
#endif
  od
}

/* ------------------------------------------------------------ resource */

inline deliver(c) {
  atomic {
    wtok[c] != 0 ->
#ifdef FENCING
    if
    :: wtok[c] >= seen ->
#endif
       /* accepted: a stale write is one from an acquisition older than
        * one whose write was already accepted */
       if
       :: wgen[c] < hig ->
          printf("STALE-WRITE client=%d token=%d acq=%d after acq=%d writer_lease_live=%d\n",
                 c, wtok[c], wgen[c], hig, (owner == c + 1 && lease > 0 && gen[c] == wgen[c]))
       :: else
       fi;
       printf("ACCEPT client=%d token=%d\n", c, wtok[c]);
       assert(wgen[c] >= hig);
       hig = wgen[c]
#ifdef FENCING
    :: else -> printf("REJECT client=%d token=%d\n", c, wtok[c])
    fi;
    if :: wtok[c] > seen -> seen = wtok[c] :: else fi
#endif
    ;
    wtok[c] = 0; wgen[c] = 0
  }
}

#ifndef NO_WRITES
active proctype Resource() {
  do
  :: deliver(0)
  :: deliver(1)
  od
}
#endif

/* ------------------------------------------------------------ clients */

#ifdef DEADLINE_FROM_REPLY
#define DEADLINE V
#else
#define DEADLINE pend[c]
#endif

#ifdef NO_WRITES
#define FIRST_CLIENT 2
#else
#define FIRST_CLIENT 3
#endif

#ifdef LIVE
#define CAN_CRASH (c == 0 && crashes < MAXCRASH && BEL(c))
#else
#define CAN_CRASH (crashes < MAXCRASH)
#endif

active [N] proctype Client() {
  byte c = _pid - FIRST_CLIENT;       /* Clock, Store (and Resource) first */
  assert(c < N);
  do
  /* acquire: the send time is now */
  :: atomic { cst[c] == IDLE && req[c] == NONE && rep[c] == NONE ->
              req[c] = ACQ; pend[c] = V; cst[c] = WACQ }
  :: atomic { cst[c] == WACQ && rep[c] == GRANT ->
              if
#ifdef DEADLINE_FROM_REPLY
              :: true ->
#else
              :: pend[c] > 0 ->       /* still valid on arrival */
#endif
                 valid[c] = DEADLINE; tok[c] = rtok[c]; gen[c] = rgen[c];
                 cst[c] = HOLD
              :: else -> cst[c] = IDLE   /* too late: left to expire */
              fi;
              rep[c] = NONE; rtok[c] = 0; rgen[c] = 0; pend[c] = 0 }
  :: atomic { cst[c] == WACQ && rep[c] == BUSY ->
              rep[c] = NONE; pend[c] = 0; cst[c] = IDLE }
  /* request timeout: the request or its answer was lost */
  :: atomic { cst[c] == WACQ && req[c] == NONE && rep[c] == NONE ->
              pend[c] = 0; cst[c] = IDLE }

#ifndef NO_WRITES
  /* HELD check, then the write carrying the token goes out */
  :: atomic { BEL(c) && wtok[c] == 0 -> wtok[c] = tok[c]; wgen[c] = gen[c];
              printf("HELD-CHECK client=%d token=%d\n", c, tok[c]) }
#endif

  /* renew: the send time is now */
  :: atomic { cst[c] == HOLD && valid[c] > 0 && req[c] == NONE && rep[c] == NONE ->
              req[c] = RENEW; pend[c] = V; cst[c] = WREN }
  :: atomic { cst[c] == WREN && rep[c] == RENEWED ->
              valid[c] = DEADLINE;
              rep[c] = NONE; pend[c] = 0; cst[c] = HOLD }
  :: atomic { cst[c] == WREN && rep[c] == REFUSED ->
              rep[c] = NONE; pend[c] = 0; valid[c] = 0; cst[c] = IDLE }
  :: atomic { cst[c] == WREN && req[c] == NONE && rep[c] == NONE ->
              pend[c] = 0; cst[c] = HOLD }   /* no answer: no extension */

  /* the deadline passed: LOST */
  :: atomic { cst[c] == HOLD && valid[c] == 0 -> tok[c] = 0; gen[c] = 0; cst[c] = IDLE }
#ifndef NO_RELEASE
  /* release: HELD ends before the request goes out */
  :: atomic { cst[c] == HOLD && valid[c] > 0 && req[c] == NONE ->
              valid[c] = 0; tok[c] = 0; gen[c] = 0;
              req[c] = REL; cst[c] = IDLE }
#endif

  /* crash: the process is gone; what it sent is still on the wire */
  :: atomic { cst[c] != DEAD && CAN_CRASH ->
              crashes++; cst[c] = DEAD;
              valid[c] = 0; pend[c] = 0; tok[c] = 0; gen[c] = 0; gap[c] = 0 }
  od
}
