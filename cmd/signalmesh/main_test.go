package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestTourDeliversCausesFirst(t *testing.T) {
	for seed := uint64(0); seed < 50; seed++ {
		var out, errb bytes.Buffer
		if code := run([]string{"tour", "-seed", strconv.FormatUint(seed, 10)}, &out, &errb); code != 0 {
			t.Fatalf("seed %d: exit %d: %s", seed, code, errb.String())
		}
		_, delivered, _ := strings.Cut(out.String(), "routed by type:")
		pos := func(typ string) int { return strings.Index(delivered, "  "+typ+" ") }
		for _, pair := range [][2]string{
			{"order.eu.created", "payment.card.captured"},
			{"payment.card.captured", "order.eu.shipped"},
			{"order.eu.created", "fraud.alert.raised"},
		} {
			if c, e := pos(pair[0]), pos(pair[1]); c < 0 || e < 0 || c > e {
				t.Fatalf("seed %d: %s delivered before its cause %s:\n%s", seed, pair[1], pair[0], delivered)
			}
		}
		if !strings.Contains(out.String(), "all 5 delivered") {
			t.Fatalf("seed %d: %s", seed, out.String())
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{nil, {"nope"}, {"tour", "-seed", "x"}, {"tour", "extra"}, {"demo", "-signals", "1"}, {"bench", "-peers", "1"}, {"bench", "extra"},
		{"bench", "-scenarios", "nope"}, {"bench", "-scale-n", "2,x"}, {"bench", "-history", "-1"}, {"bench", "-groups", "9"}, {"bench", "-repeat", "-1"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 || errb.Len() == 0 {
			t.Errorf("run(%q) = %d, stderr %q; want 2 and a message", args, code, errb.String())
		}
	}
	var out bytes.Buffer
	if code := run([]string{"help"}, &out, &out); code != 0 || !strings.Contains(out.String(), "demo") {
		t.Errorf("help: %d %q", code, out.String())
	}
}

// TestBenchWritesResultAndPlots runs one small scenario through the
// command: the summary, the JSON result and the plots come out.
func TestBenchWritesResultAndPlots(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := run([]string{"bench", "-short", "-quiet", "-scenarios", "steady", "-seconds", "1", "-out", dir}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errb.String(), out.String())
	}
	for _, want := range []string{"steady/latency-to-all-p50", "gossipsub", "gossipsub-tuned", "nats", "median of 1 runs", "result: " + dir, "latency-cdf.png", "latency-cdf.svg", "seed 1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	for _, f := range []string{"latency-cdf.png", "latency-cdf.svg"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestDemoConverges(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"demo", "-signals", "40"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, errb.String(), out.String())
	}
	for _, want := range []string{"delivered and journaled on all 4 peers", "journals identical on all 4 peers", "nothing lost: every peer holds and delivered all 81 signals"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
}
