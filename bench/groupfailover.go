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
// publishes 20 signals every 50 ms on a goroutine of its own. After 3 s
// of that (steadyFor), the first member's node is closed as a kill -9
// would leave it (no hand-off, no final progress mark, no handling after
// the kill: its lease must run out) while the stream goes on, for the
// lease and 3 s more. Measures, per lease:
//
//   - group-failover: the largest wait, from the later of its publish and
//     the kill to its first handling, of the signals published from 1 s
//     before the kill on: the dead member's share waits longest, for its
//     lease to run out and its share to move;
//   - group-steady-delay: the largest publish-to-handling delay of the
//     signals published up to 1 s before the kill, for scale;
//   - group-failover-duplicates: signals handled twice (by the dead
//     member before the kill and by another after it: what it handled
//     after its last progress mark the others had), and what the
//     survivors counted as taken over (Subscription.Taken), which bounds
//     them (loosely: it also counts every signal of the dead member's
//     share for 10 leases).
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
			Note: "after a member's kill -9 (no hand-off, no final mark): the largest wait of a signal, from the kill (or its later publish) to its first handling elsewhere"},
			Figure{System: "signalmesh", Variant: variant, Metric: "group-steady-delay", Unit: "ms", Value: ms(r.steady),
				Note: "the largest publish-to-handling delay in the 2 s of steady stream before the kill, for scale"},
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

// steadyFor is how long the stream runs before the kill.
const steadyFor = 3 * time.Second

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
	// The publisher runs on its own goroutine, so that the kill does not
	// pause the stream; it stops at stop or on its first error.
	stop := make(chan struct{})
	pubErr := make(chan error, 1)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for k := 0; ; k++ {
			batch := make([]*signalmesh.Signal, 20)
			for i := range batch {
				var err error
				if batch[i], err = signalmesh.New("bench.failover", "/bench", payload, signalmesh.WithSubject(fmt.Sprint("s", (k*20+i)%1024))); err != nil {
					pubErr <- err
					return
				}
			}
			now := time.Now()
			mu.Lock()
			for _, s := range batch {
				published[s.ID] = now
			}
			mu.Unlock()
			if err := peers[len(peers)-1].Publish(ctx, batch...); err != nil {
				pubErr <- err
				return
			}
			select {
			case <-stop:
				pubErr <- nil
				return
			case <-ctx.Done():
				pubErr <- ctx.Err()
				return
			case <-tick.C:
			}
		}
	}()
	// A steady stretch, then the kill (the stream goes on meanwhile).
	select {
	case <-time.After(steadyFor):
	case err := <-pubErr:
		return failoverResult{}, fmt.Errorf("bench: publish: %w", err)
	}
	kill := time.Now()
	if err := crashhook.Close(peers[0]); err != nil {
		close(stop)
		<-pubErr
		return failoverResult{}, err
	}
	closed[0] = true
	select {
	case <-time.After(time.Until(kill.Add(lease + 3*time.Second))):
		close(stop)
		if err := <-pubErr; err != nil {
			return failoverResult{}, fmt.Errorf("bench: publish: %w", err)
		}
	case err := <-pubErr:
		return failoverResult{}, fmt.Errorf("bench: publish: %w", err)
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
	for id, at := range published {
		h := handled[id]
		if at.Before(kill.Add(-time.Second)) {
			r.steady = max(r.steady, h.Sub(at))
			continue
		}
		from := at
		if from.Before(kill) { // published before the kill: it waited from the kill on
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
