package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"
)

// fakeSpec is how a fake system behaves: what it loses, how long its
// deliveries take, how fast it heals.
type fakeSpec struct {
	lossEvery      int           // every lossEvery-th signal reaches no subscriber (0: none)
	publishNothing bool          // Publish records nothing: an empty sample
	healIn         time.Duration // put-hook counts reach healWant this long after the heal
	healWant       int
	overcount      bool // the put-hook counts reach healWant at the heal; the contents healIn after
}

// fakeNet is the shared state of one group of fake peers (one mesh name).
type fakeNet struct {
	spec fakeSpec

	mu       sync.Mutex
	sent     map[string]Sent
	arrive   map[string]int64 // what every subscriber got, and when
	healedAt time.Time
	peers    int
}

// fakes makes fake peers; each group (AgentConfig.Mesh) gets its own
// network, and each system (AgentConfig.Kind) behaves as specs says.
type fakes struct {
	specs map[string]fakeSpec
	mu    sync.Mutex
	nets  map[string]*fakeNet
}

func (f *fakes) newPeer(_ context.Context, cfg AgentConfig) (Peer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nets == nil {
		f.nets = map[string]*fakeNet{}
	}
	n := f.nets[cfg.Mesh]
	if n == nil {
		n = &fakeNet{spec: f.specs[cfg.Kind], sent: map[string]Sent{}, arrive: map[string]int64{}}
		f.nets[cfg.Mesh] = n
	}
	n.peers++
	return &fakePeer{net: n, id: fmt.Sprintf("%s-%d", cfg.Mesh, n.peers)}, nil
}

// fakePeer delivers synchronously: a signal published at t reaches every
// subscriber at t + (1 + i%10) ms, unless it is lost.
type fakePeer struct {
	net *fakeNet
	id  string
}

func (p *fakePeer) Info() Info                            { return Info{ID: p.id} }
func (p *fakePeer) Connect(context.Context, []Info) error { return nil }
func (p *fakePeer) Block([]string) error                  { return nil }
func (p *fakePeer) Watch(context.Context, string) error   { return nil }
func (p *fakePeer) Stats(context.Context) (Stats, error)  { return Stats{}, nil }
func (p *fakePeer) Close() error                          { return nil }
func (p *fakePeer) Sent() (map[string]Sent, error)        { return p.copySent(), nil }
func (p *fakePeer) Arrivals() (map[string]int64, error)   { return p.copyArrivals(), nil }
func (p *fakePeer) Count() (int, error)                   { return len(p.copyArrivals()), nil }
func (p *fakePeer) Journaled(context.Context) (int64, error) {
	if p.net.spec.overcount && !p.net.healed() {
		return int64(p.net.spec.healWant / 2), nil
	} else if p.net.spec.overcount {
		return int64(p.net.spec.healWant), nil
	}
	return p.net.journaled(), nil
}

func (p *fakePeer) Unblock() error {
	p.net.mu.Lock()
	defer p.net.mu.Unlock()
	if p.net.healedAt.IsZero() {
		p.net.healedAt = time.Now()
	}
	return nil
}

func (p *fakePeer) Publish(_ context.Context, req PublishReq) error {
	n := p.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.spec.publishNothing {
		return nil
	}
	for i := range req.N {
		id := fmt.Sprintf("%s-s%d", p.id, i)
		at := time.Now().UnixNano()
		n.sent[id] = Sent{At: at}
		if n.spec.lossEvery > 0 && i%n.spec.lossEvery == n.spec.lossEvery-1 {
			continue
		}
		n.arrive[id] = at + int64(1+i%10)*int64(time.Millisecond)
	}
	return nil
}

func (p *fakePeer) Digest(context.Context) (int, string, error) {
	return int(p.net.journaled()), "digest", nil
}

func (p *fakePeer) copySent() map[string]Sent {
	p.net.mu.Lock()
	defer p.net.mu.Unlock()
	out := make(map[string]Sent, len(p.net.sent))
	for k, v := range p.net.sent {
		out[k] = v
	}
	return out
}

func (p *fakePeer) copyArrivals() map[string]int64 {
	p.net.mu.Lock()
	defer p.net.mu.Unlock()
	out := make(map[string]int64, len(p.net.arrive))
	for k, v := range p.net.arrive {
		out[k] = v
	}
	return out
}

func (n *fakeNet) healed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.healedAt.IsZero()
}

// journaled: half the entries before the heal (each side its own), all of
// them healIn after it, linearly in between.
func (n *fakeNet) journaled() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	half := int64(n.spec.healWant / 2)
	if n.healedAt.IsZero() {
		return half
	}
	frac := min(1, float64(time.Since(n.healedAt))/float64(n.spec.healIn))
	return half + int64(frac*float64(int64(n.spec.healWant)-half))
}

func fakeEnv(f *fakes) Env {
	return Env{Seed: 1, Payload: 10, Settle: time.Millisecond, Quiet: 50 * time.Millisecond, newPeer: f.newPeer}
}

func figure(t *testing.T, res *Result, metric, sys string) Figure {
	t.Helper()
	for _, f := range res.Figures {
		if f.Metric == metric && f.System == sys {
			return f
		}
	}
	t.Fatalf("no figure %s of %s", metric, sys)
	return Figure{}
}

// A system that loses 10 % of the signals shows it in its percentiles: the
// lost ones count as never arriving, so its p99 is not reached, while a
// lossless system with the same delivery times reaches it.
func TestLossShowsInPercentiles(t *testing.T) {
	f := &fakes{specs: map[string]fakeSpec{KindGossip: {lossEvery: 10}}}
	sc := scenario{name: "steady", steps: 1, run: func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
		return Steady(ctx, env, 3, 1000, 200*time.Millisecond)
	}}
	res, err := runScenarios(context.Background(), Spec{Repeat: 1, Payload: 10}, fakeEnv(f), []scenario{sc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := figure(t, res, "steady/delivered", KindGossip); d.Value != 90 {
		t.Errorf("lossy system delivered %v %%, want 90", d.Value)
	}
	for _, m := range []string{"steady/latency-to-all-p99", "steady/latency-to-all-max"} {
		if p := figure(t, res, m, KindGossip); !p.NotReached {
			t.Errorf("lossy system's %s = %v ms, want not reached", m, p.Value)
		}
		if p := figure(t, res, m, KindMesh); p.NotReached || p.Value < 9 || p.Value > 11 {
			t.Errorf("lossless system's %s = %+v, want reached at 10 ms", m, p)
		}
	}
	// Reached percentiles are the survivors' ones ranked among all: the
	// p90 lands on the last delivered class, 9 ms (the 10 ms class is lost).
	if p := figure(t, res, "steady/latency-to-all-p90", KindGossip); p.NotReached || math.Abs(p.Value-9) > 1 {
		t.Errorf("lossy p90 = %+v, want 9 ms", p)
	}
	lost := 0
	for _, m := range res.Missing {
		if m.System == KindGossip {
			lost += len(m.IDs)
		}
	}
	if lost != 2*20 {
		t.Errorf("missing lists %d deliveries of the lossy system, want 40 (20 signals, 2 subscribers)", lost)
	}
	for _, q := range res.Ratios() {
		if q.System == KindGossip && q.Metric == "steady/latency-to-all-p99" {
			t.Errorf("ratio printed against a not-reached percentile: %+v", q)
		}
	}
}

// A heal scenario with two fake systems of known speed (put-hook counts
// complete 250 ms and 500 ms after the heal) reports their ratio, 2,
// within 10 %, over three runs with the order rotated.
func TestHealRatioOfKnownSpeeds(t *testing.T) {
	const want = 1000
	f := &fakes{specs: map[string]fakeSpec{
		KindMesh:       {healIn: 250 * time.Millisecond, healWant: want},
		"crdt-batched": {healIn: 500 * time.Millisecond, healWant: want},
	}}
	var orders [][]string
	sc := scenario{name: "partition", steps: 1, run: func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
		o := &Outcome{}
		var order []string
		for _, sys := range rotate([]string{KindMesh, "crdt-batched"}, env.Round) {
			order = append(order, sys)
			g, err := startGroup(ctx, env, sys, 4)
			if err != nil {
				return nil, err
			}
			took, err := timeHeal(ctx, meshHealer{g}, want, time.Minute)
			_ = g.Close()
			if err != nil {
				return nil, err
			}
			o.add(Figure{System: sys, Metric: "heal-to-identical", Unit: "ms", Value: took.ms})
		}
		orders = append(orders, order)
		return o, nil
	}}
	res, err := runScenarios(context.Background(), Spec{Repeat: 3}, fakeEnv(f), []scenario{sc}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if orders[0][0] != KindMesh || orders[1][0] != "crdt-batched" || orders[2][0] != KindMesh {
		t.Errorf("systems' order not rotated run to run: %v", orders)
	}
	rs := res.Ratios()
	if len(rs) != 1 || rs[0].System != "crdt-batched" || rs[0].Metric != "partition/heal-to-identical" {
		t.Fatalf("ratios %+v, want one: crdt-batched / signalmesh heal", rs)
	}
	if r := rs[0].Value; r < 1.8 || r > 2.2 {
		t.Errorf("ratio %.3f, want 2 within 10 %% (figures %+v)", r, res.Figures)
	}
	if m := figure(t, res, "partition/heal-to-identical", KindMesh); len(m.Runs) != 3 || m.Min > m.Value || m.Value > m.Max {
		t.Errorf("median and range over 3 runs: %+v", m)
	}
}

// When put-hook counts run ahead of the contents (an entry counted twice),
// the heal clock runs on until the contents are verified, and says so.
func TestHealClockWhenCountsRunAhead(t *testing.T) {
	f := &fakes{specs: map[string]fakeSpec{KindMesh: {healIn: 300 * time.Millisecond, healWant: 100, overcount: true}}}
	env := fakeEnv(f)
	g, err := startGroup(context.Background(), env, KindMesh, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	h, err := timeHeal(context.Background(), meshHealer{g}, 100, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if h.ms < 300 || h.note == "" {
		t.Errorf("heal %+v, want at least 300 ms, with a note", h)
	}
}

// A run whose latency sample is empty (nothing published) fails.
func TestEmptySampleFailsTheRun(t *testing.T) {
	f := &fakes{specs: map[string]fakeSpec{KindMesh: {publishNothing: true}}}
	sc := scenario{name: "steady", steps: 1, run: func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
		return Steady(ctx, env, 3, 1000, 100*time.Millisecond)
	}}
	_, err := runScenarios(context.Background(), Spec{Repeat: 1}, fakeEnv(f), []scenario{sc}, nil)
	if !errors.Is(err, ErrEmptySample) {
		t.Fatalf("run with an empty sample: %v, want ErrEmptySample", err)
	}
}

func TestAggregate(t *testing.T) {
	fig := func(v float64, notReached bool) []Figure {
		return []Figure{{System: KindGossip, Metric: "p99", Unit: "ms", Value: v, NotReached: notReached}}
	}
	got := aggregate([][]Figure{fig(3, false), fig(0, true), fig(1, false), fig(2, false), fig(5, false)})[0]
	if got.Value != 3 || got.NotReached || got.Min != 1 || !got.MaxNotReached || len(got.Runs) != 5 || got.Runs[1] != nil || *got.Runs[0] != 3 {
		t.Errorf("aggregate: %+v", got)
	}
	got = aggregate([][]Figure{fig(0, true), fig(0, true), fig(1, false)})[0]
	if !got.NotReached || got.span() != "1.00-not reached" {
		t.Errorf("median of mostly lost runs: %+v (%s)", got, got.span())
	}
	if r := rotate([]int{1, 2, 3}, 4); r[0] != 2 || r[2] != 1 {
		t.Errorf("rotate: %v", r)
	}
}

// Curves over repeated runs get error bars: the plot is drawn from the
// medians with the runs' range.
func TestPlotWithErrorBars(t *testing.T) {
	runs := [][]Series{
		{{Plot: "convergence-vs-n", System: KindMesh, X: []float64{2, 4}, Y: []float64{100, 200}}},
		{{Plot: "convergence-vs-n", System: KindMesh, X: []float64{2, 4}, Y: []float64{120, 150}}},
		{{Plot: "convergence-vs-n", System: KindMesh, X: []float64{2, 4}, Y: []float64{110, 400}}},
	}
	s := aggregateSeries(runs)
	if len(s) != 1 || s[0].Y[0] != 110 || s[0].Y[1] != 200 || s[0].YMin[1] != 150 || s[0].YMax[1] != 400 {
		t.Fatalf("aggregated series %+v", s)
	}
	files, err := (&Result{Series: s}).Plot(t.TempDir())
	if err != nil || len(files) != 2 {
		t.Fatalf("plot: %v %v", files, err)
	}
}
