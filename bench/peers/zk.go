package main

import (
	"strings"
	"time"

	"github.com/go-zookeeper/zk"
)

// go-zookeeper's Lock recipe: an ephemeral sequential child under the key's
// path (made, parents and all, the first time the path is used), then
// GetChildren and a watch on the child before ours.  It has no try form:
// on a key of its own, Lock never waits.  The session (its timeout is the
// ttl) is kept by the connection's pings, a third of the timeout apart.
type zkClient struct {
	conn *zk.Conn
}

type zkHeld struct{ l *zk.Lock }

type quiet struct{}

func (quiet) Printf(string, ...any) {}

func openZk(addr string, ttl time.Duration) (client, error) {
	conn, ev, err := zk.Connect([]string{addr}, ttl, zk.WithLogger(quiet{}))
	if err != nil {
		return nil, err
	}
	// Connect returns before the session exists; the first request would
	// otherwise be timed with the handshake.
	for e := range ev {
		if e.State == zk.StateHasSession {
			break
		}
	}
	return &zkClient{conn: conn}, nil
}

func zkPath(key string) string { return "/" + strings.TrimPrefix(key, "/") }

func (c *zkClient) tryLock(key string) (held, bool, error) {
	h, err := c.lock(key)
	return h, err == nil, err
}

func (c *zkClient) lock(key string) (held, error) {
	l := zk.NewLock(c.conn, zkPath(key), zk.WorldACL(zk.PermAll))
	if err := l.Lock(); err != nil {
		return nil, err
	}
	return zkHeld{l}, nil
}

func (h zkHeld) unlock() error { return h.l.Unlock() }

// The session holds every lock; one that ended loses them all.
func (c *zkClient) keep(hs []held, stop <-chan struct{}) func() int {
	return func() int {
		if c.conn.State() != zk.StateHasSession {
			return len(hs)
		}
		return 0
	}
}

func (c *zkClient) close() { c.conn.Close() }
