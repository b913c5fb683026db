package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"
)

// Figure is one measured value of one system. A scenario's run gives
// one value; Run reports, for each figure, the median over the repeated
// runs (Value) with their range (Min, Max) and every run's value (Runs).
type Figure struct {
	System  string `json:"system"`            // "signalmesh", "gossipsub", "gossipsub-tuned", "nats", "crdt-batched"
	Variant string `json:"variant,omitempty"` // a point of a sweep (N=8, history=10000) or a way of driving the system
	Metric  string `json:"metric"`
	Unit    string `json:"unit"`
	// Value is the median over the runs. When NotReached, the percentile
	// fell on a signal that was lost (never arrived within the wait), and
	// Value is 0.
	Value      float64 `json:"value"`
	NotReached bool    `json:"not_reached,omitempty"`
	// Min and Max are the smallest and largest run's values (Max 0 and
	// MaxNotReached when some run's percentile was not reached).
	Min           float64 `json:"min"`
	Max           float64 `json:"max"`
	MaxNotReached bool    `json:"max_not_reached,omitempty"`
	// Runs are the values of the runs, in run order; null: not reached.
	Runs []*float64 `json:"runs,omitempty"`
	// Workload is set when the figure's system ran a workload other than
	// its scenario's (fewer signals): no ratio is printed against it.
	Workload string `json:"workload,omitempty"`
	Note     string `json:"note,omitempty"`
}

// Series is a curve for a plot; YMin and YMax, when set, are error bars
// (the smallest and largest run's value at each X; Y is the median).
type Series struct {
	Plot   string    `json:"plot"` // latency-cdf, convergence-vs-n, throughput-vs-n, completeness-vs-n
	System string    `json:"system"`
	X      []float64 `json:"x"`
	Y      []float64 `json:"y"`
	YMin   []float64 `json:"y_min,omitempty"`
	YMax   []float64 `json:"y_max,omitempty"`
}

// Missing names, per run, system and peer, the signals a subscriber never got.
type Missing struct {
	Scenario string   `json:"scenario"`
	Run      int      `json:"run"`
	System   string   `json:"system"`
	Peer     int      `json:"peer"`
	IDs      []string `json:"ids"`
}

// Outcome is what one scenario measured.
type Outcome struct {
	Figures []Figure
	Series  []Series
	Missing []Missing
}

func (o *Outcome) add(f ...Figure) { o.Figures = append(o.Figures, f...) }

// costs adds a scenario's costs per peer: bytes and GossipSub RPCs sent,
// CPU, and, with one process per peer, the largest agent's peak memory
// (each agent is a fresh process; in one process, measured reports it).
func (o *Outcome) costs(sys, variant string, env Env, n int, st Stats) {
	cpuNote := "per process"
	if !env.Processes {
		cpuNote = "whole process / peers (peers share one process)"
	}
	bytesNote := ""
	if sys == KindNATS {
		bytesNote = "client side only: the server's bytes are not counted"
	}
	o.add(Figure{System: sys, Variant: variant, Metric: "bytes-sent-per-peer", Unit: "KiB", Value: float64(st.BytesOut) / 1024 / float64(n), Note: bytesNote},
		Figure{System: sys, Variant: variant, Metric: "messages-sent-per-peer", Unit: "rpcs", Value: float64(st.RPCsOut) / float64(n)},
		Figure{System: sys, Variant: variant, Metric: "cpu-per-peer", Unit: "s", Value: st.CPU / float64(n), Note: cpuNote})
	if env.Processes {
		o.add(Figure{System: sys, Variant: variant, Metric: "peak-rss", Unit: "MiB", Value: st.MaxRSS, Note: "largest agent process (fresh for this run)"})
	}
}

const writeType = "bench.write"

// sideWrite publishes perSide signals on a side, from up to two of its
// peers, in Publish calls of up to 1,000.
func sideWrite(ctx context.Context, g *group, side []int, perSide int, env Env) error {
	writers := side[:min(2, len(side))]
	per := perSide / len(writers)
	errs := make(chan error, len(writers))
	for k, i := range writers {
		n := per
		if k == len(writers)-1 {
			n = perSide - per*k
		}
		go func() {
			errs <- g.peers[i].Publish(ctx, PublishReq{Type: writeType, N: n, Batch: 1000, Payload: env.Payload, Seed: env.Seed + uint64(i)})
		}()
	}
	var first error
	for range writers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Partition: the peers are dealt into `groups` sides at random (seeded),
// perSide signals are written on every side while cut, then everything
// heals; measures the time from the start of the heal until every peer's
// put hook has counted every signal (timeHeal: the same clock for every
// system; the journals' digests, or the stores' keys, are compared after,
// outside the clock), and the bytes, messages and CPU the heal cost.
// Baselines: raw go-ds-crdt with batched Puts (each writer one batch) and
// a 2 s rebroadcast, and raw GossipSub, default and tuned, which never
// converge (the share of the other side's messages that ever arrives).
func Partition(ctx context.Context, env Env, peers, perSide, groups int, short bool) (*Outcome, error) {
	o := &Outcome{}
	sides := split(env.rng(1), peers, groups)
	systems := []string{KindMesh, "crdt-batched", KindGossip, KindGossipTuned}
	if short {
		systems = systems[:2]
	}
	for _, sys := range rotate(systems, env.Round) {
		err := o.measured(env, sys, "", func() error {
			switch sys {
			case KindMesh:
				h, st, err := partitionMesh(ctx, env, peers, perSide, sides)
				if err != nil {
					return err
				}
				o.add(h.figure(sys, "", "heal-to-identical", ""))
				o.costs(sys, "", env, peers, st)
				o.add(Figure{System: sys, Metric: "dag-heads-after", Unit: "heads", Value: float64(st.Heads), Note: "most on any peer"})
			case "crdt-batched":
				h, err := partitionCRDT(ctx, env, peers, perSide, sides)
				if err != nil {
					return err
				}
				o.add(h.figure(sys, "", "heal-to-identical", "rebroadcast 2 s"))
			default:
				n := min(perSide, 1000)
				pct, err := partitionGossip(ctx, env, sys, peers, n, sides)
				if err != nil {
					return err
				}
				f := Figure{System: sys, Metric: "other-side-delivered-after-heal", Unit: "%", Value: pct, Note: "heal-to-identical: never"}
				if n != perSide {
					f.Workload = fmt.Sprintf("%d signals a side, not %d", n, perSide)
				}
				o.add(f)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sys, err)
		}
	}
	return o, nil
}

func partitionMesh(ctx context.Context, env Env, peers, perSide int, sides [][]int) (healed, Stats, error) {
	g, err := startGroup(ctx, env, KindMesh, peers)
	if err != nil {
		return healed{}, Stats{}, err
	}
	defer g.Close()
	if err := g.cut(sides...); err != nil {
		return healed{}, Stats{}, err
	}
	for _, side := range sides {
		if err := sideWrite(ctx, g, side, perSide, env); err != nil {
			return healed{}, Stats{}, err
		}
	}
	for _, side := range sides {
		if _, err := g.awaitIdentical(ctx, side, perSide, 5*time.Minute); err != nil {
			return healed{}, Stats{}, fmt.Errorf("sides: %w", err)
		}
	}
	before, err := g.stats(ctx, env)
	if err != nil {
		return healed{}, Stats{}, err
	}
	stop := profileWindow(env, KindMesh, fmt.Sprintf("heal%d", peers))
	h, err := timeHeal(ctx, meshHealer{g}, len(sides)*perSide, 5*time.Minute)
	stop()
	if err != nil {
		return healed{}, Stats{}, err
	}
	after, err := g.stats(ctx, env)
	return h, after.minus(before), err
}

// minus is the cost between two snapshots (memory and heads: the later).
func (s Stats) minus(b Stats) Stats {
	s.BytesIn -= b.BytesIn
	s.BytesOut -= b.BytesOut
	s.RPCsIn -= b.RPCsIn
	s.RPCsOut -= b.RPCsOut
	s.CPU -= b.CPU
	return s
}

// partitionGossip: what each side publishes while cut never reaches the
// other side with raw GossipSub (kind: default or tuned), heal or not.
// Returns the share of the other sides' messages the peers have env.Quiet
// after the heal.
func partitionGossip(ctx context.Context, env Env, kind string, peers, perSide int, sides [][]int) (float64, error) {
	g, err := startGroup(ctx, env, kind, peers)
	if err != nil {
		return 0, err
	}
	defer g.Close()
	if err := g.watch(ctx, all(peers), ""); err != nil {
		return 0, err
	}
	time.Sleep(env.Settle) // a formed mesh: a fair start for GossipSub
	if err := g.cut(sides...); err != nil {
		return 0, err
	}
	for _, side := range sides {
		if err := g.peers[side[0]].Publish(ctx, PublishReq{Type: writeType, N: perSide, Payload: env.Payload}); err != nil {
			return 0, err
		}
	}
	time.Sleep(env.Settle) // each side's own gossip settles
	before, err := g.counts(all(peers))
	if err != nil {
		return 0, err
	}
	if err := g.heal(ctx); err != nil {
		return 0, err
	}
	time.Sleep(env.Quiet) // nothing to await: GossipSub never resends
	after, err := g.counts(all(peers))
	if err != nil {
		return 0, err
	}
	other := 0
	for i := range after {
		other += after[i] - before[i]
	}
	return 100 * float64(other) / float64(peers*perSide*(len(sides)-1)), nil
}

func partitionCRDT(ctx context.Context, env Env, peers, perSide int, sides [][]int) (healed, error) {
	raw, c, err := newRaw(ctx, peers, RawOptions{CRDT: true, Topic: "raw", Rebroadcast: 2 * time.Second}, "")
	if err != nil {
		return healed{}, err
	}
	defer c.Close()
	for a := range sides {
		for b := a + 1; b < len(sides); b++ {
			c.cut(sides[a], sides[b])
		}
	}
	for s, side := range sides {
		writers := side[:min(2, len(side))]
		per := perSide / len(writers)
		for k, i := range writers {
			n := per
			if k == len(writers)-1 {
				n = perSide - per*k
			}
			if err := rawWrite(ctx, raw[i], fmt.Sprintf("%d-%d", s, k), n, env.Payload); err != nil {
				return healed{}, err
			}
		}
	}
	for _, side := range sides {
		if _, err := Await(ctx, 10*time.Minute, func() bool { return rawAll(ctx, pick(raw, side), perSide) }); err != nil {
			return healed{}, fmt.Errorf("sides: %w", err)
		}
	}
	return timeHeal(ctx, rawHealer{c, raw}, len(sides)*perSide, 10*time.Minute)
}

// rawWrite Puts n keys with payload-byte values in one batch.
func rawWrite(ctx context.Context, p *RawPeer, prefix string, n, payload int) error {
	val := make([]byte, payload)
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

// Rejoin: one peer (chosen by the seed) is cut off while the others write
// n signals, then it reconnects; measures the time from reconnecting until
// every put hook counted n (timeHeal). Baseline: raw go-ds-crdt with
// batched Puts.
func Rejoin(ctx context.Context, env Env, peers, n int) (*Outcome, error) {
	away := env.rng(2).IntN(peers-1) + 1
	var others []int
	for i := 0; i < peers; i++ {
		if i != away {
			others = append(others, i)
		}
	}
	o := &Outcome{}
	for _, sys := range rotate([]string{KindMesh, "crdt-batched"}, env.Round) {
		var h healed
		err := o.measured(env, sys, "", func() (err error) {
			if sys == KindMesh {
				h, err = rejoinMesh(ctx, env, peers, n, others, away)
			} else {
				h, err = rejoinCRDT(ctx, env, peers, n, others, away)
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sys, err)
		}
		note := ""
		if sys != KindMesh {
			note = "rebroadcast 2 s"
		}
		o.add(h.figure(sys, "", "rejoin-to-identical", note))
	}
	return o, nil
}

func rejoinMesh(ctx context.Context, env Env, peers, n int, others []int, away int) (healed, error) {
	g, err := startGroup(ctx, env, KindMesh, peers)
	if err != nil {
		return healed{}, err
	}
	defer g.Close()
	if err := g.cut(others, []int{away}); err != nil {
		return healed{}, err
	}
	if err := g.peers[0].Publish(ctx, PublishReq{Type: writeType, N: n, Batch: 1000, Payload: env.Payload}); err != nil {
		return healed{}, err
	}
	if _, err := g.awaitIdentical(ctx, others, n, 5*time.Minute); err != nil {
		return healed{}, fmt.Errorf("others: %w", err)
	}
	return timeHeal(ctx, meshHealer{g}, n, 5*time.Minute)
}

func rejoinCRDT(ctx context.Context, env Env, peers, n int, others []int, away int) (healed, error) {
	raw, rc, err := newRaw(ctx, peers, RawOptions{CRDT: true, Topic: "rejoin", Rebroadcast: 2 * time.Second}, "")
	if err != nil {
		return healed{}, err
	}
	defer rc.Close()
	rc.cut(others, []int{away})
	if err := rawWrite(ctx, raw[0], "w", n, env.Payload); err != nil {
		return healed{}, err
	}
	if _, err := Await(ctx, 5*time.Minute, func() bool { return rawAll(ctx, pick(raw, others), n) }); err != nil {
		return healed{}, fmt.Errorf("others: %w", err)
	}
	return timeHeal(ctx, rawHealer{rc, raw}, n, 5*time.Minute)
}

func pick[T any](all []T, idx []int) []T {
	out := make([]T, len(idx))
	for k, i := range idx {
		out[k] = all[i]
	}
	return out
}

// deliveries is what one run of a publisher and its subscribers did.
type deliveries struct {
	sent     map[string]Sent
	arrivals []map[string]int64 // per subscriber
	subs     []int              // the subscribers' peer indices
}

// collect reads the publisher's and subscribers' records.
func collect(g *group, pub int, subs []int) (*deliveries, error) {
	d := &deliveries{subs: subs}
	var err error
	if d.sent, err = g.peers[pub].Sent(); err != nil {
		return nil, err
	}
	for _, i := range subs {
		a, err := g.peers[i].Arrivals()
		if err != nil {
			return nil, err
		}
		d.arrivals = append(d.arrivals, a)
	}
	return d, nil
}

// worst is the smallest share of the sent signals any subscriber got, in %.
func (d *deliveries) worst() float64 {
	w := 100.0
	for _, a := range d.arrivals {
		got := 0
		for id := range d.sent {
			if _, ok := a[id]; ok {
				got++
			}
		}
		w = min(w, 100*float64(got)/float64(max(len(d.sent), 1)))
	}
	return w
}

// missing names what each subscriber never got.
func (d *deliveries) missing(scenario, sys string) []Missing {
	var out []Missing
	for k, a := range d.arrivals {
		var ids []string
		for id := range d.sent {
			if _, ok := a[id]; !ok {
				ids = append(ids, id)
			}
		}
		if len(ids) > 0 {
			sort.Strings(ids)
			out = append(out, Missing{Scenario: scenario, System: sys, Peer: d.subs[k], IDs: ids})
		}
	}
	return out
}

// latencies: from the Publish call to each arrival, and to the last
// subscriber (ms); level filters by consistency level when not empty. A
// signal a subscriber never got (by the end of the wait) counts as +Inf:
// lost signals stay in the sample, after every delivered one.
func (d *deliveries) latencies(level string) (each, toAll []float64, delivered, expected int) {
	inf := math.Inf(1)
	for id, s := range d.sent {
		if level != "" && s.Level != level {
			continue
		}
		expected += len(d.arrivals)
		last, got := int64(0), 0
		for _, a := range d.arrivals {
			if t, ok := a[id]; ok {
				got++
				each = append(each, float64(t-s.At)/1e6)
				last = max(last, t)
			} else {
				each = append(each, inf)
			}
		}
		delivered += got
		if got == len(d.arrivals) {
			toAll = append(toAll, float64(last-s.At)/1e6)
		} else {
			toAll = append(toAll, inf)
		}
	}
	return each, toAll, delivered, expected
}

// span is from the first Publish call to the last arrival.
func (d *deliveries) span() time.Duration {
	first, last := int64(math.MaxInt64), int64(0)
	for _, s := range d.sent {
		first = min(first, s.At)
	}
	for _, a := range d.arrivals {
		for _, t := range a {
			last = max(last, t)
		}
	}
	if last < first {
		return 0
	}
	return time.Duration(last - first)
}

// awaitArrivals waits until every subscriber has want signals or none
// arrived for quiet; it reports whether all arrived.
func awaitArrivals(ctx context.Context, g *group, subs []int, want int, quiet time.Duration) bool {
	last, lastChange := -1, time.Now()
	for ctx.Err() == nil {
		counts, err := g.counts(subs)
		if err != nil {
			return false
		}
		sum, worst := 0, want
		for _, c := range counts {
			sum += c
			worst = min(worst, c)
		}
		if worst >= want {
			return true
		}
		if sum != last {
			last, lastChange = sum, time.Now()
		}
		if time.Since(lastChange) > quiet {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// broadcastKinds are signalmesh and its broadcast baselines, in the order
// the first run runs them.
var broadcastKinds = []string{KindMesh, KindGossip, KindGossipTuned, KindNATS}

// Burst: peer 0 publishes total signals from 16 concurrent writers, one
// signal per call, to subscribers on every other peer; measures the share
// the worst subscriber got, the time to the last delivery and the delivered
// throughput. Baselines: raw GossipSub (defaults, and tuned like
// signalmesh's; mesh formed first) and NATS core through a local
// nats-server.
func Burst(ctx context.Context, env Env, peers, total int) (*Outcome, error) {
	o := &Outcome{}
	for _, kind := range rotate(broadcastKinds, env.Round) {
		var d *deliveries
		err := o.measured(env, kind, "", func() (err error) {
			d, err = burst(ctx, env, kind, peers, total)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kind, err)
		}
		span := d.span()
		_, _, delivered, _ := d.latencies("")
		o.add(Figure{System: kind, Metric: "worst-subscriber-delivered", Unit: "%", Value: d.worst()},
			Figure{System: kind, Metric: "time-to-last-delivery", Unit: "ms", Value: float64(span.Microseconds()) / 1000},
			Figure{System: kind, Metric: "delivered-throughput", Unit: "signals/s", Value: float64(delivered) / max(span.Seconds(), 1e-9),
				Note: "deliveries to all subscribers / time to the last"})
		o.Missing = append(o.Missing, d.missing("burst", kind)...)
	}
	return o, nil
}

func burst(ctx context.Context, env Env, kind string, peers, total int) (*deliveries, error) {
	g, err := startGroup(ctx, env, kind, peers)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	subs := all(peers)[1:]
	if err := g.watch(ctx, subs, "burst.*"); err != nil {
		return nil, err
	}
	time.Sleep(env.Settle) // a formed GossipSub mesh: the same fair start for every system
	stop := profileWindow(env, kind, "burst")
	if err := g.peers[0].Publish(ctx, PublishReq{Type: "burst.tick", N: total, Writers: 16, Payload: env.Payload}); err != nil {
		stop()
		return nil, err
	}
	awaitArrivals(ctx, g, subs, total, env.Quiet)
	stop()
	return collect(g, 0, subs)
}

// Steady: peer 0 publishes at a fixed rate for a duration, one signal per
// call (32 writers keep the pace while calls wait), with subscribers on
// every other peer; measures latency from the Publish call to each delivery
// and to the last peer (p50, p90, p99, max), delivered share, throughput,
// and costs per peer. Baselines: raw GossipSub and NATS core, same rate,
// same peers. signalmesh is in memory here, like the baselines: this is the
// messaging path; Durable measures the disk.
func Steady(ctx context.Context, env Env, peers, rate int, dur time.Duration) (*Outcome, error) {
	o := &Outcome{}
	for _, kind := range rotate(broadcastKinds, env.Round) {
		var d *deliveries
		var st Stats
		err := o.measured(env, kind, "", func() (err error) {
			d, st, err = steady(ctx, env, kind, peers, rate, dur, "")
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kind, err)
		}
		each, toAll, delivered, expected := d.latencies("")
		figs, err := latencyFigures(kind, "", each, toAll, delivered, expected)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kind, err)
		}
		o.add(figs...)
		o.add(Figure{System: kind, Metric: "published", Unit: "signals/s", Value: float64(len(d.sent)) / dur.Seconds()})
		o.costs(kind, "", env, peers, st)
		o.Series = append(o.Series, cdf("latency-cdf", kind, toAll))
		o.Missing = append(o.Missing, d.missing("steady", kind)...)
	}
	return o, nil
}

// ErrEmptySample fails a run whose percentiles would be taken over no
// signal at all.
var ErrEmptySample = errors.New("bench: empty sample")

// latencyFigures are the delivered share and the latency percentiles. Lost
// signals are in the samples as +Inf, so a percentile that falls on one is
// NotReached; an empty sample is ErrEmptySample.
func latencyFigures(sys, variant string, each, toAll []float64, delivered, expected int) ([]Figure, error) {
	if len(each) == 0 || len(toAll) == 0 || expected == 0 {
		return nil, fmt.Errorf("%w: no signal published or no subscriber", ErrEmptySample)
	}
	figs := []Figure{{System: sys, Variant: variant, Metric: "delivered", Unit: "%", Value: 100 * float64(delivered) / float64(expected)}}
	pct := func(metric string, xs []float64, q float64) {
		v := quantile(xs, q)
		f := Figure{System: sys, Variant: variant, Metric: metric, Unit: "ms", Value: v}
		if math.IsInf(v, 1) {
			f.Value, f.NotReached = 0, true
		}
		figs = append(figs, f)
	}
	for _, p := range []struct {
		name string
		q    float64
	}{{"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}, {"max", 1}} {
		pct("latency-to-all-"+p.name, toAll, p.q)
	}
	pct("latency-each-p50", each, 0.5)
	return figs, nil
}

// cdf samples the distribution of xs at 200 points; lost signals (+Inf)
// are not drawn but count in the total, so that the curve of a lossy
// system ends below 1.
func cdf(plot, sys string, xs []float64) Series {
	s := Series{Plot: plot, System: sys}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	total := float64(len(xs))
	for len(xs) > 0 && math.IsInf(xs[len(xs)-1], 1) {
		xs = xs[:len(xs)-1]
	}
	for k := 0; k < len(xs); k += max(1, len(xs)/200) {
		s.X = append(s.X, xs[k])
		s.Y = append(s.Y, float64(k+1)/total)
	}
	if n := len(xs); n > 0 {
		s.X = append(s.X, xs[n-1])
		s.Y = append(s.Y, float64(n)/total)
	}
	return s
}

func steady(ctx context.Context, env Env, kind string, peers, rate int, dur time.Duration, level string) (*deliveries, Stats, error) {
	g, err := startGroup(ctx, env, kind, peers)
	if err != nil {
		return nil, Stats{}, err
	}
	defer g.Close()
	subs := all(peers)[1:]
	if err := g.watch(ctx, subs, "steady.*"); err != nil {
		return nil, Stats{}, err
	}
	time.Sleep(env.Settle) // every system starts on a formed GossipSub mesh
	before, err := g.stats(ctx, env)
	if err != nil {
		return nil, Stats{}, err
	}
	n := int(float64(rate) * dur.Seconds())
	stop := profileWindow(env, kind, "steady")
	if err := g.peers[0].Publish(ctx, PublishReq{Type: "steady.tick", N: n, Rate: float64(rate), Writers: 32,
		Payload: env.Payload, Level: level, Seed: env.Seed}); err != nil {
		stop()
		return nil, Stats{}, err
	}
	awaitArrivals(ctx, g, subs, n, env.Quiet) // what has not arrived by then counts as lost
	stop()
	after, err := g.stats(ctx, env)
	if err != nil {
		return nil, Stats{}, err
	}
	d, err := collect(g, 0, subs)
	return d, after.minus(before), err
}

// Mixed: a steady rate where each Publish picks Eventual, Weak or
// Quorum(1) at random (seeded); measures, per level, how long the Publish
// call took, latency to all peers and the delivered share. The baseline of
// each level is the Eventual signals of the same run.
func Mixed(ctx context.Context, env Env, peers, rate int, dur time.Duration) (*Outcome, error) {
	o := &Outcome{}
	var d *deliveries
	err := o.measured(env, KindMesh, "", func() (err error) {
		d, _, err = steady(ctx, env, KindMesh, peers, rate, dur, "mixed")
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, lvl := range levels {
		var took []float64
		for _, s := range d.sent {
			if s.Level == lvl {
				took = append(took, float64(s.Took)/1e6)
			}
		}
		each, toAll, delivered, expected := d.latencies(lvl)
		figs, err := latencyFigures(KindMesh, lvl, each, toAll, delivered, expected)
		if err != nil || len(took) == 0 {
			return nil, fmt.Errorf("level %s: %w", lvl, errors.Join(err, ErrEmptySample))
		}
		for _, f := range figs {
			f.Metric = lvl + "/" + f.Metric
			o.add(f)
		}
		o.add(Figure{System: KindMesh, Variant: lvl, Metric: lvl + "/publish-call-p50", Unit: "ms", Value: quantile(took, 0.5)},
			Figure{System: KindMesh, Variant: lvl, Metric: lvl + "/publish-call-p99", Unit: "ms", Value: quantile(took, 0.99)})
	}
	return o, nil
}

// Churn: peer 0 publishes at a steady rate while, every period, another
// peer (chosen by the seed) is cut off from everyone for half a period and
// then reconnected; after the writes everything heals. Measures delivered
// share per subscriber and, for signalmesh, time from the last heal to
// identical journals and complete deliveries. Baselines: raw GossipSub,
// default and tuned, under the same schedule.
func Churn(ctx context.Context, env Env, peers, rate int, dur, period time.Duration) (*Outcome, error) {
	o := &Outcome{}
	for _, kind := range rotate([]string{KindMesh, KindGossip, KindGossipTuned}, env.Round) {
		var d *deliveries
		var settle time.Duration
		var cuts int
		err := o.measured(env, kind, "", func() (err error) {
			d, settle, cuts, err = churn(ctx, env, kind, peers, rate, dur, period)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kind, err)
		}
		o.add(Figure{System: kind, Metric: "worst-subscriber-delivered", Unit: "%", Value: d.worst(), Note: fmt.Sprintf("%d cuts", cuts)})
		if kind == KindMesh {
			o.add(Figure{System: kind, Metric: "heal-to-complete", Unit: "ms", Value: float64(settle.Microseconds()) / 1000,
				Note: "last heal to identical journals and every delivery made"})
		}
		o.Missing = append(o.Missing, d.missing("churn", kind)...)
	}
	return o, nil
}

func churn(ctx context.Context, env Env, kind string, peers, rate int, dur, period time.Duration) (*deliveries, time.Duration, int, error) {
	g, err := startGroup(ctx, env, kind, peers)
	if err != nil {
		return nil, 0, 0, err
	}
	defer g.Close()
	subs := all(peers)[1:]
	if err := g.watch(ctx, subs, "churn.*"); err != nil {
		return nil, 0, 0, err
	}
	time.Sleep(env.Settle)
	n := int(float64(rate) * dur.Seconds())
	rng := env.rng(3)
	done := make(chan struct{})
	var cuts atomic.Int64
	var churnErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the churn schedule, owned by this function
		defer wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			i := 1 + rng.IntN(peers-1)
			var others []int
			for j := 0; j < peers; j++ {
				if j != i {
					others = append(others, j)
				}
			}
			if churnErr = g.cut([]int{i}, others); churnErr != nil {
				return
			}
			cuts.Add(1)
			select {
			case <-done:
				return
			case <-time.After(period / 2):
			}
			if churnErr = g.heal(ctx); churnErr != nil {
				return
			}
		}
	}()
	err = g.peers[0].Publish(ctx, PublishReq{Type: "churn.tick", N: n, Rate: float64(rate), Writers: 32, Payload: env.Payload})
	close(done)
	wg.Wait()
	if err == nil {
		err = churnErr
	}
	healed := time.Now()
	if err == nil {
		err = g.heal(ctx)
	}
	if err != nil {
		return nil, 0, 0, err
	}
	if kind == KindMesh {
		_, err = Await(ctx, 5*time.Minute, func() bool {
			c, err := g.counts(subs)
			return err == nil && slices.Min(c) == n
		})
		if err == nil {
			_, err = g.awaitIdentical(ctx, all(peers), n, 5*time.Minute)
		}
	} else {
		awaitArrivals(ctx, g, subs, n, env.Quiet)
	}
	settle := time.Since(healed)
	if err != nil {
		return nil, 0, 0, err
	}
	d, err := collect(g, 0, subs)
	return d, settle, int(cuts.Load()), err
}

// Scale runs, for each peer count, a two-sided partition heal (perSide
// signals a side; baseline go-ds-crdt batched, unless crdt is false) and a
// burst (baselines GossipSub, default and tuned, and NATS), so that the
// report shows how convergence, throughput and completeness grow with N.
func Scale(ctx context.Context, env Env, ns []int, perSide, burstN int, crdt bool, progress func(string)) (*Outcome, error) {
	o := &Outcome{}
	conv := map[string]*Series{}
	thr := map[string]*Series{}
	comp := map[string]*Series{}
	point := func(m map[string]*Series, plot, sys string, x, y float64) {
		if m[sys] == nil {
			m[sys] = &Series{Plot: plot, System: sys}
		}
		m[sys].X = append(m[sys].X, x)
		m[sys].Y = append(m[sys].Y, y)
	}
	healers := []string{KindMesh}
	if crdt {
		healers = append(healers, "crdt-batched")
	}
	for _, n := range ns {
		if progress != nil {
			progress(fmt.Sprintf("scale N=%d", n))
		}
		v := fmt.Sprintf("N=%d", n)
		sides := split(env.rng(uint64(n)), n, 2)
		for _, sys := range rotate(healers, env.Round) {
			err := o.measured(env, sys, v+" heal", func() error {
				var h healed
				var st Stats
				var err error
				if sys == KindMesh {
					h, st, err = partitionMesh(ctx, env, n, perSide, sides)
				} else {
					h, err = partitionCRDT(ctx, env, n, perSide, sides)
				}
				if err != nil {
					return err
				}
				if sys == KindMesh {
					o.add(h.figure(sys, v, "heal-to-identical", ""))
					o.costs(sys, v, env, n, st)
				} else {
					o.add(h.figure(sys, v, "heal-to-identical", "rebroadcast 2 s"))
				}
				point(conv, "convergence-vs-n", sys, float64(n), h.ms)
				return nil
			})
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", v, sys, err)
			}
		}
		for _, kind := range rotate(broadcastKinds, env.Round) {
			var d *deliveries
			err := o.measured(env, kind, v+" burst", func() (err error) {
				d, err = burst(ctx, env, kind, n, burstN)
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", v, kind, err)
			}
			_, _, delivered, _ := d.latencies("")
			rate := float64(delivered) / max(d.span().Seconds(), 1e-9)
			o.add(Figure{System: kind, Variant: v, Metric: "burst-delivered-throughput", Unit: "signals/s", Value: rate},
				Figure{System: kind, Variant: v, Metric: "burst-worst-subscriber-delivered", Unit: "%", Value: d.worst()})
			point(thr, "throughput-vs-n", kind, float64(n), rate)
			point(comp, "completeness-vs-n", kind, float64(n), d.worst())
			o.Missing = append(o.Missing, d.missing("scale/"+v, kind)...)
		}
	}
	for _, m := range []map[string]*Series{conv, thr, comp} {
		for _, sys := range append([]string{"crdt-batched"}, broadcastKinds...) {
			if s := m[sys]; s != nil {
				o.Series = append(o.Series, *s)
			}
		}
	}
	return o, nil
}

// History: the heal of a two-sided partition (perSide signals a side) when
// the journal already holds h signals, for each h (timeHeal; signalmesh
// only: compare the points with each other).
func History(ctx context.Context, env Env, peers, perSide int, hs []int) (*Outcome, error) {
	o := &Outcome{}
	sides := split(env.rng(4), peers, 2)
	for _, h := range hs {
		v := fmt.Sprintf("history=%d", h)
		var took healed
		err := o.measured(env, KindMesh, v, func() (err error) {
			took, err = historyHeal(ctx, env, peers, perSide, h, sides)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", v, err)
		}
		o.add(took.figure(KindMesh, v, "heal-to-identical", ""))
	}
	return o, nil
}

func historyHeal(ctx context.Context, env Env, peers, perSide, h int, sides [][]int) (healed, error) {
	g, err := startGroup(ctx, env, KindMesh, peers)
	if err != nil {
		return healed{}, err
	}
	defer g.Close()
	if h > 0 {
		if err := g.peers[0].Publish(ctx, PublishReq{Type: "bench.history", N: h, Batch: 1000, Payload: env.Payload}); err != nil {
			return healed{}, err
		}
		if _, err := g.awaitIdentical(ctx, all(peers), h, 5*time.Minute); err != nil {
			return healed{}, fmt.Errorf("history: %w", err)
		}
	}
	if err := g.cut(sides...); err != nil {
		return healed{}, err
	}
	for _, side := range sides {
		if err := sideWrite(ctx, g, side, perSide, env); err != nil {
			return healed{}, err
		}
	}
	for _, side := range sides {
		if _, err := g.awaitIdentical(ctx, side, h+perSide, 5*time.Minute); err != nil {
			return healed{}, fmt.Errorf("sides: %w", err)
		}
	}
	return timeHeal(ctx, meshHealer{g}, h+2*perSide, 5*time.Minute)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// quantile of xs (sorted in place), nearest rank; callers check that xs
// is not empty (ErrEmptySample). +Inf values (lost signals) sort last.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		panic("bench: quantile of an empty sample") // an invariant: latencyFigures refuses empty samples
	}
	slices.Sort(xs)
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[max(0, min(i, len(xs)-1))]
}
