package bench

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// SlowConsumer: a named subscription on a peer on disk whose handler
// takes per (1 ms in the standard run) gets a burst of n signals published
// on another peer in Publish calls of 100, with a queue of 1,000 (so that
// it falls behind and spills to the store). Measures the share handled
// (each once), the time until the last is handled, its ratio to the
// handler's own time (n x per: the floor), and the process's peak resident
// memory during the run (both peers are in this process).
func SlowConsumer(ctx context.Context, env Env, n int, per time.Duration) (*Outcome, error) {
	o := &Outcome{}
	mesh := fmt.Sprintf("slow-%d", time.Now().UnixNano())
	dir, err := tempDirFor("slow")
	if err != nil {
		return nil, err
	}
	defer removeAll(dir)
	quiet := Quiet()
	debug.FreeOSMemory()
	resetPeakRSS()
	pub, err := node.New(ctx, node.Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet})
	if err != nil {
		return nil, err
	}
	defer pub.Close()
	sub, err := node.New(ctx, node.Config{Mesh: mesh, DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet,
		Params: node.Params{SubscriberQueue: 1000}})
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	var mu sync.Mutex
	seen := make(map[string]int, n)
	var last time.Time
	s, err := sub.Subscribe("bench.slow", func(_ context.Context, s *signalmesh.Signal) error {
		time.Sleep(per) // the consumer's own work
		mu.Lock()
		seen[s.ID]++
		last = time.Now()
		mu.Unlock()
		return nil
	}, node.WithName("slow"))
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if err := pub.Connect(ctx, sub.AddrInfo()); err != nil {
		return nil, err
	}
	payload := make([]byte, env.Payload)
	start := time.Now()
	for sent := 0; sent < n; {
		batch := make([]*signalmesh.Signal, min(100, n-sent))
		for i := range batch {
			if batch[i], err = signalmesh.New("bench.slow", "/bench", payload); err != nil {
				return nil, err
			}
		}
		if err := pub.Publish(ctx, batch...); err != nil {
			return nil, err
		}
		sent += len(batch)
	}
	handled := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		twice := 0
		for _, c := range seen {
			if c > 1 {
				twice++
			}
		}
		return len(seen), twice
	}
	floor := time.Duration(n) * per
	_, waitErr := Await(ctx, 3*floor+time.Minute, func() bool { h, _ := handled(); return h == n })
	got, twice := handled()
	mu.Lock()
	took := last.Sub(start)
	mu.Unlock()
	variant := fmt.Sprintf("n=%d,handler=%v,queue=1000", n, per)
	st, _ := sub.Status(ctx)
	o.add(Figure{System: "signalmesh", Variant: variant, Metric: "handled", Unit: "%", Value: 100 * float64(got) / float64(n),
		Note: fmt.Sprintf("%d of %d, %d more than once; spilled %d", got, n, twice, st.Spilled)})
	if waitErr == nil {
		o.add(Figure{System: "signalmesh", Variant: variant, Metric: "time-to-last-handled", Unit: "ms", Value: ms(took),
			Note: fmt.Sprintf("%.2fx the handler's own time (%v)", float64(took)/float64(floor), floor)})
	}
	o.add(Figure{System: "signalmesh", Variant: variant, Metric: "peak-rss", Unit: "MiB", Value: float64(peakRSS()) / (1 << 20),
		Note: "this process (publisher and consumer) during the run"})
	if got != n || twice > 0 {
		return o, fmt.Errorf("slow consumer handled %d of %d (%d more than once)", got, n, twice)
	}
	return o, nil
}
