package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/internal/crashhook"
	"github.com/signalmesh/signalmesh/node"
)

// GroupFailover: four peers in this process; a consumer group (Hash by
// subject, 1,024 subjects) of three members on the first three peers,
// each handler costing 1 ms, with the given lease; the last peer
// publishes 20 signals every 50 ms. A second in, the first member's node
// is closed as a kill -9 would leave it (no hand-off, no final progress
// mark: its lease must run out); the stream goes on for the lease and
// 3 s more. Measures, per lease:
//
//   - group-failover: from the kill to the first handling of the last
//     signal that waited on the dead member: the largest of (first
//     handling - the later of its publish and the kill) over the signals
//     published from 1 s before the kill on;
//   - group-steady-delay: the same largest delay before it (publish to
//     first handling, signals published up to 1 s before the kill), for
//     scale;
//   - group-failover-duplicates: signals handled twice (the dead member's
//     handlings after its last mark the others had), with what the
//     survivors counted as taken over (Subscription.Taken), which bounds
//     them.
//
// Every signal must be handled (the scenario fails otherwise).
func GroupFailover(ctx context.Context, env Env, leases []time.Duration) (*Outcome, error) {
	o := &Outcome{}
	for _, lease := range leases {
		r, err := failoverRun(ctx, env, lease)
		if err != nil {
			return o, err
		}
		variant := fmt.Sprintf("members=3,peers=4,lease=%v,rate=400/s", lease)
		o.add(Figure{System: "signalmesh", Variant: variant, Metric: "group-failover", Unit: "ms", Value: ms(r.failover),
			Note: "from a member's kill -9 (node closed leaving no hand-off) to the handling elsewhere of the last signal that waited on it"},
			Figure{System: "signalmesh", Variant: variant, Metric: "group-steady-delay", Unit: "ms", Value: ms(r.steady),
				Note: "the largest publish-to-handling delay before the kill, for scale"},
			Figure{System: "signalmesh", Variant: variant, Metric: "group-failover-duplicates", Unit: "signals", Value: float64(r.dups),
				Note: fmt.Sprintf("handled twice, of %d", r.n)},
			Figure{System: "signalmesh", Variant: variant, Metric: "group-failover-taken", Unit: "signals", Value: float64(r.taken),
				Note: "what the surviving members counted as taken over from the dead one (Subscription.Taken): the bound on the duplicates"})
	}
	return o, nil
}

type failoverResult struct {
	failover, steady time.Duration
	dups, n          int
	taken            int64
}

func failoverRun(ctx context.Context, env Env, lease time.Duration) (failoverResult, error) {
	mesh := fmt.Sprintf("failover-%d", time.Now().UnixNano())
	quiet := Quiet()
	peers := make([]*node.Node, 4)
	closed := make([]bool, 4)
	defer func() {
		for i, p := range peers {
			if p != nil && !closed[i] {
				p.Close()
			}
		}
	}()
	for i := range peers {
		nd, err := node.New(ctx, node.Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet,
			Params: node.Params{Lease: lease}})
		if err != nil {
			return failoverResult{}, err
		}
		peers[i] = nd
	}
	for i := range peers {
		for j := i + 1; j < len(peers); j++ {
			if err := peers[i].Connect(ctx, peers[j].AddrInfo()); err != nil {
				return failoverResult{}, err
			}
		}
	}
	var mu sync.Mutex
	published := map[string]time.Time{}
	handled := map[string]time.Time{} // first handling
	count := map[string]int{}
	const members = 3
	subs := make([]*node.Subscription, members)
	for i := range members {
		var err error
		subs[i], err = peers[i].Subscribe("bench.failover", func(_ context.Context, s *signalmesh.Signal) error {
			time.Sleep(time.Millisecond)
			now := time.Now()
			mu.Lock()
			if count[s.ID] == 0 {
				handled[s.ID] = now
			}
			count[s.ID]++
			mu.Unlock()
			return nil
		}, node.WithGroup("failover"), node.WithStrategy(node.Hash))
		if err != nil {
			return failoverResult{}, err
		}
	}
	if _, err := Await(ctx, time.Minute, func() bool {
		for _, p := range peers {
			if st, err := p.Status(ctx); err != nil || len(st.Groups["failover"]) != members {
				return false
			}
		}
		return true
	}); err != nil {
		return failoverResult{}, fmt.Errorf("bench: the failover group did not form: %w", err)
	}
	payload := make([]byte, env.Payload)
	start := time.Now()
	var kill time.Time
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for k := 0; ; k++ {
		if kill.IsZero() && time.Since(start) >= time.Second {
			kill = time.Now()
			if err := crashhook.Close(peers[0]); err != nil {
				return failoverResult{}, err
			}
			closed[0] = true
		}
		if !kill.IsZero() && time.Since(kill) >= lease+3*time.Second {
			break
		}
		batch := make([]*signalmesh.Signal, 20)
		for i := range batch {
			var err error
			if batch[i], err = signalmesh.New("bench.failover", "/bench", payload, signalmesh.WithSubject(fmt.Sprint("s", (k*20+i)%1024))); err != nil {
				return failoverResult{}, err
			}
		}
		now := time.Now()
		mu.Lock()
		for _, s := range batch {
			published[s.ID] = now
		}
		mu.Unlock()
		if err := peers[len(peers)-1].Publish(ctx, batch...); err != nil {
			return failoverResult{}, err
		}
		select {
		case <-ctx.Done():
			return failoverResult{}, ctx.Err()
		case <-tick.C:
		}
	}
	n := len(published)
	if _, err := Await(ctx, 3*lease+time.Minute, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for id := range published {
			if count[id] == 0 {
				return false
			}
		}
		return true
	}); err != nil {
		mu.Lock()
		defer mu.Unlock()
		return failoverResult{}, fmt.Errorf("bench: the failover group handled %d of %d signals", len(handled), n)
	}
	mu.Lock()
	defer mu.Unlock()
	r := failoverResult{n: n}
	edge := kill.Add(-time.Second)
	for id, at := range published {
		h := handled[id]
		if at.Before(edge) {
			r.steady = max(r.steady, h.Sub(at))
			continue
		}
		from := at
		if from.Before(kill) {
			from = kill
		}
		r.failover = max(r.failover, h.Sub(from))
	}
	for _, c := range count {
		if c > 1 {
			r.dups++
		}
	}
	for _, s := range subs[1:] {
		r.taken += s.Taken()
	}
	return r, nil
}
