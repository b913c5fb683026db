package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
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

// BenchmarkPartitionHeal: 5 peers cut 2|3, 1,000 signals per side, heal.
func BenchmarkPartitionHeal(b *testing.B) {
	for b.Loop() {
		figs, err := bench.Partition(context.Background(), 5, 1000, false)
		report(b, figs, err)
	}
}

// BenchmarkBurst: 10,000 signals from one peer to 4 others.
func BenchmarkBurst(b *testing.B) {
	for b.Loop() {
		figs, err := bench.Burst(context.Background(), 5, 10000)
		report(b, figs, err)
	}
}

// BenchmarkSteady: 1,000 signals/s for 10 s from one peer to 7 others.
func BenchmarkSteady(b *testing.B) {
	for b.Loop() {
		figs, err := bench.Steady(context.Background(), 8, 1000, 10*time.Second)
		report(b, figs, err)
	}
}

// BenchmarkDurablePublish: 20,000 signals on one peer with pebble.
func BenchmarkDurablePublish(b *testing.B) {
	for b.Loop() {
		figs, err := bench.Durable(context.Background(), 20000)
		report(b, figs, err)
	}
}

// TestRunShort is the harness's CI check: the short suite runs, and its
// report is produced and complete. It asserts no speed: only that every
// scenario measured every system, that signalmesh lost nothing, and that
// the JSON round-trips.
func TestRunShort(t *testing.T) {
	defer goleak.VerifyNone(t, nodetest.IgnoredGoroutines()...)
	res, err := bench.Run(context.Background(), bench.Spec{Short: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"partition/heal-to-identical signalmesh":      false,
		"partition/heal-to-identical crdt-batched":    false,
		"burst/worst-subscriber-delivered signalmesh": false,
		"burst/worst-subscriber-delivered gossipsub":  false,
		"burst/time-to-last-delivery signalmesh":      false,
		"durable/durable-publish signalmesh":          false,
		"durable/durable-publish crdt-unbatched":      false,
	}
	for _, f := range res.Figures {
		key := f.Metric + " " + f.System
		if _, ok := want[key]; ok {
			want[key] = true
		}
		if f.Value < 0 || f.Unit == "" {
			t.Errorf("figure %+v", f)
		}
		if (key == "burst/worst-subscriber-delivered signalmesh" || key == "steady/delivered signalmesh") && f.Value != 100 {
			t.Errorf("signalmesh lost part of the burst: %v %%", f.Value)
		}
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
