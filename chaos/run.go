package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Spec says what to run. Zero fields take defaults (Short: the CI sizes).
type Spec struct {
	// Command starts a node: it is followed by `signalmesh node` flags.
	// Required; `signalmesh chaos` passes itself and "node".
	Command []string `json:"-"`
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
	// Default 20 s (short 8 s).
	Duration time.Duration `json:"duration"`
	// Rate of publishes per second over all nodes. Default 40 (short 20).
	Rate int `json:"rate"`
	// Settle bounds the wait for quiescence after the heal. Default 60 s.
	Settle time.Duration `json:"settle"`
	// Network: "auto" (namespaces when root and `ip` allow, else
	// loopback), "netns" or "loopback". Default auto.
	Network string `json:"network"`
	// Kinds of faults to draw from. Empty: all the network allows.
	Kinds []Kind `json:"kinds,omitempty"`
	// Dir holds the nodes' data; empty: a temporary directory. It is
	// removed at the end unless Keep.
	Dir  string `json:"-"`
	Keep bool   `json:"-"`
	// Short takes the CI sizes.
	Short bool `json:"short"`
	// Log receives progress lines; nil: none.
	Log io.Writer `json:"-"`
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
			s.Duration = 8 * time.Second
		}
	}
	if s.Settle == 0 {
		s.Settle = 60 * time.Second
	}
	if s.Network == "" {
		s.Network = "auto"
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
	case s.Duration < 4*time.Second:
		return fmt.Errorf("chaos: duration %v, want at least 4s", s.Duration)
	case s.Rate <= 0 || s.Schedules <= 0 || s.Settle <= 0:
		return errors.New("chaos: rate, schedules and settle must be positive")
	case s.Network != "auto" && s.Network != "netns" && s.Network != "loopback":
		return fmt.Errorf("chaos: network %q, want auto, netns or loopback", s.Network)
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
	Seed    uint64        `json:"seed"`
	Nodes   int           `json:"nodes"`
	Network string        `json:"network"`
	Faults  []Fault       `json:"faults"`
	Verdict Verdict       `json:"verdict"`
	Settled time.Duration `json:"settled"` // from the end of the workload to quiescence
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
	var out []Result
	for k := 0; k < spec.Schedules; k++ {
		r, err := runOne(ctx, spec, spec.Seed+uint64(k))
		if err != nil {
			return out, fmt.Errorf("chaos: seed %d: %w", spec.Seed+uint64(k), err)
		}
		out = append(out, r)
	}
	return out, nil
}

func (s Spec) logf(format string, args ...any) {
	if s.Log != nil {
		fmt.Fprintf(s.Log, format+"\n", args...)
	}
}

func runOne(ctx context.Context, spec Spec, seed uint64) (res Result, err error) {
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
	res = Result{Seed: seed, Nodes: spec.Nodes, Network: nw.name(), Faults: Plan(seed, spec.Nodes, spec.Duration, kinds)}
	spec.logf("seed %d: %d nodes, %s; %d faults", seed, spec.Nodes, nw.name(), len(res.Faults))
	c, err := newCluster(spec, seed, dir, nw)
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
	w := newWorkload(c, seed, spec)
	if err := c.exercise(ctx, w, res.Faults); err != nil {
		return res, err
	}
	// Heal everything (the driver lifted each fault; this is belt and
	// braces), bring back any process that died by itself, and wait.
	_ = nw.cut(ctx, nil, c)
	for i, p := range c.procs {
		if !p.running() {
			c.kill(i) // records how it ended
			if err := c.start(ctx, i); err != nil {
				return res, err
			}
		}
	}
	healed := time.Now()
	journals, serr := c.settle(ctx, spec.Settle)
	res.Settled = time.Since(healed)
	if serr != nil {
		spec.logf("  not quiescent after %v: %v", spec.Settle, serr)
	}
	stopErr := c.shutdown()
	stopped = true
	h := History{Nodes: spec.Nodes, Ops: w.ops(), Journals: journals}
	for _, p := range c.procs {
		rec, err := ReadRecord(p.record)
		if err != nil {
			return res, err
		}
		h.Records = append(h.Records, rec)
		h.Ends = append(h.Ends, p.ends)
	}
	res.Verdict = c.verdict(h, serr, stopErr)
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
func newCluster(spec Spec, seed uint64, dir string, nw network) (*cluster, error) {
	c := &cluster{spec: spec, mesh: fmt.Sprintf("chaos-%d", seed), dir: dir, net: nw,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}},
		log:    func(f string, a ...any) { spec.logf("  "+f, a...) }}
	// Short timers so that faults show within a schedule's seconds.
	params := `{"params": {"redial": "500ms", "rebroadcast": "1s", "cause_timeout": "5s"}}`
	if err := os.WriteFile(filepath.Join(dir, "params.json"), []byte(params), 0o644); err != nil {
		return nil, err
	}
	for i := 0; i < spec.Nodes; i++ {
		p := &proc{i: i, dir: filepath.Join(dir, fmt.Sprintf("node-%d", i))}
		p.record = filepath.Join(p.dir, "record.jsonl")
		if err := os.MkdirAll(p.dir, 0o755); err != nil {
			return nil, err
		}
		c.procs = append(c.procs, p)
	}
	return c, nil
}

// exercise runs the workload for the spec's duration while the faults
// happen, and returns when both are over.
func (c *cluster) exercise(ctx context.Context, w *workload, faults []Fault) error {
	var wg sync.WaitGroup
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	wg.Add(1)
	go func() { defer wg.Done(); w.run(wctx, start) }()
	ferr := c.drive(wctx, faults, start)
	if rest := time.Until(start.Add(c.spec.Duration)); rest > 0 && ferr == nil {
		select {
		case <-time.After(rest):
		case <-ctx.Done():
		}
	}
	cancel()
	wg.Wait()
	return errors.Join(ferr, ctx.Err())
}

// verdict checks the history and adds what the harness saw itself:
// processes that died, a mesh that did not settle, a node that did not
// stop cleanly.
func (c *cluster) verdict(h History, settleErr, stopErr error) Verdict {
	v := Check(h)
	for i, p := range c.procs {
		if p.crashes > 0 {
			v.Anomalies = append(v.Anomalies, Anomaly{Kind: "crash", Node: i,
				Detail: fmt.Sprintf("%d node processes ended by themselves (see %s)", p.crashes, filepath.Join(p.dir, "node.log"))})
		}
	}
	if settleErr != nil {
		v.Anomalies = append(v.Anomalies, Anomaly{Kind: "quiescence", Node: -1,
			Detail: fmt.Sprintf("not quiescent %v after the heal: %v", c.spec.Settle, settleErr)})
	}
	if stopErr != nil {
		v.Anomalies = append(v.Anomalies, Anomaly{Kind: "stop", Node: -1, Detail: stopErr.Error()})
	}
	v.OK = len(v.Anomalies) == 0
	return v
}

// awaitMesh waits until every node is connected to every other.
func (c *cluster) awaitMesh(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok := true
		for i := range c.procs {
			var st struct {
				Peers []string `json:"peers"`
			}
			if err := c.get(ctx, i, "/v1/status", &st); err != nil || len(st.Peers) < len(c.procs)-1 {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the nodes did not connect to each other in 30 s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *cluster) get(ctx context.Context, i int, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.net.api(i)+path, nil)
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

// settle waits until every journal has the same digest on two polls in a
// row and every node's record holds every journaled signal, then returns
// the journals (ids in replay order). On timeout it returns them as they
// are, with the reason.
func (c *cluster) settle(ctx context.Context, limit time.Duration) ([][]string, error) {
	deadline := time.Now().Add(limit)
	last := ""
	var why error
	for {
		digest, same, err := c.digests(ctx)
		switch {
		case err != nil:
			why = err
		case !same:
			why = errors.New("the journals differ")
		case digest != last:
			why = errors.New("the journals still change")
		default:
			journals, err := c.journals(ctx)
			if err == nil {
				err = c.recorded(journals)
			}
			if why = err; err == nil {
				return journals, nil
			}
		}
		last = digest
		if time.Now().After(deadline) {
			journals, err := c.journals(ctx)
			return journals, errors.Join(why, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// digests returns node 0's journal size and digest, and whether every node
// has the same.
func (c *cluster) digests(ctx context.Context) (string, bool, error) {
	common, same := "", true
	for i := range c.procs {
		var d struct {
			Count  int    `json:"count"`
			Digest string `json:"digest"`
		}
		if err := c.get(ctx, i, "/v1/digest", &d); err != nil {
			return "", false, err
		}
		key := fmt.Sprint(d.Count, " ", d.Digest)
		if i == 0 {
			common = key
		} else if key != common {
			same = false
		}
	}
	return common, same, nil
}

func (c *cluster) journals(ctx context.Context) ([][]string, error) {
	out := make([][]string, len(c.procs))
	for i := range c.procs {
		var sigs []struct {
			ID string `json:"id"`
		}
		if err := c.get(ctx, i, "/v1/replay", &sigs); err != nil {
			return out, err
		}
		for _, s := range sigs {
			out[i] = append(out[i], s.ID)
		}
	}
	return out, nil
}

func (c *cluster) recorded(journals [][]string) error {
	for i, p := range c.procs {
		rec, err := ReadRecord(p.record)
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, e := range rec {
			have[e.ID] = true
		}
		for _, id := range journals[i] {
			if !have[id] {
				return fmt.Errorf("node %d has not delivered %s yet", i, id)
			}
		}
	}
	return nil
}

// drive applies the faults at their times and lifts each after its
// duration. Faults never overlap.
func (c *cluster) drive(ctx context.Context, faults []Fault, start time.Time) error {
	wait := func(until time.Time) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Until(until)):
			return true
		}
	}
	n := len(c.procs)
	for _, f := range faults {
		if !wait(start.Add(f.At)) {
			return nil
		}
		end := start.Add(f.At + f.For)
		c.log("fault %s", f)
		var err error
		switch f.Kind {
		case Halves, Bridge:
			err = c.net.cut(ctx, cutPairs(n, f.Groups), c)
			wait(end)
			err = errors.Join(err, c.net.cut(context.WithoutCancel(ctx), nil, c))
		case Isolate:
			err = c.net.cut(ctx, cutPairs(n, isolateGroups(n, f.Node)), c)
			wait(end)
			err = errors.Join(err, c.net.cut(context.WithoutCancel(ctx), nil, c))
		case Flap:
			for on := true; time.Now().Before(end) && ctx.Err() == nil; on = !on {
				var pairs [][2]int
				if on {
					pairs = cutPairs(n, f.Groups)
				}
				err = errors.Join(err, c.net.cut(ctx, pairs, c))
				wait(minTime(end, time.Now().Add(f.Period)))
			}
			err = errors.Join(err, c.net.cut(context.WithoutCancel(ctx), nil, c))
		case Kill:
			c.kill(f.Node)
			if wait(end) { // interrupted: the node stays down, Run is ending
				err = c.start(ctx, f.Node)
			}
		case Pause:
			c.pause(f.Node, true)
			wait(end)
			c.pause(f.Node, false)
		case Slow:
			err = c.net.slow(f.Node, true)
			wait(end)
			err = errors.Join(err, c.net.slow(f.Node, false))
		}
		if err != nil {
			return fmt.Errorf("fault %s: %w", f, err)
		}
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// workload publishes at a steady rate to random nodes, with every
// consistency level, some signals the effects of ones the node delivered.
type workload struct {
	c    *cluster
	spec Spec
	rng  *rand.Rand
	seed uint64

	mu     sync.Mutex
	all    []Op
	kinds  map[string]string // id → consistency
	offset []int64           // per node: how far its record was read
	causes [][]string        // per node: journaled ids it delivered
}

func newWorkload(c *cluster, seed uint64, spec Spec) *workload {
	n := len(c.procs)
	return &workload{c: c, spec: spec, seed: seed, rng: rand.New(rand.NewPCG(seed, 7)),
		kinds: map[string]string{}, offset: make([]int64, n), causes: make([][]string, n)}
}

func (w *workload) ops() []Op {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.all)
}

func (w *workload) run(ctx context.Context, start time.Time) {
	sem := make(chan struct{}, 16) // publishes in flight; when full the next waits
	var wg sync.WaitGroup
	defer wg.Wait()
	every := time.Second / time.Duration(w.spec.Rate)
	t := time.NewTicker(every)
	defer t.Stop()
	for k := 0; ; k++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		op := w.next(k, time.Since(start))
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			w.publish(op)
		}()
	}
}

// next draws the k-th publish.
func (w *workload) next(k int, at time.Duration) Op {
	n := len(w.c.procs)
	op := Op{ID: fmt.Sprintf("s%d-%d", w.seed, k), Node: w.rng.IntN(n), At: at}
	switch r := w.rng.IntN(100); {
	case r < 15:
		op.Consistency = "weak"
	case r < 45:
		op.Consistency = fmt.Sprintf("quorum:%d", 1+w.rng.IntN(min(2, n-1)))
	default:
		op.Consistency = "eventual"
	}
	if op.Consistency != "weak" && w.rng.IntN(100) < 35 {
		if cs := w.delivered(op.Node); len(cs) > 0 {
			op.Cause = cs[w.rng.IntN(len(cs))]
		}
	}
	return op
}

// delivered reads what node i's record gained since the last call and
// returns the journaled signals it has delivered.
func (w *workload) delivered(i int) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	f, err := os.Open(w.c.procs[i].record)
	if err != nil {
		return w.causes[i]
	}
	defer f.Close()
	if _, err := f.Seek(w.offset[i], io.SeekStart); err != nil {
		return w.causes[i]
	}
	b, _ := io.ReadAll(f)
	if k := bytes.LastIndexByte(b, '\n'); k >= 0 {
		b = b[:k+1]
		w.offset[i] += int64(len(b))
		for _, line := range bytes.Split(b[:len(b)-1], []byte("\n")) {
			var e Entry
			if json.Unmarshal(line, &e) == nil && e.ID != "" && !e.Again && w.kinds[e.ID] != "weak" && w.kinds[e.ID] != "" {
				w.causes[i] = append(w.causes[i], e.ID)
			}
		}
	}
	return w.causes[i]
}

func (w *workload) publish(op Op) {
	typ := "chaos.cause"
	ev := map[string]any{"specversion": "1.0", "id": op.ID, "source": "/chaos", "type": typ, "data": map[string]any{"node": op.Node}}
	if op.Cause != "" {
		ev["type"], ev["causeid"] = "chaos.effect", op.Cause
	}
	body, _ := json.Marshal(ev)
	w.mu.Lock()
	w.kinds[op.ID] = op.Consistency
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://%s/v1/publish?consistency=%s&timeout=2s", w.c.net.api(op.Node), op.Consistency)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	t0 := time.Now()
	resp, err := w.c.client.Do(req)
	op.Took = time.Since(t0)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		op.Outcome, op.Err = Refused, err.Error() // the node is down: nothing was sent
	case err != nil:
		op.Outcome, op.Err = Unknown, err.Error()
	default:
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusAccepted:
			op.Outcome = Acked
		case resp.StatusCode == http.StatusGatewayTimeout && strings.HasPrefix(op.Consistency, "quorum"):
			op.Outcome, op.Err = QuorumTimeout, strings.TrimSpace(string(msg))
		case resp.StatusCode >= 500:
			// The node may have journaled it before failing.
			op.Outcome, op.Err = Unknown, resp.Status+": "+strings.TrimSpace(string(msg))
		default:
			op.Outcome, op.Err = Refused, resp.Status+": "+strings.TrimSpace(string(msg))
		}
	}
	w.mu.Lock()
	w.all = append(w.all, op)
	w.mu.Unlock()
}
