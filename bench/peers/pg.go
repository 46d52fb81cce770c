package main

import (
	"context"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Session advisory locks on one pgx connection with its default statement
// cache (prepared on first use): pg_try_advisory_lock / pg_advisory_lock
// and pg_advisory_unlock on a 64-bit hash of the key.  The locks last as
// long as the connection: nothing is renewed.
type pgClient struct {
	conn *pgx.Conn
}

type pgHeld struct {
	c *pgClient
	k int64
}

func openPg(url string, ttl time.Duration) (client, error) {
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		return nil, err
	}
	return &pgClient{conn: conn}, nil
}

func pgKey(key string) int64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return int64(h.Sum64())
}

func (c *pgClient) tryLock(key string) (held, bool, error) {
	k := pgKey(key)
	var ok bool
	err := c.conn.QueryRow(context.Background(), "SELECT pg_try_advisory_lock($1)", k).Scan(&ok)
	if err != nil || !ok {
		return nil, false, err
	}
	return pgHeld{c, k}, true, nil
}

func (c *pgClient) lock(key string) (held, error) {
	k := pgKey(key)
	_, err := c.conn.Exec(context.Background(), "SELECT pg_advisory_lock($1)", k)
	if err != nil {
		return nil, err
	}
	return pgHeld{c, k}, nil
}

func (h pgHeld) unlock() error {
	_, err := h.c.conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", h.k)
	return err
}

func (c *pgClient) keep(hs []held, stop <-chan struct{}) func() int {
	return func() int { return 0 }
}

func (c *pgClient) close() { c.conn.Close(context.Background()) }
