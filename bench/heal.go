package bench

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"
	"time"
)

// healer is a system whose replicas were cut apart and written to, ready
// to heal. Every system's heal is timed the same way (timeHeal).
type healer interface {
	// heal lifts the cut and reconnects every pair.
	heal(ctx context.Context) error
	// counts are the entries each replica's put hook has reported, local
	// and remote: cheap enough to poll every few milliseconds.
	counts(ctx context.Context) ([]int64, error)
	// holds reports whether every replica holds the same want entries: it
	// reads whole stores, too slow to poll while the heal runs.
	holds(ctx context.Context, want int) bool
}

// timeHeal is the heal clock of every system: it starts, heals, and stops
// at the first poll (every 5 ms) at which every replica's put-hook count
// has reached want. Then, outside the clock, it checks the replicas'
// contents. Only if they do not hold want entries yet (a put hook counted
// an entry twice, so the count ran ahead) does the clock run on, polling
// the contents, until they do; the note says so.
func timeHeal(ctx context.Context, h healer, want int, timeout time.Duration) (healed, error) {
	start := time.Now()
	if err := h.heal(ctx); err != nil {
		return healed{}, err
	}
	var last []int64
	_, err := Await(ctx, timeout, func() bool {
		c, err := h.counts(ctx)
		if err != nil {
			return false
		}
		last = c
		for _, n := range c {
			if n < int64(want) {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	if err != nil {
		return healed{}, fmt.Errorf("put-hook counts %v, want %d each: %w", last, want, err)
	}
	if h.holds(ctx, want) {
		return healed{ms: ms(took)}, nil
	}
	if _, err := Await(ctx, timeout, func() bool { return h.holds(ctx, want) }); err != nil {
		return healed{}, fmt.Errorf("after the heal the replicas do not hold %d entries each: %w", want, err)
	}
	return healed{ms: ms(time.Since(start)), note: "put-hook counts ran ahead of the contents: timed to verified contents"}, nil
}

// healed is a timed heal: milliseconds, and a note when the clock ran on
// to verified contents.
type healed struct {
	ms   float64
	note string
}

// figure is the heal as a figure, its note after base's.
func (h healed) figure(sys, variant, metric, base string) Figure {
	note := base
	if h.note != "" {
		note = strings.TrimPrefix(base+"; "+h.note, "; ")
	}
	return Figure{System: sys, Variant: variant, Metric: metric, Unit: "ms", Value: h.ms, Note: note}
}

// meshHealer heals a group of signalmesh peers; their put-hook counts are
// Node.Arrived, and verify compares journal digests.
type meshHealer struct{ g *group }

func (m meshHealer) heal(ctx context.Context) error { return m.g.heal(ctx) }

func (m meshHealer) counts(ctx context.Context) ([]int64, error) {
	out := make([]int64, len(m.g.peers))
	for i, p := range m.g.peers {
		var err error
		if out[i], err = p.Journaled(ctx); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (m meshHealer) holds(ctx context.Context, want int) bool {
	return m.g.identical(ctx, all(len(m.g.peers)), want)
}

// rawHealer heals a cluster of raw go-ds-crdt peers; their put-hook counts
// are RawPeer.Puts, and holds counts every store's keys.
type rawHealer struct {
	c     *cluster
	peers []*RawPeer
}

func (r rawHealer) heal(ctx context.Context) error { return r.c.heal(ctx) }

func (r rawHealer) counts(context.Context) ([]int64, error) {
	out := make([]int64, len(r.peers))
	for i, p := range r.peers {
		out[i] = p.Puts.Load()
	}
	return out, nil
}

func (r rawHealer) holds(ctx context.Context, want int) bool {
	for _, p := range r.peers {
		if c, err := p.Count(ctx); err != nil || c != want {
			return false
		}
	}
	return true
}

// measured runs one system's part of a scenario and adds its memory: the
// process's peak resident memory during f (VmHWM, reset after returning
// freed memory to the OS), when the system's peers run in this process;
// with one process per peer, costs reports the agents' own peaks.
func (o *Outcome) measured(env Env, sys, variant string, f func() error) error {
	inProcess := !env.Processes || strings.HasPrefix(sys, "crdt")
	if inProcess {
		debug.FreeOSMemory()
		resetPeakRSS()
	}
	if err := f(); err != nil {
		return err
	}
	if hwm := peakRSS(); inProcess && hwm > 0 {
		o.add(Figure{System: sys, Variant: variant, Metric: "peak-rss", Unit: "MiB", Value: float64(hwm) / (1 << 20),
			Note: "this process during this system's run (all its peers)"})
	}
	return nil
}
