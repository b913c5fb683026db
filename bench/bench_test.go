package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/signalmesh/signalmesh/bench"
	"github.com/signalmesh/signalmesh/node/nodetest"
)

// The benchmarks are scenarios: each iteration builds fresh meshes, so run
// them with -benchtime 1x (or Nx to repeat). Every figure comes with its
// baselines, measured in the same binary on the same loopback hosts.
//
//	go test -run XXX -bench . -benchtime 1x ./bench

func report(b *testing.B, figs []bench.Figure, err error) {
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range figs {
		name := f.System
		if f.Variant != "" {
			name += "/" + f.Variant
		}
		b.ReportMetric(f.Value, name+":"+f.Metric+"-"+strings.ReplaceAll(f.Unit, "/", "per"))
	}
}

func TestMain(m *testing.M) {
	if bench.IsAgent() { // a peer of TestRunShortProcesses
		os.Exit(bench.AgentMain())
	}
	os.Exit(m.Run())
}

func benchRun(b *testing.B, spec bench.Spec) {
	for b.Loop() {
		res, err := bench.Run(context.Background(), spec, nil)
		if err != nil {
			b.Fatal(err)
		}
		report(b, res.Figures, nil)
	}
}

// BenchmarkPartitionHeal: 8 peers cut in two, 10,000 signals per side, heal.
func BenchmarkPartitionHeal(b *testing.B) { benchRun(b, bench.Spec{Scenarios: []string{"partition"}}) }

// BenchmarkBurst: 10,000 signals from one peer to 7 others.
func BenchmarkBurst(b *testing.B) { benchRun(b, bench.Spec{Scenarios: []string{"burst"}}) }

// BenchmarkSteady: 1,000 signals/s for 5 s from one peer to 7 others.
func BenchmarkSteady(b *testing.B) { benchRun(b, bench.Spec{Scenarios: []string{"steady"}}) }

// BenchmarkSteadyProcesses: the same, one OS process per peer.
func BenchmarkSteadyProcesses(b *testing.B) {
	benchRun(b, bench.Spec{Scenarios: []string{"steady"}, Processes: true})
}

// BenchmarkDurablePublish: 100,000 signals on one peer with pebble, into
// the journal, each way, against go-ds-crdt batched with a Sync per call.
func BenchmarkDurablePublish(b *testing.B) { benchRun(b, bench.Spec{Scenarios: []string{"durable"}}) }

// TestRunShort is the harness's CI check: the short suite runs, and its
// report is produced and complete. It asserts no speed: only that every
// scenario measured every system, that signalmesh lost nothing, and that
// the JSON round-trips. Under the race detector it runs three scenarios
// (the whole suite took two minutes of CI's 15 there; the plain run
// covers the rest).
func TestRunShort(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	spec := bench.Spec{Short: true}
	if raceEnabled {
		spec.Scenarios = []string{"partition", "burst", "steady"}
	}
	steps := 0
	res, err := bench.Run(context.Background(), spec, func(string) { steps++ })
	if err != nil {
		t.Fatal(err)
	}
	if steps != spec.Steps() {
		t.Errorf("progress told %d steps, Steps() says %d", steps, spec.Steps())
	}
	want := map[string]bool{
		"partition/heal-to-identical signalmesh":           false,
		"partition/heal-to-identical crdt-batched":         false,
		"partition/bytes-sent-per-peer signalmesh":         false,
		"rejoin/rejoin-to-identical crdt-batched":          false,
		"burst/worst-subscriber-delivered signalmesh":      false,
		"burst/worst-subscriber-delivered gossipsub":       false,
		"burst/worst-subscriber-delivered gossipsub-tuned": false,
		"burst/peak-rss signalmesh":                        false,
		"burst/worst-subscriber-delivered nats":            false,
		"burst/time-to-last-delivery signalmesh":           false,
		"steady/latency-to-all-p50 signalmesh":             false,
		"steady/latency-to-all-p50 gossipsub":              false,
		"steady/latency-to-all-p50 gossipsub-tuned":        false,
		"steady/latency-to-all-p50 nats":                   false,
		"steady/cpu-per-peer signalmesh":                   false,
		"mixed/quorum1/publish-call-p50 signalmesh":        false,
		"churn/heal-to-complete signalmesh":                false,
		"churn/worst-subscriber-delivered gossipsub":       false,
		"churn/worst-subscriber-delivered gossipsub-tuned": false,
		"scale/heal-to-identical signalmesh":               false,
		"scale/burst-delivered-throughput nats":            false,
		"scale/burst-delivered-throughput gossipsub-tuned": false,
		"history/heal-to-identical signalmesh":             false,
		"durable/durable-to-journal signalmesh":            false,
		"durable/publish-return signalmesh":                false,
		"durable/durable-to-journal crdt-batched":          false,
	}
	if len(spec.Scenarios) > 0 {
		for k := range want {
			if !slices.Contains(spec.Scenarios, k[:strings.Index(k, "/")]) {
				delete(want, k)
			}
		}
	}
	for _, f := range res.Figures {
		key := f.Metric + " " + f.System
		if _, ok := want[key]; ok {
			want[key] = true
		}
		if f.Value < 0 || f.Unit == "" || len(f.Runs) != 1 {
			t.Errorf("figure %+v", f)
		}
		lossless := key == "burst/worst-subscriber-delivered signalmesh" || key == "steady/delivered signalmesh" ||
			key == "churn/worst-subscriber-delivered signalmesh" || key == "scale/burst-worst-subscriber-delivered signalmesh" ||
			(key == "mixed/eventual/delivered signalmesh")
		if lossless && f.Value != 100 {
			t.Errorf("signalmesh lost signals: %s %s = %v %%", key, f.Variant, f.Value)
		}
	}
	for _, m := range res.Missing {
		if m.System == "signalmesh" && !strings.HasPrefix(m.Scenario, "mixed") {
			t.Errorf("signalmesh missed %d signals in %s at peer %d: %v", len(m.IDs), m.Scenario, m.Peer, m.IDs[:min(5, len(m.IDs))])
		}
	}
	if len(res.Series) == 0 {
		t.Error("no series to plot")
	}
	for k, seen := range want {
		if !seen {
			t.Errorf("report lacks %s", k)
		}
	}
	dir := t.TempDir()
	path, err := res.WriteJSON(dir)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	var back bench.Result
	if err := json.Unmarshal(raw, &back); err != nil || len(back.Figures) != len(res.Figures) || back.Machine.CPUs == 0 {
		t.Fatalf("JSON: %v, %d figures", err, len(back.Figures))
	}
	var sum bytes.Buffer
	res.Summary(&sum)
	if !strings.Contains(sum.String(), "crdt-batched") || !strings.Contains(sum.String(), "x") {
		t.Fatalf("summary:\n%s", sum.String())
	}
	t.Logf("\n%s", sum.String())
}

// TestRunShortProcesses runs peers as OS processes (this test binary,
// started again as agents): the same report comes out for every system,
// signalmesh loses nothing, costs and memory are per agent process, and
// every process has exited when Run returns.
func TestRunShortProcesses(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	res, err := bench.Run(context.Background(), bench.Spec{Short: true, Processes: true, Peers: 2, Scenarios: []string{"steady"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range res.Figures {
		seen[f.Metric+" "+f.System] = true
		if f.Metric == "steady/delivered" && f.System == "signalmesh" && f.Value != 100 {
			t.Errorf("signalmesh lost signals: %v %%", f.Value)
		}
		if f.Metric == "steady/cpu-per-peer" && f.Note != "per process" {
			t.Errorf("cpu figure not per process: %+v", f)
		}
		if f.Metric == "steady/peak-rss" && (f.Value <= 0 || !strings.HasPrefix(f.Note, "largest agent process")) {
			t.Errorf("memory figure not the agents': %+v", f)
		}
	}
	for _, sys := range []string{"signalmesh", "gossipsub", "gossipsub-tuned", "nats"} {
		for _, m := range []string{"steady/latency-to-all-p50", "steady/peak-rss"} {
			if !seen[m+" "+sys] {
				t.Errorf("report lacks %s %s", m, sys)
			}
		}
	}
	if kids := children(t); len(kids) > 0 {
		t.Errorf("agent processes left running: %v", kids)
	}
}

// children lists the live child processes of this one: Linux lists them
// per thread of the parent, in /proc/self/task/*/children.
func children(t *testing.T) []string {
	files, err := filepath.Glob("/proc/self/task/*/children")
	if err != nil || len(files) == 0 {
		t.Skip("cannot list child processes here")
	}
	var kids []string
	for _, f := range files {
		b, _ := os.ReadFile(f)
		kids = append(kids, strings.Fields(string(b))...)
	}
	return kids
}

// The slow-consumer scenario: a named subscription whose handler takes
// 1 ms, with a queue of 1,000, gets a burst of 2,000: it handles every
// signal once (it spills, it does not drop).
func TestSlowConsumer(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	o, err := bench.SlowConsumer(context.Background(), bench.Env{Payload: 100}, 2000, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range o.Figures {
		t.Logf("%s %s %.0f %s (%s)", f.Metric, f.Variant, f.Value, f.Unit, f.Note)
		if f.Metric == "handled" && f.Value != 100 {
			t.Fatalf("handled %.1f %%", f.Value)
		}
	}
}

// TestReopenShort: the reopen scenario runs (its agents are fresh
// processes of this binary) and reports every figure for both systems:
// the resumed named subscription got the signal published since the
// reopen and not the history (the agent checks the count Effects
// returns). It asserts no speed.
func TestReopenShort(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	res, err := bench.Run(context.Background(), bench.Spec{Short: true, Scenarios: []string{"reopen"}, Reopen: []int{300}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range res.Figures {
		switch f.Metric {
		case "reopen/reopen-heap", "reopen/resume-rss-growth", "reopen/resume-heap-growth": // may be 0 or less
		default:
			if f.Value <= 0 {
				t.Errorf("%s %s %s = %v", f.System, f.Variant, f.Metric, f.Value)
			}
		}
		if f.Metric == "reopen/resume-signals" && f.Value > 3 {
			t.Errorf("the resumed subscription got %v signals (%s): its cursor was not kept", f.Value, f.Note)
		}
		t.Logf("%s %s %s %v %s (%s)", f.System, f.Variant, f.Metric, f.Value, f.Unit, f.Note)
		got[f.System+" "+f.Metric] = true
	}
	for _, want := range []string{"signalmesh reopen/reopen-first-publish", "signalmesh reopen/reopen-rss", "signalmesh reopen/reopen-heap",
		"signalmesh reopen/resume-named-subscription", "signalmesh reopen/resume-signals", "signalmesh reopen/resume-alloc",
		"signalmesh reopen/effects", "signalmesh reopen/effects-alloc",
		"crdt-batched reopen/reopen-first-publish", "crdt-batched reopen/reopen-rss"} {
		if !got[want] {
			t.Errorf("no %s figure in %v", want, res.Figures)
		}
	}
}

// BenchmarkReopen: journals of 20,000 and 200,000 signals on disk,
// reopened in fresh processes (see bench.Reopen).
func BenchmarkReopen(b *testing.B) {
	benchRun(b, bench.Spec{Scenarios: []string{"reopen"}, Repeat: 1, Payload: 200})
}

// BenchmarkConsumerGroup: a group of 1, 2 and 4 members on 4 peers, a
// 1 ms handler, 4,000 signals; the median of 3 runs.
func BenchmarkConsumerGroup(b *testing.B) {
	benchRun(b, bench.Spec{Scenarios: []string{"consumer-group"}, Repeat: 3})
}

// The consumer-group scenario, small: groups of 1, 2 and 4 members share
// 1,000 signals with a 1 ms handler, each signal handled once (the
// scenario fails otherwise), and with 4 members none handles more than
// half (an even share is a quarter; Hash over 1,024 subjects). How much
// faster more members are is a timing, for the benchmark
// (BenchmarkConsumerGroup, BENCHMARKS.md), not for a unit test: on a
// loaded machine the 4 peers in this process share two cores.
// The failover scenario, lease 1 s: a member's node dies as a kill -9
// would mid-stream and every signal is still handled (the scenario fails
// otherwise); the signals handled twice are no more than the survivors
// counted as taken over. How long the failover took is a timing, for the
// benchmark (BENCHMARKS.md).
func TestGroupFailover(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	o, err := bench.GroupFailover(context.Background(), bench.Env{Payload: 100}, []time.Duration{time.Second})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bench.Figure{}
	for _, f := range o.Figures {
		t.Logf("%s %s %.1f %s (%s)", f.Metric, f.Variant, f.Value, f.Unit, f.Note)
		got[f.Metric] = f
	}
	d, ok := got["group-failover-duplicates"]
	taken, ok2 := got["group-failover-taken"]
	if !ok || !ok2 || got["group-failover"].Value <= 0 {
		t.Fatalf("figures missing: %v", o.Figures)
	}
	if d.Value > taken.Value {
		t.Errorf("%.0f signals handled twice, more than the %.0f the survivors took over", d.Value, taken.Value)
	}
}

func TestConsumerGroup(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	o, err := bench.ConsumerGroup(context.Background(), bench.Env{Payload: 100}, []int{1, 2, 4}, 1000, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	share := map[string]float64{}
	for _, f := range o.Figures {
		t.Logf("%s %s %.1f %s (%s)", f.Metric, f.Variant, f.Value, f.Unit, f.Note)
		if f.Metric == "group-largest-share" {
			share[f.Variant] = f.Value
		}
	}
	if s, ok := share["members=4,peers=4,n=1000,handler=1ms"]; !ok || s > 50 {
		t.Errorf("4 members: the busiest handled %.1f %% of the signals (present: %v): the group does not share the work", s, ok)
	}
	if s := share["members=1,peers=4,n=1000,handler=1ms"]; s != 100 {
		t.Errorf("1 member handled %.1f %% of the signals, want 100", s)
	}
}
