package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Spec says what to run. Zero fields take defaults (Short: the CI sizes).
type Spec struct {
	// Command starts a node: it is followed by `signalmesh node` flags.
	// Required; `signalmesh chaos` passes itself and "node".
	Command []string `json:"-"`
	// HostileCommand starts a hostile node (Parts.Hostile); empty:
	// Command with its last word "node" made "hostile".
	HostileCommand []string `json:"-"`
	// Env is added to the nodes' environment.
	Env []string `json:"-"`
	// Nodes is how many node processes run, 3 to 9. Default 5 (short 3).
	Nodes int `json:"nodes"`
	// Seed of the first schedule; schedule k uses Seed+k. Default 1.
	Seed uint64 `json:"seed"`
	// Schedules is how many seeded schedules run, one after another, each
	// on fresh nodes. Default 1 (short 3).
	Schedules int `json:"schedules"`
	// Duration of each schedule's workload; faults happen within it.
	// Default 20 s (short 12 s).
	Duration time.Duration `json:"duration"`
	// Rate of publishes per second over all nodes. Default 40 (short 20).
	Rate int `json:"rate"`
	// Settle bounds the wait for quiescence after the heal. Default 120 s
	// (short 30 s): with ephemeral nodes killed, a lost cause (cause_wait,
	// 45 s; short a third) and a lost dependency behind it (dep_wait, 35 s;
	// short a sixth) may be given up one after the other, after a node's
	// restart too.
	Settle time.Duration `json:"settle"`
	// Network: "auto" (namespaces when root and `ip` allow, else
	// loopback), "netns" or "loopback". Default auto.
	Network string `json:"network"`
	// Topology of the namespaces: "flat" (the default: one bridge, every
	// node reaches every other) or "nat" (TopologyNAT: public relay
	// nodes, the others behind NAT routers; see the package doc). "nat"
	// needs network namespaces and iptables: it does not fall back.
	Topology string `json:"topology,omitempty"`
	// Kinds of faults to draw from. Empty: all the network allows.
	Kinds []Kind `json:"kinds,omitempty"`
	// Dir holds the nodes' data; empty: a temporary directory. It is
	// removed at the end unless Keep.
	Dir  string `json:"-"`
	Keep bool   `json:"-"`
	// Short takes the CI sizes.
	Short bool `json:"short"`
	// Cover deals every fault kind to the schedules (each kind once, in a
	// seeded order; the CI run), instead of drawing kinds at random.
	Cover bool `json:"cover,omitempty"`
	// Parts are the workload's parts, each switchable; the zero Parts
	// means DefaultParts.
	Parts Parts `json:"parts"`
	// Faults, when not nil, are the schedule's faults instead of those
	// Plan draws (a shrunk schedule; Schedules must be 1).
	Faults []Fault `json:"faults,omitempty"`
	// Log receives progress lines; nil: none.
	Log io.Writer `json:"-"`
	// OnResult, when set, is called with each schedule's result as soon
	// as it is known (progress, partial result files).
	OnResult func(Result) `json:"-"`
}

// WithDefaults fills the zero fields.
func (s Spec) WithDefaults() Spec {
	def := func(v *int, full, short int) {
		if *v == 0 {
			*v = full
			if s.Short {
				*v = short
			}
		}
	}
	def(&s.Nodes, 5, 3)
	def(&s.Schedules, 1, 3)
	def(&s.Rate, 40, 20)
	if s.Seed == 0 {
		s.Seed = 1
	}
	if s.Duration == 0 {
		s.Duration = 20 * time.Second
		if s.Short {
			s.Duration = 12 * time.Second
		}
	}
	if s.Settle == 0 {
		s.Settle = 120 * time.Second
		if s.Short {
			s.Settle = 30 * time.Second
		}
	}
	if s.Network == "" {
		s.Network = "auto"
	}
	if s.Parts == (Parts{}) {
		s.Parts = DefaultParts(s.Short)
	}
	return s
}

// Validate reports the first bad field.
func (s Spec) Validate() error {
	switch {
	case len(s.Command) == 0:
		return errors.New("chaos: Spec.Command is required")
	case s.Nodes < 3 || s.Nodes > 9:
		return fmt.Errorf("chaos: %d nodes, want 3 to 9", s.Nodes)
	case s.Faults != nil && s.Schedules != 1:
		return errors.New("chaos: given faults are for one schedule")
	case s.Parts.Ephemeral < 0 || s.Parts.Ephemeral > 200:
		return fmt.Errorf("chaos: %d ephemeral nodes, want 0 to 200", s.Parts.Ephemeral)
	case s.Parts.Hostile && len(s.hostileCommand()) == 0:
		return errors.New("chaos: a hostile node needs Spec.HostileCommand")
	case s.Duration < 4*time.Second:
		return fmt.Errorf("chaos: duration %v, want at least 4s", s.Duration)
	case s.Rate <= 0 || s.Schedules <= 0 || s.Settle <= 0:
		return errors.New("chaos: rate, schedules and settle must be positive")
	case s.Network != "auto" && s.Network != "netns" && s.Network != "loopback":
		return fmt.Errorf("chaos: network %q, want auto, netns or loopback", s.Network)
	case s.Topology != "" && s.Topology != TopologyFlat && s.Topology != TopologyNAT:
		return fmt.Errorf("chaos: topology %q, want flat or nat", s.Topology)
	case s.Topology == TopologyNAT && s.Network == "loopback":
		return errors.New("chaos: the NAT topology needs network namespaces, not loopback")
	}
	for _, k := range s.Kinds {
		if !slices.Contains(AllKinds, k) {
			return fmt.Errorf("chaos: unknown fault %q", k)
		}
	}
	return nil
}

// Result is one schedule's run.
type Result struct {
	Seed    uint64 `json:"seed"`
	Nodes   int    `json:"nodes"`
	Network string `json:"network"`
	// Spec is the run's spec (replay: Spec with Seed set to this seed and
	// Schedules 1 runs this schedule again); Setup what the seed drew.
	Spec    Spec          `json:"spec"`
	Setup   Setup         `json:"setup"`
	Faults  []Fault       `json:"faults"`
	Verdict Verdict       `json:"verdict"`
	Settled time.Duration `json:"settled"` // from the end of the workload to quiescence
	// Hostile is the hostile node's report, when one ran.
	Hostile *HostileReport `json:"hostile,omitempty"`
	// Links is how the edge nodes reached each other at the end (the NAT
	// topology only).
	Links *Links `json:"links,omitempty"`
	// Explain is the smallest history showing the anomalies, if any.
	Explain string `json:"explain,omitempty"`
	// Dir holds the nodes' data, logs and records when they were kept
	// (Spec.Keep, or a failed verdict).
	Dir string `json:"dir,omitempty"`
}

// Run runs spec.Schedules schedules, one after another, and returns their
// results. It stops at the first schedule that cannot run (an error), not
// at one whose verdict fails. Everything it starts (processes, namespaces,
// links, directories) is gone when it returns, also when ctx ends early.
func Run(ctx context.Context, spec Spec) ([]Result, error) {
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if spec.Log != nil { // faults, ephemeral nodes and the workload log at once
		spec.Log = &lockedWriter{w: spec.Log}
	}
	var out []Result
	for k := 0; k < spec.Schedules; k++ {
		r, err := runOne(ctx, spec, spec.Seed+uint64(k), k)
		if err != nil {
			return out, fmt.Errorf("chaos: seed %d: %w", spec.Seed+uint64(k), err)
		}
		out = append(out, r)
		kinds := map[string]int{}
		for _, a := range r.Verdict.Anomalies {
			kinds[a.Kind]++
		}
		spec.logf("seed %d: ok=%v, %d origins, anomalies %v", r.Seed, r.Verdict.OK, r.Verdict.Origins, kinds)
		shown := map[string]int{} // at once, not only in the summary at the end: a long run's first failures can be read while it goes on
		for _, a := range r.Verdict.Anomalies {
			if shown[a.Kind]++; shown[a.Kind] <= 3 {
				spec.logf("  %s: node %d: %s %s %s", a.Kind, a.Node, a.Source, a.ID, a.Detail)
			}
		}
		if spec.OnResult != nil {
			spec.OnResult(r)
		}
	}
	return out, nil
}

func (s Spec) logf(format string, args ...any) {
	if s.Log != nil {
		fmt.Fprintf(s.Log, format+"\n", args...)
	}
}

func runOne(ctx context.Context, spec Spec, seed uint64, index int) (res Result, err error) {
	CleanStale()
	dir, err := workDir(spec, seed)
	if err != nil {
		return res, err
	}
	defer func() {
		// Kept for inspection with -keep, or when the verdict failed (the
		// nodes' logs, data and records are the evidence).
		if spec.Keep || (err == nil && !res.Verdict.OK) {
			res.Dir = dir
			return
		}
		_ = os.RemoveAll(dir)
	}()
	nw, err := openNetwork(spec)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, nw.close()) }()
	kinds, err := kindsFor(spec, nw)
	if err != nil {
		return res, err
	}
	res = Result{Seed: seed, Nodes: spec.Nodes, Network: nw.name(), Spec: spec, Setup: drawSetup(seed, index, spec.Parts, spec.Cover)}
	if nw.relays() != nil {
		// The edges bootstrap to the relays alone and find each other by
		// discovery: there is no chain to keep.
		res.Setup.Chain = false
	}
	if spec.Parts.Retention && res.Setup.Outage == 0 {
		res.Setup.Doomed = max(1, spec.Rate*int(spec.Duration/time.Second)/2) // the first half
	}
	if spec.Cover {
		kinds = Deal(spec.Seed, kinds, spec.Schedules)[index]
	}
	switch {
	case spec.Faults != nil:
		res.Faults = spec.Faults
	case res.Setup.Outage == 0 && len(kinds) > 0:
		res.Faults = Plan(seed, spec.Nodes, spec.Duration, kinds, spec.Cover)
	}
	spec.logf("seed %d: %d nodes, %s; %d faults; %s", seed, spec.Nodes, nw.name(), len(res.Faults), res.Setup)
	c, err := newCluster(spec, seed, dir, nw, res.Setup)
	if err != nil {
		return res, err
	}
	defer c.client.CloseIdleConnections()
	stopped := false
	defer func() {
		if !stopped {
			for i := range c.procs {
				c.kill(i)
			}
		}
	}()
	for i := range c.procs {
		if err := c.start(ctx, i); err != nil {
			return res, err
		}
	}
	if err := c.awaitMesh(ctx); err != nil {
		return res, err
	}
	w := newWorkload(c, seed, spec, res.Setup)
	eph, err := c.exercise(ctx, w, res.Faults)
	if err != nil {
		return res, err
	}
	h, probeErr, settleErr, err := c.finish(ctx, w, res.Faults, &res)
	if err == nil && nw.relays() != nil {
		res.Links = c.links(ctx)
		spec.logf("seed %d: edge links at the end: %s", seed, res.Links)
	}
	stopErr := c.shutdown()
	stopped = true
	if err != nil {
		return res, err
	}
	h.Ephemeral = eph
	h.Hostile, h.HostileOn, res.Hostile = w.hostileReport, res.Setup.Hostile, w.hostileReport
	if err := c.collect(&h); err != nil {
		return res, err
	}
	if err := c.collectGroup(&h, w.start, res.Faults); err != nil {
		return res, err
	}
	h.Expect = expect(res.Setup, res.Faults)
	h.Doomed = res.Setup.Doomed
	res.Verdict = c.verdict(h, probeErr, settleErr, stopErr)
	if !res.Verdict.OK {
		res.Explain = Explain(h, res.Faults, res.Verdict)
	}
	return res, nil
}

// workDir makes the directory of one schedule.
func workDir(spec Spec, seed uint64) (string, error) {
	if spec.Dir == "" {
		return os.MkdirTemp("", fmt.Sprintf("signalmesh-chaos-%d-", os.Getpid()))
	}
	dir := filepath.Join(spec.Dir, fmt.Sprintf("seed-%d", seed))
	return dir, os.MkdirAll(dir, 0o755)
}

// openNetwork makes namespaces when the spec asks for them or, with
// "auto", when this process can; loopback otherwise.
func openNetwork(spec Spec) (network, error) {
	if spec.Topology == TopologyNAT {
		if !netnsAvailable() {
			return nil, errors.New("the NAT topology needs network namespaces (root and the ip command)")
		}
		return newNATNet(spec.Nodes)
	}
	if spec.Network == "netns" || (spec.Network == "auto" && netnsAvailable()) {
		nn, err := newNetnsNet(spec.Nodes)
		if err != nil {
			return nil, err
		}
		return nn, nil
	}
	l, err := newLoopNet(spec.Nodes)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// kindsFor is the faults to draw from on this network.
func kindsFor(spec Spec, nw network) ([]Kind, error) {
	kinds := spec.Kinds
	if len(kinds) == 0 {
		kinds = AllKinds
	}
	if !nw.canSlow() {
		kinds = slices.DeleteFunc(slices.Clone(kinds), func(k Kind) bool { return k == Slow })
		if len(kinds) == 0 {
			return nil, errors.New("slow links need network namespaces")
		}
	}
	return kinds, nil
}

// newCluster lays out the nodes' directories and shared parameters.
func newCluster(spec Spec, seed uint64, dir string, nw network, setup Setup) (*cluster, error) {
	c := &cluster{spec: spec, mesh: fmt.Sprintf("chaos-%d", seed), dir: dir, net: nw, setup: setup, cuts: map[int][][2]int{},
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}},
		log:    func(f string, a ...any) { spec.logf("  "+f, a...) }}
	// Short timers so that faults show within a schedule's seconds.
	// A cause that never comes (an ephemeral node killed before anyone had
	// its signal) is given up after cause_wait; so is a dependency lost
	// that way after dep_wait (a killed ephemeral node's signal that
	// another ephemeral node had delivered before it published), and a
	// hostile node's flood, which waits for predecessors that never exist.
	// dep_wait is below cause_wait (a cause held by a lost dependency
	// comes before its effects give it up), and above what a dependency
	// that exists can take to arrive: a DAG fetch that waits for a block
	// whose holder restarted or left fails after 20 s and the repair walk
	// fetches it within the next 10 s (crdt), with a fault's own length on
	// top. At 15 s (a sixth of the old 90 s settle) the harness gave up
	// dependencies that were on their way and failed its own order checks
	// (seeds 12069, 12070): a full run takes at least 35 s and 45 s (a
	// sixth and a third of its settle, as the short one does: its faults
	// are fewer and shorter).
	params := map[string]any{"redial": "500ms", "rebroadcast": "1s", "cause_timeout": "5s"}
	if setup.Ephemeral > 0 || setup.Hostile { // without them no cause is lost for good: the node's default (2 min)
		cause, dep := spec.Settle/3, spec.Settle/6
		if !spec.Short {
			cause, dep = max(cause, 45*time.Second), max(dep, 35*time.Second)
		}
		params["cause_wait"] = cause.String()
		params["dep_wait"] = dep.String()
		c.depWait = dep
	}
	if setup.Chain { // a chain stays a chain: the nodes must not find each other by discovery
		params["discover"] = "-1s"
	}
	if nw.relays() != nil {
		// The edges know only the relays: they find each other by the
		// announcements, which go every second (as in the node tests'
		// NAT topology), not every 10 s.
		params["discover"] = "1s"
	}
	if setup.CausalBuffer > 0 {
		params["causal_buffer"] = setup.CausalBuffer
	}
	if setup.SubscriberQueue > 0 {
		params["subscriber_queue"] = setup.SubscriberQueue
	}
	if setup.Lease != "" {
		params["lease"] = setup.Lease
	}
	cfg := map[string]any{"params": params}
	if setup.Doomed > 0 {
		// Parts.Retention: every signal is kept retentionAge from its time
		// attribute; the doomed ones are published with a time that puts
		// them near its end. Rounds run often, so that blocks leave the
		// disk while the faults happen.
		cfg["retention"] = []map[string]any{{"pattern": "**", "max_age": retentionAge.String()}}
		params["prune"] = pruneEvery.String()
	}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "params.json"), b, 0o644); err != nil {
		return nil, err
	}
	for i := 0; i < spec.Nodes; i++ {
		p := &proc{i: i, dir: filepath.Join(dir, fmt.Sprintf("node-%d", i))}
		p.record = filepath.Join(p.dir, "record.jsonl")
		p.group = filepath.Join(p.dir, "group.jsonl")
		if err := os.MkdirAll(p.dir, 0o755); err != nil {
			return nil, err
		}
		c.procs = append(c.procs, p)
	}
	return c, nil
}

// exercise runs the workload (and the ephemeral nodes) for the spec's
// duration while the faults happen, and returns when all are over.
func (c *cluster) exercise(ctx context.Context, w *workload, faults []Fault) ([]Ephemeral, error) {
	var wg sync.WaitGroup
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.start = time.Now()
	var eph []Ephemeral
	if w.setup.Outage > 0 {
		return nil, c.outage(wctx, w)
	}
	wg.Add(2)
	go func() { defer wg.Done(); w.run(wctx) }()
	if w.setup.Hostile {
		wg.Add(1)
		go func() { defer wg.Done(); w.hostileReport = w.hostile(wctx) }()
	}
	go func() {
		defer wg.Done()
		eph = w.ephemerals(wctx, planEphemeral(w.seed, w.setup.Ephemeral, len(c.procs), c.spec.Duration))
	}()
	ferr := c.drive(wctx, faults, w.start)
	if rest := time.Until(w.start.Add(c.spec.Duration)); rest > 0 && ferr == nil {
		select {
		case <-time.After(rest):
		case <-ctx.Done():
		}
	}
	cancel()
	wg.Wait()
	return eph, errors.Join(ferr, ctx.Err())
}

// verdict checks the history and adds what the harness saw itself:
// processes that died, probes that failed, a mesh that did not settle, a
// node that did not stop cleanly.
func (c *cluster) verdict(h History, probeErr, settleErr, stopErr error) Verdict {
	v := Check(h)
	for i, p := range c.procs {
		if p.crashes > 0 {
			v.Anomalies = append(v.Anomalies, Anomaly{Kind: "crash", Node: i,
				Detail: fmt.Sprintf("%d node processes ended by themselves (see %s)", p.crashes, filepath.Join(p.dir, "node.log"))})
		}
	}
	if probeErr != nil {
		v.Anomalies = append(v.Anomalies, Anomaly{Kind: "probe", Node: -1, Detail: probeErr.Error()})
	}
	if settleErr != nil {
		v.Anomalies = append(v.Anomalies, Anomaly{Kind: "quiescence", Node: -1,
			Detail: fmt.Sprintf("not quiescent %v after the heal: %v", c.spec.Settle, settleErr)})
	}
	if stopErr != nil {
		v.Anomalies = append(v.Anomalies, Anomaly{Kind: "stop", Node: -1, Detail: stopErr.Error()})
	}
	if v.Counts == nil {
		v.Counts = map[string]int{}
	}
	for _, a := range v.Anomalies {
		if a.Kind == "crash" || a.Kind == "probe" || a.Kind == "quiescence" || a.Kind == "stop" {
			v.Counts[a.Kind]++
		}
	}
	v.OK = len(v.Anomalies) == 0
	return v
}

// awaitMesh waits until every node is connected to every other (in a
// chain, to its neighbours) and, with the group part, knows every node's
// group member.
func (c *cluster) awaitMesh(ctx context.Context) error {
	wait := 30 * time.Second
	if c.net.relays() != nil {
		wait = 60 * time.Second // the edges find each other by discovery, through the relays
	}
	deadline := time.Now().Add(wait)
	for {
		ok := true
		for i := range c.procs {
			want := len(c.procs) - 1
			if c.setup.Chain {
				want = 2
				if i == 0 || i == len(c.procs)-1 {
					want = 1
				}
			}
			var st struct {
				Peers []string `json:"peers"`
				Node  struct {
					Groups map[string][]string
				} `json:"node"`
			}
			err := c.get(ctx, i, "/v1/status", &st)
			if c.setup.Group != "" && len(st.Node.Groups[groupName]) < len(c.procs) {
				want = len(c.procs) // not every member heard of yet
			}
			if err != nil || len(st.Peers) < want {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the nodes did not connect to each other (or hear of every group member) in %v", wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *cluster) get(ctx context.Context, i int, path string, v any) error {
	return c.getAt(ctx, c.net.api(i), path, v)
}

func (c *cluster) getAt(ctx context.Context, addr, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
