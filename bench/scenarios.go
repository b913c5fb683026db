package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/signalmesh/signalmesh"
)

// Figure is one measured value of one system.
type Figure struct {
	System  string  `json:"system"`            // "signalmesh", "gossipsub", "crdt-batched", "crdt-unbatched"
	Variant string  `json:"variant,omitempty"` // how the system was driven, when a scenario tries several ways
	Metric  string  `json:"metric"`
	Unit    string  `json:"unit"`
	Value   float64 `json:"value"`
	Note    string  `json:"note,omitempty"`
}

// Partition: peers cut into two sides, perSide signals written on each side
// while cut, then heal; measures the time from reconnecting to identical
// journals. Baselines: raw go-ds-crdt batched and (unless short) unbatched,
// with the same 2 s rebroadcast signalmesh uses.
func Partition(ctx context.Context, peers, perSide int, short bool) ([]Figure, error) {
	left, right := sides(peers)
	var figs []Figure
	ms, err := partitionMesh(ctx, peers, perSide, left, right)
	if err != nil {
		return nil, fmt.Errorf("signalmesh: %w", err)
	}
	figs = append(figs, Figure{System: "signalmesh", Metric: "heal-to-identical", Unit: "ms", Value: ms})
	modes := []bool{true, false}
	if short {
		modes = modes[:1]
	}
	for _, batched := range modes {
		ms, err := partitionCRDT(ctx, peers, perSide, left, right, batched)
		name := "crdt-unbatched"
		if batched {
			name = "crdt-batched"
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		figs = append(figs, Figure{System: name, Metric: "heal-to-identical", Unit: "ms", Value: ms, Note: "rebroadcast 2 s"})
	}
	if !short {
		pct, err := partitionGossip(ctx, peers, perSide, left, right)
		if err != nil {
			return nil, fmt.Errorf("gossipsub: %w", err)
		}
		figs = append(figs, Figure{System: "gossipsub", Metric: "other-side-delivered-after-heal", Unit: "%", Value: pct,
			Note: "heal-to-identical: never"})
	}
	return figs, nil
}

// partitionGossip: what each side publishes while cut never reaches the
// other side with raw GossipSub, heal or not. Returns the share of the
// other side's messages the peers have 5 s after the heal.
func partitionGossip(ctx context.Context, peers, perSide int, left, right []int) (float64, error) {
	raw, c, err := newRaw(ctx, peers, RawOptions{Topic: "cut"}, "")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	got := make([]atomic.Int64, peers)
	var wg sync.WaitGroup
	cctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	for i, p := range raw {
		if err := p.CountMessages(cctx, &wg, &got[i]); err != nil {
			return 0, err
		}
	}
	c.cut(left, right)
	for _, side := range [][]int{left, right} {
		for j := 0; j < perSide; j++ {
			_ = raw[side[j%len(side)]].Topic.Publish(ctx, []byte(fmt.Sprint(side[0], "-", j)))
		}
	}
	time.Sleep(2 * time.Second) // each side's own gossip settles
	before := make([]int64, peers)
	for i := range got {
		before[i] = got[i].Load()
	}
	if err := c.heal(ctx); err != nil {
		return 0, err
	}
	time.Sleep(5 * time.Second) // nothing to await: GossipSub never resends
	var other int64
	for i := range got {
		other += got[i].Load() - before[i]
	}
	return 100 * float64(other) / float64(peers*perSide), nil
}

// Rejoin: one peer is cut off while the others write n signals, then it
// reconnects; measures the time from reconnecting to identical journals.
// Baseline: raw go-ds-crdt with batched Puts (rebroadcast 2 s).
func Rejoin(ctx context.Context, peers, n int) ([]Figure, error) {
	var others []int
	for i := 0; i < peers-1; i++ {
		others = append(others, i)
	}
	away := []int{peers - 1}
	nodes, c, err := newMesh(ctx, peers, "")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.cut(others, away)
	if err := nodes[0].Publish(ctx, newSignals(n, "rejoin.write")...); err != nil {
		return nil, err
	}
	if _, err := Await(ctx, 5*time.Minute, func() bool { return identical(ctx, pick(nodes, others), n) }); err != nil {
		return nil, fmt.Errorf("signalmesh: others: %w", err)
	}
	if err := c.heal(ctx); err != nil {
		return nil, err
	}
	took, err := Await(ctx, 5*time.Minute, func() bool { return identical(ctx, nodes, n) })
	if err != nil {
		return nil, fmt.Errorf("signalmesh: %w", err)
	}
	figs := []Figure{{System: "signalmesh", Metric: "rejoin-to-identical", Unit: "ms", Value: float64(took.Milliseconds())}}

	raw, rc, err := newRaw(ctx, peers, RawOptions{CRDT: true, Topic: "rejoin", Rebroadcast: 2 * time.Second}, "")
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	rc.cut(others, away)
	if err := rawWrite(ctx, raw[0], "w", n, true); err != nil {
		return nil, err
	}
	if _, err := Await(ctx, 5*time.Minute, func() bool { return rawAll(ctx, pick(raw, others), n) }); err != nil {
		return nil, fmt.Errorf("crdt-batched: others: %w", err)
	}
	if err := rc.heal(ctx); err != nil {
		return nil, err
	}
	took, err = Await(ctx, 5*time.Minute, func() bool { return rawAll(ctx, raw, n) })
	if err != nil {
		return nil, fmt.Errorf("crdt-batched: %w", err)
	}
	return append(figs, Figure{System: "crdt-batched", Metric: "rejoin-to-identical", Unit: "ms",
		Value: float64(took.Milliseconds()), Note: "rebroadcast 2 s"}), nil
}

func sides(peers int) (left, right []int) {
	for i := 0; i < peers; i++ {
		if i < peers*2/5 || i == 0 {
			left = append(left, i)
		} else {
			right = append(right, i)
		}
	}
	return left, right
}

func partitionMesh(ctx context.Context, peers, perSide int, left, right []int) (float64, error) {
	nodes, c, err := newMesh(ctx, peers, "")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.cut(left, right)
	for _, side := range [][]int{left, right} {
		sigs := newSignals(perSide, "bench.write")
		writers := side[:min(2, len(side))]
		per := perSide / len(writers)
		for k, i := range writers {
			end := (k + 1) * per
			if k == len(writers)-1 {
				end = perSide
			}
			if err := nodes[i].Publish(ctx, sigs[k*per:end]...); err != nil {
				return 0, err
			}
		}
	}
	if _, err := Await(ctx, 5*time.Minute, func() bool {
		return identical(ctx, pick(nodes, left), perSide) && identical(ctx, pick(nodes, right), perSide)
	}); err != nil {
		return 0, fmt.Errorf("sides: %w", err)
	}
	if err := c.heal(ctx); err != nil {
		return 0, err
	}
	took, err := Await(ctx, 5*time.Minute, func() bool { return identical(ctx, nodes, 2*perSide) })
	return float64(took.Milliseconds()), err
}

func partitionCRDT(ctx context.Context, peers, perSide int, left, right []int, batched bool) (float64, error) {
	raw, c, err := newRaw(ctx, peers, RawOptions{CRDT: true, Topic: "raw", Rebroadcast: 2 * time.Second}, "")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.cut(left, right)
	for s, side := range [][]int{left, right} {
		writers := side[:min(2, len(side))]
		per := perSide / len(writers)
		for k, i := range writers {
			n := per
			if k == len(writers)-1 {
				n = perSide - per*k
			}
			if err := rawWrite(ctx, raw[i], fmt.Sprintf("%d-%d", s, k), n, batched); err != nil {
				return 0, err
			}
		}
	}
	if _, err := Await(ctx, 10*time.Minute, func() bool { return rawAll(ctx, raw, perSide) }); err != nil {
		return 0, fmt.Errorf("sides: %w", err)
	}
	if err := c.heal(ctx); err != nil {
		return 0, err
	}
	took, err := Await(ctx, 10*time.Minute, func() bool { return rawAll(ctx, raw, 2*perSide) })
	return float64(took.Milliseconds()), err
}

func pick[T any](all []T, idx []int) []T {
	out := make([]T, len(idx))
	for k, i := range idx {
		out[k] = all[i]
	}
	return out
}

func rawWrite(ctx context.Context, p *RawPeer, prefix string, n int, batched bool) error {
	val := make([]byte, 200)
	if !batched {
		for i := 0; i < n; i++ {
			if err := p.CRDT.Put(ctx, ds.NewKey(fmt.Sprintf("/%s/%d", prefix, i)), val); err != nil {
				return err
			}
		}
		return nil
	}
	bt, err := p.CRDT.Batch(ctx)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if err := bt.Put(ctx, ds.NewKey(fmt.Sprintf("/%s/%d", prefix, i)), val); err != nil {
			return err
		}
	}
	return bt.Commit(ctx)
}

// Burst: peer 0 publishes total signals as fast as 16 goroutines can, to
// every other peer; measures the fraction the worst subscriber got and the
// time to the last delivery. Baseline: raw GossipSub (defaults, mesh formed
// before the burst).
func Burst(ctx context.Context, peers, total int) ([]Figure, error) {
	var figs []Figure
	pct, ms, err := burstMesh(ctx, peers, total)
	if err != nil {
		return nil, fmt.Errorf("signalmesh: %w", err)
	}
	figs = append(figs,
		Figure{System: "signalmesh", Metric: "worst-subscriber-delivered", Unit: "%", Value: pct},
		Figure{System: "signalmesh", Metric: "time-to-last-delivery", Unit: "ms", Value: ms})
	pct, ms, err = burstGossip(ctx, peers, total)
	if err != nil {
		return nil, fmt.Errorf("gossipsub: %w", err)
	}
	figs = append(figs,
		Figure{System: "gossipsub", Metric: "worst-subscriber-delivered", Unit: "%", Value: pct},
		Figure{System: "gossipsub", Metric: "time-to-last-delivery", Unit: "ms", Value: ms, Note: "until deliveries stop"})
	return figs, nil
}

func burstMesh(ctx context.Context, peers, total int) (pct, ms float64, err error) {
	nodes, c, err := newMesh(ctx, peers, "")
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	counts := make([]atomic.Int64, peers-1)
	for i, n := range nodes[1:] {
		if _, err := n.Subscribe("burst.*", func(context.Context, *signalmesh.Signal) error {
			counts[i].Add(1)
			return nil
		}); err != nil {
			return 0, 0, err
		}
	}
	sigs := newSignals(total, "burst.tick")
	start := time.Now()
	if err := parallel(total, func(i int) error { return nodes[0].Publish(ctx, sigs[i]) }); err != nil {
		return 0, 0, err
	}
	pct, took := awaitCounts(ctx, counts, total, start)
	return pct, float64(took.Milliseconds()), nil
}

func burstGossip(ctx context.Context, peers, total int) (pct, ms float64, err error) {
	raw, c, err := newRaw(ctx, peers, RawOptions{Topic: "burst"}, "")
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	counts := make([]atomic.Int64, peers-1)
	var wg sync.WaitGroup
	cctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); wg.Wait() }()
	for i, p := range raw[1:] {
		if err := p.CountMessages(cctx, &wg, &counts[i]); err != nil {
			return 0, 0, err
		}
	}
	if _, err := Await(ctx, 10*time.Second, func() bool { return len(raw[0].Topic.ListPeers()) == peers-1 }); err != nil {
		return 0, 0, err
	}
	time.Sleep(1500 * time.Millisecond) // let the mesh form on a heartbeat: a fair start for GossipSub
	payload, _ := newSignals(1, "burst.tick")[0].MarshalBinary()
	start := time.Now()
	if err := parallel(total, func(i int) error {
		return raw[0].Topic.Publish(ctx, append([]byte(fmt.Sprint(i)), payload...))
	}); err != nil {
		return 0, 0, err
	}
	pct, took := awaitCounts(ctx, counts, total, start)
	return pct, float64(took.Milliseconds()), nil
}

// awaitCounts waits until every counter reaches total or none moved for 5 s;
// it returns the worst counter as a percentage and the time of the last
// delivery seen.
func awaitCounts(ctx context.Context, counts []atomic.Int64, total int, start time.Time) (float64, time.Duration) {
	last, lastChange := int64(-1), time.Now()
	for {
		sum, worst := int64(0), int64(total)
		for i := range counts {
			c := counts[i].Load()
			sum += c
			worst = min(worst, c)
		}
		if sum != last {
			last, lastChange = sum, time.Now()
		}
		if worst == int64(total) || time.Since(lastChange) > 5*time.Second || ctx.Err() != nil {
			return 100 * float64(worst) / float64(total), lastChange.Sub(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Durable: one peer with the on-disk store publishes total signals, in
// batches of 100 and by 16 single-signal writers; measures signals per
// second made durable. Baseline: raw go-ds-crdt unbatched Puts on pebble
// (a tenth of the count; go-ds-crdt does not fsync them).
func Durable(ctx context.Context, total int) ([]Figure, error) {
	var figs []Figure
	for _, batch := range []int{100, 1} {
		rate, err := durableMesh(ctx, total, batch)
		if err != nil {
			return nil, fmt.Errorf("signalmesh: %w", err)
		}
		variant, note := "batch100", "Publish with 100 signals per call"
		if batch == 1 {
			variant, note = "writers16", "16 goroutines, one signal per call"
		}
		figs = append(figs, Figure{System: "signalmesh", Variant: variant, Metric: "durable-publish", Unit: "signals/s", Value: rate, Note: note})
	}
	rate, err := durableCRDT(ctx, max(total/10, 1))
	if err != nil {
		return nil, fmt.Errorf("crdt-unbatched: %w", err)
	}
	figs = append(figs, Figure{System: "crdt-unbatched", Metric: "durable-publish", Unit: "signals/s", Value: rate,
		Note: "a tenth of the count; not fsynced"})
	return figs, nil
}

func durableMesh(ctx context.Context, total, batch int) (float64, error) {
	dir, err := os.MkdirTemp("", "signalmesh-bench-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	nodes, c, err := newMesh(ctx, 1, dir)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	sigs := newSignals(total, "durable.write")
	start := time.Now()
	if batch == 1 {
		err = parallel(total, func(i int) error { return nodes[0].Publish(ctx, sigs[i]) })
	} else {
		for i := 0; i < total && err == nil; i += batch {
			err = nodes[0].Publish(ctx, sigs[i:min(i+batch, total)]...)
		}
	}
	return float64(total) / time.Since(start).Seconds(), err
}

func durableCRDT(ctx context.Context, total int) (float64, error) {
	dir, err := os.MkdirTemp("", "signalmesh-bench-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	raw, c, err := newRaw(ctx, 1, RawOptions{CRDT: true, Topic: "durable"}, dir)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	val, _ := newSignals(1, "durable.write")[0].MarshalBinary()
	start := time.Now()
	for i := 0; i < total; i++ {
		if err := raw[0].CRDT.Put(ctx, ds.NewKey(fmt.Sprint(i)), val); err != nil {
			return 0, err
		}
	}
	return float64(total) / time.Since(start).Seconds(), nil
}

// Steady: peer 0 publishes at a fixed rate for a duration, one signal per
// Publish call (a pool of goroutines keeps the rate while calls wait), with
// subscribers on every other peer; measures the latency from the Publish
// call to each delivery and to the last peer (p50, p90, p99, max), and the
// delivered fraction. Baseline: raw GossipSub with the same rate and peers.
// signalmesh runs in memory here, like GossipSub: this is the messaging
// path; Durable measures the disk.
func Steady(ctx context.Context, peers, rate int, dur time.Duration) ([]Figure, error) {
	var figs []Figure
	for _, sys := range []string{"signalmesh", "gossipsub"} {
		lat, err := steady(ctx, sys, peers, rate, dur)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sys, err)
		}
		figs = append(figs, lat.figures(sys)...)
	}
	return figs, nil
}

// latencies collects send and receive times of one steady run.
type latencies struct {
	mu       sync.Mutex
	sent     map[string]time.Time
	arrivals map[string][]time.Duration // id -> latency at each subscriber
	subs     int
}

func (l *latencies) send(id string) {
	l.mu.Lock()
	l.sent[id] = time.Now()
	l.mu.Unlock()
}

func (l *latencies) recv(id string) {
	now := time.Now()
	l.mu.Lock()
	if t, ok := l.sent[id]; ok {
		l.arrivals[id] = append(l.arrivals[id], now.Sub(t))
	}
	l.mu.Unlock()
}

func (l *latencies) complete() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id := range l.sent {
		if len(l.arrivals[id]) < l.subs {
			return false
		}
	}
	return true
}

func (l *latencies) figures(sys string) []Figure {
	l.mu.Lock()
	defer l.mu.Unlock()
	var each, last []float64
	delivered := 0
	for id := range l.sent {
		a := l.arrivals[id]
		delivered += len(a)
		for _, d := range a {
			each = append(each, ms(d))
		}
		if len(a) == l.subs {
			last = append(last, ms(slices.Max(a)))
		}
	}
	figs := []Figure{{System: sys, Metric: "delivered", Unit: "%", Value: 100 * float64(delivered) / float64(len(l.sent)*l.subs)}}
	for _, p := range []struct {
		name string
		q    float64
	}{{"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}, {"max", 1}} {
		figs = append(figs, Figure{System: sys, Metric: "latency-to-all-" + p.name, Unit: "ms", Value: quantile(last, p.q)})
	}
	figs = append(figs, Figure{System: sys, Metric: "latency-each-p50", Unit: "ms", Value: quantile(each, 0.5)})
	return figs
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// quantile of xs (sorted in place), nearest rank; 0 when empty.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[max(0, min(i, len(xs)-1))]
}

func steady(ctx context.Context, sys string, peers, rate int, dur time.Duration) (*latencies, error) {
	lat := &latencies{sent: map[string]time.Time{}, arrivals: map[string][]time.Duration{}, subs: peers - 1}
	var publish func(i int) error
	var closer func() error
	switch sys {
	case "signalmesh":
		nodes, c, err := newMesh(ctx, peers, "")
		if err != nil {
			return nil, err
		}
		closer = c.Close
		for _, n := range nodes[1:] {
			if _, err := n.Subscribe("steady.*", func(_ context.Context, s *signalmesh.Signal) error {
				lat.recv(s.ID)
				return nil
			}); err != nil {
				_ = closer()
				return nil, err
			}
		}
		publish = func(int) error {
			s, _ := signalmesh.New("steady.tick", "/bench", nil)
			lat.send(s.ID)
			return nodes[0].Publish(ctx, s)
		}
	default:
		raw, c, err := newRaw(ctx, peers, RawOptions{Topic: "steady"}, "")
		if err != nil {
			return nil, err
		}
		var wg sync.WaitGroup
		cctx, cancel := context.WithCancel(ctx)
		closer = func() error { cancel(); wg.Wait(); return c.Close() }
		for _, p := range raw[1:] {
			if err := p.Consume(cctx, &wg, func(data []byte) { lat.recv(string(data)) }); err != nil {
				_ = closer()
				return nil, err
			}
		}
		if _, err := Await(ctx, 10*time.Second, func() bool { return len(raw[0].Topic.ListPeers()) == peers-1 }); err != nil {
			_ = closer()
			return nil, err
		}
		publish = func(i int) error {
			id := fmt.Sprint("m", i)
			lat.send(id)
			return raw[0].Topic.Publish(ctx, []byte(id))
		}
	}
	defer closer()
	time.Sleep(1500 * time.Millisecond) // both start on a formed GossipSub mesh
	if err := paced(ctx, rate, dur, publish); err != nil {
		return nil, err
	}
	_, _ = Await(ctx, 10*time.Second, lat.complete) // what has not arrived by then counts as lost
	return lat, nil
}

// paced calls publish rate times a second for dur, from a pool of 32
// goroutines so that a slow call does not hold back the next tick.
func paced(ctx context.Context, rate int, dur time.Duration, publish func(i int) error) error {
	ticks := make(chan int, 1024)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ticks {
				if err := publish(i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	total := int(float64(rate) * dur.Seconds())
	start := time.Now()
	for i := 0; i < total && ctx.Err() == nil; i++ {
		if d := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); d > 0 {
			time.Sleep(d)
		}
		ticks <- i
	}
	close(ticks)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return ctx.Err()
	}
}
