package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The modules each store's runner uses, named with their versions in the
// output so that a table says what was measured.
var modules = map[string]string{
	"redis":     "github.com/go-redsync/redsync/v4",
	"etcd":      "go.etcd.io/etcd/client/v3",
	"consul":    "github.com/hashicorp/consul/api",
	"zookeeper": "github.com/go-zookeeper/zk",
	"postgres":  "github.com/jackc/pgx/v5",
}

var libraries = func() map[string]string {
	m := map[string]string{}
	bi, ok := debug.ReadBuildInfo()
	for store, path := range modules {
		m[store] = path
		if !ok {
			continue
		}
		for _, d := range bi.Deps {
			if d.Path == path {
				m[store] = path + "@" + d.Version
			}
		}
	}
	return m
}()

// Nearest rank, as dlock bench computes it.
func quantile(sorted []int64, q float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	r := int(q * float64(n))
	if float64(r) < q*float64(n) {
		r++
	}
	if r < 1 {
		r = 1
	}
	if r > n {
		r = n
	}
	return float64(sorted[r-1]) / 1e3
}

func figures(ns []int64, elapsed time.Duration) map[string]any {
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
	secs := elapsed.Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(len(ns)) / secs
	}
	max := 0.0
	if len(ns) > 0 {
		max = float64(ns[len(ns)-1]) / 1e3
	}
	return map[string]any{"ops": len(ns), "elapsed_s": secs, "ops_per_sec": rate,
		"samples": len(ns), "exact": true, "p50_us": quantile(ns, 0.5),
		"p99_us": quantile(ns, 0.99), "p999_us": quantile(ns, 0.999), "max_us": max}
}

func uncontended(cfg config) (map[string]any, error) {
	cs := make([]client, cfg.threads)
	defer func() {
		for _, c := range cs {
			if c != nil {
				c.close()
			}
		}
	}()
	// Connected before the clock starts: connecting is not what is measured.
	for i := range cs {
		c, err := cfg.open()
		if err != nil {
			return nil, err
		}
		cs[i] = c
	}
	samples := make([][]int64, cfg.threads)
	errs := make([]error, cfg.threads)
	busy := make([]int, cfg.threads)
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(cfg.dur)
	for i := range cs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			key := fmt.Sprintf("%sbench/%d/0", cfg.prefix, i)
			for {
				t0 := time.Now()
				h, ok, err := cs[i].tryLock(key)
				if err == nil && ok {
					err = h.unlock()
				}
				t1 := time.Now()
				if err != nil {
					errs[i] = err
					return
				}
				if ok {
					samples[i] = append(samples[i], t1.Sub(t0).Nanoseconds())
				} else {
					busy[i]++
				}
				if !t1.Before(end) {
					return
				}
			}
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []int64
	nbusy := 0
	for i := range cs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		all = append(all, samples[i]...)
		nbusy += busy[i]
	}
	r := figures(all, elapsed)
	r["busy"] = nbusy
	return r, nil
}

// Strict turns, as dlock bench's handoff phase takes them: each client
// waits for the key only after the other has held it, and the holder
// releases 1 ms after the other says it is about to wait, so every sample
// is a real handoff from a parked waiter.
const handoffHold = time.Millisecond

type turns struct {
	mu       sync.Mutex
	cv       *sync.Cond
	waiting  [2]bool
	finished [2]bool
	stop     bool
	last     int
	rel      time.Time
	samples  []int64
	err      error
}

func handoff(cfg config) (map[string]any, error) {
	var cs [2]client
	for i := range cs {
		c, err := cfg.open()
		if err != nil {
			if i == 1 {
				cs[0].close()
			}
			return nil, err
		}
		cs[i] = c
	}
	defer cs[0].close()
	defer cs[1].close()
	t := &turns{last: -1}
	t.cv = sync.NewCond(&t.mu)
	key := cfg.prefix + "bench/handoff"
	start := time.Now()
	end := start.Add(cfg.dur)
	var wg sync.WaitGroup
	for me := 0; me < 2; me++ {
		wg.Add(1)
		go func(me int) {
			defer wg.Done()
			t.run(cs[me], me, key, end)
		}(me)
	}
	wg.Wait()
	if t.err != nil {
		return nil, t.err
	}
	r := figures(t.samples, time.Since(start))
	r["hold_us"] = handoffHold.Microseconds()
	return r, nil
}

func (t *turns) fail(err error) {
	t.mu.Lock()
	if t.err == nil {
		t.err = err
	}
	t.stop = true
	t.cv.Broadcast()
	t.mu.Unlock()
}

func (t *turns) run(c client, me int, key string, end time.Time) {
	other := 1 - me
	defer func() {
		t.mu.Lock()
		t.finished[me] = true
		t.cv.Broadcast()
		t.mu.Unlock()
	}()
	for {
		t.mu.Lock()
		for t.last == me && !t.stop && !t.finished[other] {
			t.cv.Wait()
		}
		if t.stop || t.finished[other] {
			t.mu.Unlock()
			return
		}
		t.waiting[me] = true
		t.cv.Broadcast()
		t.mu.Unlock()

		h, err := c.lock(key)
		got := time.Now()
		if err != nil {
			t.fail(fmt.Errorf("client %d acquiring %s: %w", me, key, err))
			return
		}
		t.mu.Lock()
		t.waiting[me] = false
		if t.last == other {
			t.samples = append(t.samples, got.Sub(t.rel).Nanoseconds())
		}
		t.last = me
		t.cv.Broadcast()
		for !t.waiting[other] && !t.stop && !t.finished[other] {
			t.cv.Wait()
		}
		last := t.stop || t.finished[other] || !time.Now().Before(end)
		t.mu.Unlock()
		if !last {
			time.Sleep(handoffHold)
		}
		t.mu.Lock()
		t.rel = time.Now()
		if last {
			t.stop = true
		}
		t.cv.Broadcast()
		t.mu.Unlock()
		if err := h.unlock(); err != nil {
			t.fail(fmt.Errorf("client %d releasing %s: %w", me, key, err))
			return
		}
		if last {
			return
		}
	}
}

// Resident memory after a full collection, so that garbage the runtime
// has not yet handed back does not count as held.
func rssKB() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(f, "kB")), 10, 64)
			if err == nil {
				return kb
			}
		}
	}
	return -1
}

func hold(cfg config) (map[string]any, error) {
	c, err := cfg.open()
	if err != nil {
		return nil, err
	}
	defer c.close()
	hs := make([]held, 0, cfg.locks)
	ns := make([]int64, 0, cfg.locks)
	defer func() {
		for _, h := range hs {
			h.unlock() // a failure here changes no figure
		}
	}()
	before := rssKB()
	start := time.Now()
	for i := 0; i < cfg.locks; i++ {
		key := fmt.Sprintf("%sbench/hold/%d", cfg.prefix, i)
		t0 := time.Now()
		h, ok, err := c.tryLock(key)
		if err != nil {
			return nil, fmt.Errorf("acquiring %s: %w", key, err)
		}
		if !ok {
			return nil, errors.New("acquiring " + key + ": busy")
		}
		ns = append(ns, time.Since(t0).Nanoseconds())
		hs = append(hs, h)
	}
	acquire := time.Since(start)
	stop := make(chan struct{})
	lost := c.keep(hs, stop)
	after := rssKB()
	fmt.Fprintf(os.Stderr, "peers: holding %d locks for %g s\n", cfg.locks, cfg.dur.Seconds())
	t0 := time.Now()
	time.Sleep(cfg.dur)
	heldFor := time.Since(t0)
	fmt.Fprintf(os.Stderr, "peers: releasing %d locks\n", cfg.locks)
	close(stop)
	r := figures(ns, heldFor)
	r["ops"] = cfg.locks
	r["ops_per_sec"] = float64(cfg.locks) / heldFor.Seconds()
	r["locks"] = cfg.locks
	r["acquire_s"] = acquire.Seconds()
	r["rss_before_kb"] = before
	r["rss_after_kb"] = after
	r["rss_per_lock_bytes"] = float64(after-before) * 1024 / float64(cfg.locks)
	r["lost"] = lost()
	return r, nil
}
