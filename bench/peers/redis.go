package main

import (
	"errors"
	"sync"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	goredislib "github.com/redis/go-redis/v9"
)

// redsync on one Redis (a quorum of one), go-redis v9 underneath.  Only
// the expiry is set; tries (32), the retry delay (50-250 ms at random) and
// the drift factor are its defaults.  It has no renewal of its own: a
// holder calls Extend, which keep does every third of the expiry.
type redisClient struct {
	rdb *goredislib.Client
	rs  *redsync.Redsync
	ttl time.Duration
}

type redisHeld struct{ m *redsync.Mutex }

func openRedis(addr string, ttl time.Duration) (client, error) {
	rdb := goredislib.NewClient(&goredislib.Options{Addr: addr})
	return &redisClient{rdb: rdb, rs: redsync.New(goredis.NewPool(rdb)), ttl: ttl}, nil
}

func (c *redisClient) tryLock(key string) (held, bool, error) {
	m := c.rs.NewMutex(key, redsync.WithExpiry(c.ttl))
	err := m.TryLock()
	var taken *redsync.ErrTaken
	if errors.Is(err, redsync.ErrFailed) || errors.As(err, &taken) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return redisHeld{m}, true, nil
}

func (c *redisClient) lock(key string) (held, error) {
	m := c.rs.NewMutex(key, redsync.WithExpiry(c.ttl))
	if err := m.Lock(); err != nil {
		return nil, err
	}
	return redisHeld{m}, nil
}

func (h redisHeld) unlock() error {
	_, err := h.m.Unlock()
	return err
}

func (c *redisClient) keep(hs []held, stop <-chan struct{}) func() int {
	var mu sync.Mutex
	lost := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(c.ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			for _, h := range hs {
				if ok, err := h.(redisHeld).m.Extend(); !ok || err != nil {
					mu.Lock()
					lost++
					mu.Unlock()
				}
			}
		}
	}()
	return func() int {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return lost
	}
}

func (c *redisClient) close() { c.rdb.Close() }
