package bench

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// What users do after a restart, measured by a reopen agent after its
// first Publish: resume a named subscription, and ask for the effects of
// a signal.
const (
	reopenType    = "bench.reopen" // every signal the reopen scenario publishes
	reopenSubName = "bench-resume" // the named subscription the writer and the agents share
	reopenEffects = 5              // journaled signals caused by the first one
)

// history is what journalOnDisk wrote for the agents to look up.
type history struct {
	cause   string // the id of the first signal
	effects int    // signals naming it as their cause
}

// historySignal is signal i of the n journalOnDisk writes: the first is
// the cause of effectsOf(n) later ones, spread over the history.
func historySignal(i, n int, data []byte, cause *signalmesh.Signal) (*signalmesh.Signal, error) {
	e := effectsOf(n)
	for k := 1; k <= e && i > 0; k++ {
		if i == k*n/(e+1) {
			return signalmesh.New(reopenType, "/bench", data, signalmesh.WithCause(cause))
		}
	}
	return signalmesh.New(reopenType, "/bench", data)
}

// effectsOf is how many of n signals name the first as their cause.
func effectsOf(n int) int { return max(0, min(reopenEffects, n-1)) }

// resumeAfterReopen times Subscribe WithName(reopenSubName) until its
// handler has got a first signal (the one published since the reopen),
// and the memory that took: Go bytes allocated, VmRSS before and after,
// Go heap in use after a GC (rep.HeapInuse is the one before). got counts
// what the handler gets until the node closes (its goroutine is the
// node's, ended by Close).
func resumeAfterReopen(ctx context.Context, n *node.Node, rep *reopenReport, got *atomic.Int64) error {
	first := make(chan struct{}, 1)
	h := func(context.Context, *signalmesh.Signal) error {
		got.Add(1)
		select {
		case first <- struct{}{}:
		default:
		}
		return nil
	}
	rss, alloc := procStatus("VmRSS:"), totalAlloc()
	start := time.Now()
	if _, err := n.Subscribe(reopenType, h, node.WithName(reopenSubName)); err != nil {
		return err
	}
	select {
	case <-first:
	case <-ctx.Done():
		return fmt.Errorf("resume %s: no signal: %w", reopenSubName, ctx.Err())
	}
	rep.ResumeMS = ms(time.Since(start))
	rep.ResumeAlloc = totalAlloc() - alloc
	rep.ResumeRSSGrowth = procStatus("VmRSS:") - rss
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	rep.ResumeHeapGrowth = int64(m.HeapInuse) - int64(rep.HeapInuse)
	return nil
}

// effectsAfterReopen times Effects of the history's cause (and the bytes
// it allocated) and checks it finds all its effects.
func effectsAfterReopen(ctx context.Context, n *node.Node, cfg AgentConfig, rep *reopenReport) error {
	alloc := totalAlloc()
	start := time.Now()
	effects, err := n.Effects(ctx, cfg.Cause)
	rep.EffectsMS = ms(time.Since(start))
	rep.EffectsAlloc = totalAlloc() - alloc
	rep.EffectsGot = len(effects)
	if err == nil && len(effects) != cfg.Effects {
		err = fmt.Errorf("effects of %s: %d signals, want %d", cfg.Cause, len(effects), cfg.Effects)
	}
	return err
}

// afterReopenFigures are the medians of what reopen agents measured after
// their first Publish (resumeAfterReopen, effectsAfterReopen), each run's
// figure in the note.
func afterReopenFigures(variant string, reps []reopenReport) []Figure {
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	resume := reportsOf(reps, func(r reopenReport) float64 { return r.ResumeMS })
	got := reportsOf(reps, func(r reopenReport) float64 { return float64(r.ResumeGot) })
	rss := reportsOf(reps, func(r reopenReport) float64 { return mib(r.ResumeRSSGrowth) })
	heap := reportsOf(reps, func(r reopenReport) float64 { return mib(r.ResumeHeapGrowth) })
	alloc := reportsOf(reps, func(r reopenReport) float64 { return mib(int64(r.ResumeAlloc)) })
	effAlloc := reportsOf(reps, func(r reopenReport) float64 { return mib(int64(r.EffectsAlloc)) })
	effects := reportsOf(reps, func(r reopenReport) float64 { return r.EffectsMS })
	found := reportsOf(reps, func(r reopenReport) float64 { return float64(r.EffectsGot) })
	return []Figure{
		{System: KindMesh, Variant: variant, Metric: "resume-named-subscription", Unit: "ms", Value: median(resume),
			Note: fmt.Sprintf("Subscribe WithName(%q) until its handler got the signal published since the reopen; runs %s", reopenSubName, list(resume))},
		{System: KindMesh, Variant: variant, Metric: "resume-signals", Unit: "signals", Value: median(got),
			Note: "what the resumed subscription handled until Close (1 published since the reopen); runs " + counts(got)},
		{System: KindMesh, Variant: variant, Metric: "resume-alloc", Unit: "MiB", Value: median(alloc),
			Note: "Go bytes allocated while resuming (garbage included); runs " + list(alloc)},
		{System: KindMesh, Variant: variant, Metric: "resume-rss-growth", Unit: "MiB", Value: median(rss), Note: "runs " + list(rss)},
		{System: KindMesh, Variant: variant, Metric: "resume-heap-growth", Unit: "MiB", Value: median(heap), Note: "after a GC; runs " + list(heap)},
		{System: KindMesh, Variant: variant, Metric: "effects", Unit: "ms", Value: median(effects),
			Note: fmt.Sprintf("Effects of the first signal (%s found); runs %s", counts(found), list(effects))},
		{System: KindMesh, Variant: variant, Metric: "effects-alloc", Unit: "MiB", Value: median(effAlloc),
			Note: "Go bytes allocated by Effects (garbage included); runs " + list(effAlloc)},
	}
}

// counts is list for whole numbers.
func counts(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(s, ", ")
}

// totalAlloc is the Go heap bytes allocated so far, freed or not.
func totalAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}
