package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"
)

// Spec says what to run. Zero fields take the standard suite's values
// (Short: the CI suite's).
type Spec struct {
	// Scenarios to run, from AllScenarios. Empty: all.
	Scenarios []string `json:"scenarios"`
	// Processes runs every peer in an OS process of its own instead of all
	// in this one (the go-ds-crdt baselines stay in this process).
	Processes bool `json:"processes"`
	// Seed drives every random choice; a run is reproducible from it.
	// Default 1.
	Seed uint64 `json:"seed"`
	// Payload is the data size of each signal. Default 100 bytes.
	Payload int `json:"payload"`
	// Peers in the partition, rejoin, burst, steady, mixed and churn
	// scenarios. Default 8 (short 3).
	Peers int `json:"peers"`
	// Groups a partition cuts the peers into. Default 2.
	Groups int `json:"groups"`
	// Signals per side of the partition. Default 10,000 (short 100).
	PerSide int `json:"per_side"`
	// Signals written while one peer is away. Default 1,000 (short 100).
	Rejoin int `json:"rejoin"`
	// Signals in the burst. Default 10,000 (short 500).
	Burst int `json:"burst"`
	// Signals in each durable-publish run. Default 100,000 (short 1,000).
	Durable int `json:"durable"`
	// Rate (signals/s) and Seconds of the steady, mixed and churn
	// scenarios. Default 1,000 for 5 s (short: 200 for 1 s).
	Rate    int     `json:"rate"`
	Seconds float64 `json:"seconds"`
	// ScaleN are the peer counts of the scale sweep. Default 2, 4, 8, 16,
	// 32 (short 2, 3); ScalePerSide and ScaleBurst its sizes: default 1,000
	// and 2,000 (short 50 and 200).
	ScaleN       []int `json:"scale_n"`
	ScalePerSide int   `json:"scale_per_side"`
	ScaleBurst   int   `json:"scale_burst"`
	// History lengths the history sweep journals before its partition.
	// Default 0, 10,000, 50,000 (short 0, 500).
	History []int `json:"history"`
	// CatchUp are the journal sizes a fresh peer catches up on in the
	// catchup scenario (not in the standard suite: name it). Default
	// 100,000 and 1,000,000 (short 2,000).
	CatchUp []int `json:"catch_up,omitempty"`
	// Reopen are the journal sizes the reopen scenario (not in the
	// standard suite: name it) journals on disk, then reopens three times,
	// each in a fresh process. Default 20,000 and 200,000 (short 2,000).
	Reopen []int `json:"reopen,omitempty"`
	// Join are the journal sizes (signals ever published) the join
	// scenario (not in the standard suite: name it) has a fresh peer join,
	// of which JoinRetained are within retention. Default 10,000, 100,000
	// and 1,000,000 with 10,000 retained (short 2,000 with 200).
	Join         []int `json:"join,omitempty"`
	JoinRetained int   `json:"join_retained,omitempty"`
	// The retention scenario (not in the standard suite: name it):
	// RetentionPeers peers on disk publish Rate signals a second for
	// RetentionFor under a retention of RetentionKeep. Default 4 peers, 60
	// s, 10 minutes (short 3, 5 s, 20 s).
	RetentionPeers int           `json:"retention_peers,omitempty"`
	RetentionKeep  time.Duration `json:"retention_keep,omitempty"`
	RetentionFor   time.Duration `json:"retention_for,omitempty"`
	// Repeat runs each scenario this many times, the systems' order
	// rotated by one each time, and reports each figure's median, minimum
	// and maximum. Default 5 (short 1).
	Repeat int `json:"repeat"`
	// Short runs small counts and skips the slowest baselines, for CI.
	Short bool `json:"short"`
}

// AllScenarios are the scenarios of the standard suite, in the order Run
// runs them.
var AllScenarios = []string{"partition", "rejoin", "burst", "steady", "mixed", "churn", "scale", "history", "durable"}

// ExtraScenarios run only when named: they take minutes.
var ExtraScenarios = []string{"catchup", "slow-consumer", "flood", "reopen", "consumer-group", "join", "retention"}

// WithDefaults fills the zero fields with the standard (or short) suite's values.
func (s Spec) WithDefaults() Spec {
	if len(s.Scenarios) == 0 {
		s.Scenarios = AllScenarios
	}
	def := func(v *int, full, short int) {
		if *v == 0 {
			*v = full
			if s.Short {
				*v = short
			}
		}
	}
	if s.Seed == 0 {
		s.Seed = 1
	}
	def(&s.Payload, 100, 100)
	def(&s.Peers, 8, 3)
	def(&s.Groups, 2, 2)
	def(&s.PerSide, 10000, 100)
	def(&s.Rejoin, 1000, 100)
	def(&s.Burst, 10000, 500)
	def(&s.Durable, 100000, 1000)
	def(&s.Repeat, 5, 1)
	def(&s.Rate, 1000, 200)
	def(&s.ScalePerSide, 1000, 50)
	def(&s.ScaleBurst, 2000, 200)
	if s.Seconds == 0 {
		s.Seconds = 5
		if s.Short {
			s.Seconds = 1
		}
	}
	if len(s.ScaleN) == 0 {
		s.ScaleN = []int{2, 4, 8, 16, 32}
		if s.Short {
			s.ScaleN = []int{2, 3}
		}
	}
	if len(s.CatchUp) == 0 {
		s.CatchUp = []int{100000, 1000000}
		if s.Short {
			s.CatchUp = []int{2000}
		}
	}
	if len(s.Reopen) == 0 {
		s.Reopen = []int{20000, 200000}
		if s.Short {
			s.Reopen = []int{2000}
		}
	}
	if len(s.Join) == 0 {
		s.Join = []int{10000, 100000, 1000000}
		if s.Short {
			s.Join = []int{2000}
		}
	}
	def(&s.JoinRetained, 10000, 200)
	def(&s.RetentionPeers, 4, 3)
	if s.RetentionKeep == 0 {
		s.RetentionKeep = time.Minute
		if s.Short {
			s.RetentionKeep = 5 * time.Second
		}
	}
	if s.RetentionFor == 0 {
		s.RetentionFor = 10 * time.Minute
		if s.Short {
			s.RetentionFor = 20 * time.Second
		}
	}
	if len(s.History) == 0 {
		s.History = []int{0, 10000, 50000}
		if s.Short {
			s.History = []int{0, 500}
		}
	}
	return s
}

// Validate reports the first bad field.
func (s Spec) Validate() error {
	for _, sc := range s.Scenarios {
		if !slices.Contains(AllScenarios, sc) && !slices.Contains(ExtraScenarios, sc) {
			return fmt.Errorf("bench: unknown scenario %q (%s)", sc, strings.Join(append(AllScenarios, ExtraScenarios...), ", "))
		}
	}
	if s.Peers < 2 || s.Groups < 2 || s.Groups > s.Peers {
		return fmt.Errorf("bench: need at least 2 peers and 2 <= groups <= peers (peers %d, groups %d)", s.Peers, s.Groups)
	}
	for _, n := range s.ScaleN {
		if n < 2 {
			return fmt.Errorf("bench: scale peer count %d < 2", n)
		}
	}
	for _, h := range s.History {
		if h < 0 {
			return fmt.Errorf("bench: negative history %d", h)
		}
	}
	for _, n := range s.Join {
		if n < 1 {
			return fmt.Errorf("bench: join of a journal of %d", n)
		}
	}
	if s.PerSide < 1 || s.Repeat < 1 || s.Rejoin < 1 || s.Burst < 1 || s.Durable < 1 || s.Rate < 1 || s.Seconds <= 0 || s.Payload < 0 ||
		s.ScalePerSide < 1 || s.ScaleBurst < 1 || s.JoinRetained < 1 || s.RetentionPeers < 2 || s.RetentionKeep <= 0 || s.RetentionFor <= s.RetentionKeep {
		return errors.New("bench: counts, rate and seconds must be positive")
	}
	return nil
}

// Result is one run: what was asked, where, and what was measured.
type Result struct {
	Spec     Spec      `json:"spec"`
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Machine  Machine   `json:"machine"`
	Revision string    `json:"revision"`
	// Shape is the tc qdisc every link had ("" for none): see bench -shape.
	Shape   string   `json:"shape,omitempty"`
	Figures []Figure `json:"figures"`
	Series  []Series `json:"series"`
	// Missing names every signal a subscriber never got, per scenario,
	// run, system and peer.
	Missing []Missing `json:"missing"`
	// Systems says what each system is: its options and its payload.
	Systems map[string]string `json:"systems"`
}

// systemNotes describe every system a scenario may run, payload included.
func systemNotes(payload int) map[string]string {
	return map[string]string{
		KindMesh: fmt.Sprintf("a signalmesh node (node.New, default Params): a CloudEvents signal with %d bytes of data, "+
			"binary-encoded with its id, type, source, time and causal stamp; gossip frames carry a commit batch each", payload),
		KindGossip: fmt.Sprintf("raw go-libp2p-pubsub GossipSub, default options; a message is \"<id> <%d bytes>\"", payload),
		KindGossipTuned: fmt.Sprintf("raw GossipSub with signalmesh's options (flood publish, mesh degree D 4 and Dlazy 1, peer outbound and validation queues 1,024, "+
			"subscription buffer 4,096), one message per signal (no batching frames); a message is \"<id> <%d bytes>\"", payload),
		KindNATS: fmt.Sprintf("NATS core client of an embedded nats-server on loopback; a message is \"<id> <%d bytes>\"; "+
			"its bytes are the client's only (the server's are not counted)", payload),
		"crdt-batched": fmt.Sprintf("raw go-ds-crdt (ipfs-lite DAG service, PubSubBroadcaster; rebroadcast 2 s in the heals), "+
			"Puts in batches (durable: one Put per call for writers16); a value is %d bytes under a short key", payload),
	}
}

// Machine describes where a result was measured.
type Machine struct {
	GOOS, GOARCH, Go string
	CPUs             int
	Host             string
}

// Steps is how many progress steps Run reports for spec.
func (s Spec) Steps() int {
	s = s.WithDefaults()
	n := 0
	for _, sc := range s.scenarios() {
		n += sc.steps
	}
	return n * s.Repeat
}

// Run runs the scenarios of spec one after another, each spec.Repeat
// times; progress, when not nil, is told what starts next (Steps() calls
// in all).
func Run(ctx context.Context, spec Spec, progress func(step string)) (*Result, error) {
	spec = spec.WithDefaults()
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	env := Env{Processes: spec.Processes, Seed: spec.Seed, Payload: spec.Payload}
	if spec.Short {
		env.Settle, env.Quiet = 1100*time.Millisecond, 1500*time.Millisecond
	}
	return runScenarios(ctx, spec, env, spec.scenarios(), progress)
}

// scenario is one scenario of a suite; run measures every system once, in
// the order env.Round rotates them to, and tells progress of any step past
// its first.
type scenario struct {
	name  string
	steps int
	run   func(ctx context.Context, env Env, tell func(string)) (*Outcome, error)
}

// scenarios builds the scenarios spec names.
func (s Spec) scenarios() []scenario {
	dur := time.Duration(s.Seconds * float64(time.Second))
	var out []scenario
	for _, name := range s.Scenarios {
		sc := scenario{name: name, steps: 1}
		switch name {
		case "partition":
			sc.run = func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
				return Partition(ctx, env, s.Peers, s.PerSide, s.Groups, s.Short)
			}
		case "rejoin":
			sc.run = func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
				return Rejoin(ctx, env, s.Peers, s.Rejoin)
			}
		case "burst":
			sc.run = func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
				return Burst(ctx, env, s.Peers, s.Burst)
			}
		case "steady":
			sc.run = func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
				return Steady(ctx, env, s.Peers, s.Rate, dur)
			}
		case "mixed":
			sc.run = func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
				return Mixed(ctx, env, s.Peers, s.Rate, dur)
			}
		case "churn":
			sc.run = func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
				return Churn(ctx, env, s.Peers, s.Rate, dur, max(dur/8, 200*time.Millisecond))
			}
		case "scale":
			sc.steps = len(s.ScaleN)
			sc.run = func(ctx context.Context, env Env, tell func(string)) (*Outcome, error) {
				return Scale(ctx, env, s.ScaleN, s.ScalePerSide, s.ScaleBurst, !s.Short, tell)
			}
		case "history":
			sc.run = func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
				return History(ctx, env, s.Peers, s.ScalePerSide, s.History)
			}
		case "durable":
			sc.run = func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
				return Durable(ctx, env, s.Durable)
			}
		case "catchup":
			sc.run = func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
				return CatchUp(ctx, env, s.CatchUp)
			}
		case "reopen":
			sc.run = func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
				return Reopen(ctx, env, s.Reopen, 3)
			}
		case "join":
			sc.run = func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
				return Join(ctx, env, s.Join, s.JoinRetained)
			}
		case "retention":
			sc.run = func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
				return Retention(ctx, env, s.RetentionPeers, s.Rate, s.RetentionKeep, s.RetentionFor)
			}
		case "flood":
			sc.run = func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
				if s.Short {
					return Flood(ctx, env, 10000, 200, 3*time.Second)
				}
				return Flood(ctx, env, 100000, 500, 10*time.Second)
			}
		case "consumer-group":
			sc.run = func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
				sizes, n, leases := []int{1, 2, 4}, 4000, []time.Duration{10 * time.Second, 2 * time.Second}
				if s.Short {
					n, leases = 400, []time.Duration{time.Second}
				}
				o, err := ConsumerGroup(ctx, env, sizes, n, time.Millisecond)
				if err != nil {
					return o, err
				}
				f, err := GroupFailover(ctx, env, leases)
				o.add(f.Figures...)
				return o, err
			}
		case "slow-consumer":
			sc.run = func(ctx context.Context, env Env, _ func(string)) (*Outcome, error) {
				if s.Short {
					return SlowConsumer(ctx, env, 1000, time.Millisecond)
				}
				return SlowConsumer(ctx, env, 10000, time.Millisecond)
			}
		}
		out = append(out, sc)
	}
	return out
}

// runScenarios runs each scenario spec.Repeat times (run r with env.Round
// r, which rotates the systems' order) and aggregates each scenario's
// figures and curves over its runs. An error in any run fails the whole.
func runScenarios(ctx context.Context, spec Spec, env Env, scs []scenario, progress func(string)) (*Result, error) {
	host, _ := os.Hostname()
	res := &Result{Spec: spec, Started: time.Now().UTC(), Revision: revision(), Systems: systemNotes(spec.Payload),
		Machine: Machine{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, Go: runtime.Version(), CPUs: runtime.NumCPU(), Host: host}}
	env = env.withDefaults()
	for _, sc := range scs {
		var figs [][]Figure
		var series [][]Series
		for r := range spec.Repeat {
			env.Round = r
			suffix := ""
			if spec.Repeat > 1 {
				suffix = fmt.Sprintf(" %d/%d", r+1, spec.Repeat)
			}
			tell := func(s string) {
				if progress != nil {
					progress(s + suffix)
				}
			}
			if sc.name != "scale" { // the sweep tells each of its points
				tell(sc.name)
			}
			o, err := sc.run(ctx, env, tell)
			if err != nil {
				return nil, fmt.Errorf("bench: %s (run %d of %d): %w", sc.name, r+1, spec.Repeat, err)
			}
			for k := range o.Figures {
				o.Figures[k].Metric = sc.name + "/" + o.Figures[k].Metric
			}
			for k := range o.Missing {
				o.Missing[k].Run = r
			}
			figs = append(figs, o.Figures)
			series = append(series, o.Series)
			res.Missing = append(res.Missing, o.Missing...)
		}
		res.Figures = append(res.Figures, aggregate(figs)...)
		res.Series = append(res.Series, aggregateSeries(series)...)
	}
	res.Seconds = time.Since(res.Started).Seconds()
	return res, nil
}

// revision is the git revision the binary was built from, or of the
// working directory's repository when the build did not record one.
func revision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	out, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// WriteJSON writes the result to dir as <started>.json and returns the path.
func (r *Result) WriteJSON(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, r.Started.Format("20060102T150405Z")+".json")
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}

// trim prints v with about three significant digits, no exponent.
func trim(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100 || a == 0:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func shortRev(r string) string {
	if len(r) > 12 {
		return r[:12]
	}
	return r
}
