/* A client's key table: its entries by key, in hash chains, and all of
 * them in one list.  An entry is a lock handle, held, lost or being
 * acquired, or an unanswered attempt being given back or watched; a key
 * may have several (a give-back and the acquisition after it).  Every
 * entry keeps its key from this client's acquires but a watched attempt
 * between its looks.  Its callers hold c->mu, or are the last thread of a
 * client being closed. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static uint64_t key_hash(const char *k) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *k; k++) {
    h ^= (unsigned char)*k;
    h *= 1099511628211ull;
  }
  return h;
}

static bool reserves(const struct dlock_lock *l) { return !l->watch || l->inflight; }

struct dlock_lock *dlock__table_find(dlock_client *c, const char *key) {
  struct dlock_lock *l = c->table[key_hash(key) % c->table_size];
  while (l && (strcmp(l->key, key) != 0 || !reserves(l)))
    l = l->hnext;
  return l;
}

/* A give-back of an abandoned attempt shares the key with the acquisition
 * that followed it, and must not hide that one from its own thread's
 * reentrant calls. */
struct dlock_lock *dlock__table_find_for(dlock_client *c, const char *key, uint64_t self) {
  struct dlock_lock *first = NULL;
  for (struct dlock_lock *l = c->table[key_hash(key) % c->table_size]; l; l = l->hnext) {
    if (strcmp(l->key, key) != 0 || !reserves(l))
      continue;
    if (l->thread == self && l->state != 0)
      return l;
    if (!first)
      first = l;
  }
  return first;
}

static void table_insert_raw(struct dlock_lock **tab, size_t size, struct dlock_lock *l) {
  size_t i = key_hash(l->key) % size;
  l->hnext = tab[i];
  tab[i] = l;
}

static void table_grow(dlock_client *c) {
  size_t nsize = c->table_size * 2;
  struct dlock_lock **nt = calloc(nsize, sizeof *nt);
  if (!nt)
    return; /* a longer chain is fine; correctness does not depend on size */
  for (size_t i = 0; i < c->table_size; i++) {
    struct dlock_lock *l = c->table[i];
    while (l) {
      struct dlock_lock *n = l->hnext;
      table_insert_raw(nt, nsize, l);
      l = n;
    }
  }
  free(c->table);
  c->table = nt;
  c->table_size = nsize;
}

void dlock__table_add(dlock_client *c, struct dlock_lock *l) {
  if (c->table_count + 1 > c->table_size * 2)
    table_grow(c);
  table_insert_raw(c->table, c->table_size, l);
  c->table_count++;
  l->prev = NULL;
  l->next = c->head;
  if (c->head)
    c->head->prev = l;
  c->head = l;
}

void dlock__table_remove(dlock_client *c, struct dlock_lock *l) {
  struct dlock_lock **pp = &c->table[key_hash(l->key) % c->table_size];
  while (*pp && *pp != l)
    pp = &(*pp)->hnext;
  if (*pp)
    *pp = l->hnext;
  /* A watched attempt of the key may have waited for this entry to go. */
  if (c->bc.late_ms)
    for (struct dlock_lock *w = c->table[key_hash(l->key) % c->table_size]; w; w = w->hnext)
      if (w->watch && strcmp(w->key, l->key) == 0) {
        dlock__giveback_kick(c);
        break;
      }
  c->table_count--;
  if (l->prev)
    l->prev->next = l->next;
  else
    c->head = l->next;
  if (l->next)
    l->next->prev = l->prev;
}
