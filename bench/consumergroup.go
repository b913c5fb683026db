package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// ConsumerGroup: four peers in this process; a consumer group (Hash by
// subject, 1,024 subjects: a member's share is even within a few %) of each size in sizes, its members on the first
// peers, each handler costing per; n signals published on the last peer
// in Publish calls of 100. Measures, per size, the group's throughput
// (signals handled per second, from the first handling to the last), its speed-up over one member, that each signal was handled
// once, and the bytes each peer wrote renewing its leases in the
// subscription set, per minute.
func ConsumerGroup(ctx context.Context, env Env, sizes []int, n int, per time.Duration) (*Outcome, error) {
	o := &Outcome{}
	var base float64
	for _, size := range sizes {
		r, err := groupRun(ctx, env, size, n, per)
		if err != nil {
			return o, err
		}
		rate, leaseRate := r.rate, r.lease
		variant := fmt.Sprintf("members=%d,peers=4,n=%d,handler=%v", size, n, per)
		note := fmt.Sprintf("floor %.0f/s (members / handler cost)", float64(size)/per.Seconds())
		o.add(Figure{System: "signalmesh", Variant: variant, Metric: "group-throughput", Unit: "signals/s", Value: rate, Note: note})
		if base == 0 {
			base = rate
		}
		o.add(Figure{System: "signalmesh", Variant: variant, Metric: "group-speedup", Unit: "x", Value: rate / base,
			Note: fmt.Sprintf("over %d member(s)", sizes[0])},
			Figure{System: "signalmesh", Variant: variant, Metric: "group-largest-share", Unit: "%", Value: r.largest,
				Note: fmt.Sprintf("of the signals, handled by the busiest member (an even share: %.0f %%)", 100/float64(size))})
		o.add(Figure{System: "signalmesh", Variant: variant, Metric: "lease-crdt-bytes-per-peer", Unit: "B/min", Value: leaseRate.crdt,
			Note: "bytes of subscription set entries a peer writes to the set's CRDT renewing its leases (unchanged entries every 10 leases), at the default lease of 10 s"},
			Figure{System: "signalmesh", Variant: variant, Metric: "lease-gossip-bytes-per-peer", Unit: "B/min", Value: leaseRate.gossip,
				Note: "bytes of entries a peer gossips renewing its leases (its record and its members, every 3.3 s at the default lease), before GossipSub's framing and fan-out"})
	}
	return o, nil
}

// leaseCost is what a peer spends on leases, bytes a minute.
type leaseCost struct{ crdt, gossip float64 }

// groupResult is one size's run: throughput, lease bytes, and the share
// of the signals the busiest member handled (%).
type groupResult struct {
	rate    float64
	lease   leaseCost
	largest float64
}

// leaseDefault is node.Params.Lease's default.
const leaseDefault = 10 * time.Second

// groupRun runs one size and returns its throughput and lease bytes per
// peer per minute.
func groupRun(ctx context.Context, env Env, size, n int, per time.Duration) (groupResult, error) {
	mesh := fmt.Sprintf("group-%d", time.Now().UnixNano())
	quiet := Quiet()
	peers := make([]*node.Node, 4)
	for i := range peers {
		nd, err := node.New(ctx, node.Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet})
		if err != nil {
			return groupResult{}, err
		}
		defer nd.Close()
		peers[i] = nd
	}
	for i := range peers {
		for j := i + 1; j < len(peers); j++ {
			if err := peers[i].Connect(ctx, peers[j].AddrInfo()); err != nil {
				return groupResult{}, err
			}
		}
	}
	var mu sync.Mutex
	seen := make(map[string]int, n)
	byMember := make([]int, size)
	var first, last time.Time
	for i := range size {
		_, err := peers[i].Subscribe("bench.group", func(_ context.Context, s *signalmesh.Signal) error {
			time.Sleep(per) // the member's own work
			mu.Lock()
			seen[s.ID]++
			byMember[i]++
			last = time.Now()
			if first.IsZero() {
				first = last.Add(-per)
			}
			mu.Unlock()
			return nil
		}, node.WithGroup("workers"), node.WithStrategy(node.Hash))
		if err != nil {
			return groupResult{}, err
		}
	}
	if _, err := Await(ctx, time.Minute, func() bool {
		for _, p := range peers {
			if st, err := p.Status(ctx); err != nil || len(st.Groups["workers"]) != size {
				return false
			}
		}
		return true
	}); err != nil {
		return groupResult{}, fmt.Errorf("bench: the group of %d did not form: %w", size, err)
	}
	payload := make([]byte, env.Payload)
	for sent := 0; sent < n; {
		batch := make([]*signalmesh.Signal, min(100, n-sent))
		for i := range batch {
			var err error
			if batch[i], err = signalmesh.New("bench.group", "/bench", payload, signalmesh.WithSubject(fmt.Sprint("s", (sent+i)%1024))); err != nil {
				return groupResult{}, err
			}
		}
		if err := peers[len(peers)-1].Publish(ctx, batch...); err != nil {
			return groupResult{}, err
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
	floor := time.Duration(n) * per / time.Duration(size)
	if _, err := Await(ctx, 4*floor+time.Minute, func() bool { h, _ := handled(); return h == n }); err != nil {
		h, _ := handled()
		return groupResult{}, fmt.Errorf("bench: a group of %d handled %d of %d", size, h, n)
	}
	mu.Lock()
	took := last.Sub(first) // the group's pace, not its start (a member starts once its node heard the others)
	largest := 100 * float64(slices.Max(byMember)) / float64(n)
	mu.Unlock()
	if _, twice := handled(); twice > 0 {
		return groupResult{}, fmt.Errorf("bench: a group of %d handled %d signals more than once", size, twice)
	}
	// Bytes per renewal, times the renewals of a minute at the default
	// lease. A short run renews its CRDT copies more often than a long one
	// (each entry's first renewal writes it): the CRDT figure is high.
	var crdtBytes, gossipBytes, renewals int64
	for _, p := range peers {
		st, _ := p.Status(ctx)
		crdtBytes, gossipBytes, renewals = crdtBytes+st.LeaseBytes, gossipBytes+st.LeaseGossipBytes, renewals+st.LeaseRenewals
	}
	perMinute := float64(time.Minute) / float64(leaseDefault/3) / float64(max(renewals, 1))
	return groupResult{rate: float64(n) / took.Seconds(), lease: leaseCost{crdt: float64(crdtBytes) * perMinute, gossip: float64(gossipBytes) * perMinute}, largest: largest}, nil
}
