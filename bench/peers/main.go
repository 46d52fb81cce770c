// Command peers runs the phases of `dlock bench` through another lock
// library, so that scripts/bench peers can set dlock beside it:
//
//	peers -store redis|etcd|consul|zookeeper|postgres -addr ADDR|-addr-env NAME \
//	      -phase uncontended|handoff|hold [-threads N] [-seconds S] \
//	      [-locks H] [-ttl D]
//
// -addr-env names an environment variable holding the address, so that a
// connection URL with a password in it never shows in the process list.
// It prints one JSON object shaped like `dlock bench --json`: the phase's
// name holding ops, elapsed_s, ops_per_sec and p50/p99/p99.9/max in µs,
// and for hold the acquires' time, the resident memory per held lock and
// how many locks were lost while held.  Each store's library is used the
// way its documentation shows, with its defaults except the lease length
// (-ttl), which every runner is given alike.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"
)

// A store's library behind one face.  tryLock takes a free key or reports
// it busy without waiting; lock waits the library's own way.
type client interface {
	tryLock(key string) (held, bool, error)
	lock(key string) (held, error)
	// keep starts whatever the library needs done to keep h past its
	// lease, when the library does not do it by itself.
	keep(hs []held, stop <-chan struct{}) (lost func() int)
	close()
}

type held interface {
	unlock() error
}

type opener func(addr string, ttl time.Duration) (client, error)

var stores = map[string]opener{
	"redis":     openRedis,
	"etcd":      openEtcd,
	"consul":    openConsul,
	"zookeeper": openZk,
	"postgres":  openPg,
}

type config struct {
	open    func() (client, error)
	threads int
	dur     time.Duration
	locks   int
	prefix  string
}

func main() {
	store := flag.String("store", "", "redis, etcd, consul, zookeeper or postgres")
	addr := flag.String("addr", "", "the store's address (postgres: a connection URL)")
	addrEnv := flag.String("addr-env", "", "an environment variable holding -addr")
	phase := flag.String("phase", "uncontended", "uncontended, handoff or hold")
	threads := flag.Int("threads", 1, "threads of the uncontended phase")
	secs := flag.Float64("seconds", 5, "length of the phase")
	locks := flag.Int("locks", 10000, "locks held in the hold phase")
	ttl := flag.Duration("ttl", 10*time.Second, "lease length")
	flag.Parse()
	if *addrEnv != "" {
		*addr = os.Getenv(*addrEnv)
	}
	op, ok := stores[*store]
	if !ok || *addr == "" || *threads < 1 || *secs <= 0 || *locks < 1 {
		flag.Usage()
		os.Exit(64)
	}
	cfg := config{
		open:    func() (client, error) { return op(*addr, *ttl) },
		threads: *threads,
		dur:     time.Duration(*secs * float64(time.Second)),
		locks:   *locks,
		// Keys of their own, so that a run never meets dlock's leftovers.
		prefix: fmt.Sprintf("peers/%d/", os.Getpid()),
	}
	var res map[string]any
	var err error
	switch *phase {
	case "uncontended":
		res, err = uncontended(cfg)
	case "handoff":
		res, err = handoff(cfg)
	case "hold":
		res, err = hold(cfg)
	default:
		flag.Usage()
		os.Exit(64)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "peers: %s %s: %v\n", *store, *phase, err)
		os.Exit(1)
	}
	out := map[string]any{"store": *store, "library": libraries[*store], "threads": *threads,
		"seconds": *secs, *phase: res}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
