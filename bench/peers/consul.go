package main

import (
	"time"

	"github.com/hashicorp/consul/api"
)

// The Consul API's Lock with its defaults but the session TTL: each Lock
// makes a session of its own (lock-delay 15 s), renews it at half its TTL,
// and watches its key with a blocking query while held; a Lock waiting for
// a key blocks on it up to 15 s at a time.  LockTryOnce makes tryLock one
// look and one acquire.
type consulClient struct {
	c   *api.Client
	ttl string
}

type consulHeld struct {
	l      *api.Lock
	leader <-chan struct{}
}

func openConsul(addr string, ttl time.Duration) (client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	return &consulClient{c: c, ttl: ttl.String()}, nil
}

func (c *consulClient) newLock(key string, once bool) (*api.Lock, error) {
	o := &api.LockOptions{Key: key, SessionTTL: c.ttl, LockTryOnce: once}
	if once {
		// With LockTryOnce the wait is bounded by LockWaitTime; a look
		// that finds the key free returns at once.
		o.LockWaitTime = time.Millisecond
	}
	return c.c.LockOpts(o)
}

func (c *consulClient) tryLock(key string) (held, bool, error) {
	l, err := c.newLock(key, true)
	if err != nil {
		return nil, false, err
	}
	ch, err := l.Lock(nil)
	if err != nil {
		return nil, false, err
	}
	if ch == nil {
		return nil, false, nil
	}
	return consulHeld{l, ch}, true, nil
}

func (c *consulClient) lock(key string) (held, error) {
	l, err := c.newLock(key, false)
	if err != nil {
		return nil, err
	}
	ch, err := l.Lock(nil)
	if err != nil {
		return nil, err
	}
	return consulHeld{l, ch}, nil
}

func (h consulHeld) unlock() error { return h.l.Unlock() }

// Each Lock renews its own session; a closed leader channel is a lost lock.
func (c *consulClient) keep(hs []held, stop <-chan struct{}) func() int {
	return func() int {
		lost := 0
		for _, h := range hs {
			select {
			case <-h.(consulHeld).leader:
				lost++
			default:
			}
		}
		return lost
	}
}

func (c *consulClient) close() {}
