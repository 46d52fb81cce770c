package main

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// etcd's own recipe: one Session (a lease the client keeps alive by itself,
// at a third of its TTL) and a concurrency.Mutex per key on it.  The
// session's TTL is given (its default is 60 s).
type etcdClient struct {
	cli *clientv3.Client
	s   *concurrency.Session
}

type etcdHeld struct{ m *concurrency.Mutex }

func openEtcd(addr string, ttl time.Duration) (client, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{addr},
		DialTimeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(int(ttl/time.Second)))
	if err != nil {
		cli.Close()
		return nil, err
	}
	return &etcdClient{cli: cli, s: s}, nil
}

func (c *etcdClient) tryLock(key string) (held, bool, error) {
	m := concurrency.NewMutex(c.s, key)
	err := m.TryLock(context.Background())
	if errors.Is(err, concurrency.ErrLocked) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return etcdHeld{m}, true, nil
}

func (c *etcdClient) lock(key string) (held, error) {
	m := concurrency.NewMutex(c.s, key)
	if err := m.Lock(context.Background()); err != nil {
		return nil, err
	}
	return etcdHeld{m}, nil
}

func (h etcdHeld) unlock() error { return h.m.Unlock(context.Background()) }

// The session keeps the lease alive already; a lost lease loses them all.
func (c *etcdClient) keep(hs []held, stop <-chan struct{}) func() int {
	return func() int {
		select {
		case <-c.s.Done():
			return len(hs)
		default:
			return 0
		}
	}
}

func (c *etcdClient) close() {
	c.s.Close()
	c.cli.Close()
}
