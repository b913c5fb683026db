package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

// Retention: peers on disk publish rate signals a second among them (each
// its share, 5 at a time) for dur, under a retention rule "**" of keep,
// pruned by default (a quarter of keep). Measured: each peer's data
// directory after the first keep and at the end (median over peers, and
// the ratio end / first: what pruning holds the disk to), the signals
// pruned, and at the end, once publishing stopped, how many acknowledged
// signals still within retention (published more than 10 s after the end
// minus keep) a replica lacks 8 s after the end (Get by id; want 0).
func Retention(ctx context.Context, env Env, peers, rate int, keep, dur time.Duration) (*Outcome, error) {
	o := &Outcome{}
	mesh := fmt.Sprintf("retention-%d", time.Now().UnixNano())
	ret := journal.Retention{{Pattern: "**", MaxAge: keep}}
	nodes := make([]*node.Node, peers)
	dirs := make([]string, peers)
	defer func() {
		for i, n := range nodes {
			if n != nil {
				_ = n.Close()
			}
			if dirs[i] != "" {
				removeAll(dirs[i])
			}
		}
	}()
	for i := range nodes {
		d, err := tempDirFor("retention")
		if err != nil {
			return nil, err
		}
		dirs[i] = d
		if nodes[i], err = node.New(ctx, node.Config{Mesh: mesh, DataDir: d, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
			Logger: Quiet(), Retention: ret}); err != nil {
			return nil, err
		}
	}
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			if err := nodes[i].Connect(ctx, nodes[j].AddrInfo()); err != nil {
				return nil, err
			}
		}
	}
	type acked struct {
		id string
		at time.Time
	}
	var mu sync.Mutex
	var sent []acked
	var pubErr error
	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	payload := make([]byte, env.Payload)
	const per = 5 // signals per Publish; each peer publishes every interval
	interval := time.Duration(float64(time.Second) * float64(per*peers) / float64(rate))
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-pctx.Done():
					return
				case <-t.C:
				}
				batch := make([]*signalmesh.Signal, per)
				for i := range batch {
					s, err := signalmesh.New("bench.retention", "/bench", payload)
					if err != nil {
						return
					}
					batch[i] = s
				}
				if err := n.Publish(pctx, batch...); err != nil {
					if pctx.Err() == nil {
						mu.Lock()
						pubErr = err
						mu.Unlock()
					}
					return
				}
				now := time.Now()
				mu.Lock()
				for _, s := range batch {
					sent = append(sent, acked{s.ID, now})
				}
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	sizes := func() []int64 {
		out := make([]int64, len(dirs))
		for i, d := range dirs {
			out[i] = dirSize(d)
		}
		return out
	}
	var first []int64
	select {
	case <-ctx.Done():
	case <-time.After(keep):
		first = sizes()
	}
	select {
	case <-ctx.Done():
	case <-time.After(dur - time.Since(start)):
	}
	stop()
	wg.Wait()
	end := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if pubErr != nil {
		return nil, fmt.Errorf("publish: %w", pubErr)
	}
	// What every replica must hold: acknowledged, and within retention
	// for 10 s more at least (the check ends before any of it expires).
	var want []string
	for _, a := range sent {
		if a.at.After(end.Add(-keep + 10*time.Second)) {
			want = append(want, a.id)
		}
	}
	missing := make([][]string, len(nodes))
	for i := range nodes {
		missing[i] = want
	}
	deadline := end.Add(8 * time.Second)
	for {
		most := 0
		for i, n := range nodes {
			var still []string
			for _, id := range missing[i] {
				if _, err := n.Get(ctx, id); err != nil {
					still = append(still, id)
				}
			}
			missing[i] = still
			most = max(most, len(still))
		}
		if most == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	most := 0
	for _, m := range missing {
		most = max(most, len(m))
	}
	last := sizes()
	var pruned []float64
	for _, n := range nodes {
		st, err := n.Status(ctx)
		if err != nil {
			return nil, err
		}
		pruned = append(pruned, float64(st.Pruned))
	}
	variant := fmt.Sprintf("peers=%d,rate=%d,keep=%s,for=%s", peers, rate, keep, dur)
	f0, f1 := medianInt(first), medianInt(last)
	o.add(Figure{System: "signalmesh", Variant: variant, Metric: "disk-after-retention", Unit: "MiB", Value: float64(f0) / (1 << 20),
		Note: fmt.Sprintf("per peer, median; all %v MiB", mib(first))})
	o.add(Figure{System: "signalmesh", Variant: variant, Metric: "disk-at-end", Unit: "MiB", Value: float64(f1) / (1 << 20),
		Note: fmt.Sprintf("per peer, median; all %v MiB; %.2fx the disk after the first %s; pruned per peer %v", mib(last), float64(f1)/float64(max(f0, 1)), keep, pruned)})
	o.add(Figure{System: "signalmesh", Variant: variant, Metric: "disk-growth", Unit: "x", Value: float64(f1) / float64(max(f0, 1))})
	o.add(Figure{System: "signalmesh", Variant: variant, Metric: "missing-within-retention", Unit: "signals", Value: float64(most),
		Note: fmt.Sprintf("of %d acknowledged signals published in the last %s less 10 s, the most any replica lacks (by id) 8 s after the end; %d acknowledged in all", len(want), keep, len(sent))})
	return o, nil
}

func medianInt(v []int64) int64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func mib(v []int64) []int64 {
	out := make([]int64, len(v))
	for i, x := range v {
		out[i] = x >> 20
	}
	return out
}
