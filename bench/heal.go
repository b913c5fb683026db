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
	// verify checks that every replica holds the same want entries,
	// waiting up to timeout for it; it is not part of the time.
	verify(ctx context.Context, want int, timeout time.Duration) error
}

// timeHeal is the heal clock of every system: it starts, heals, and stops
// at the first poll (every 5 ms) at which every replica's put-hook count
// has reached want. Then, outside the clock, it verifies the replicas'
// contents.
func timeHeal(ctx context.Context, h healer, want int, timeout time.Duration) (float64, error) {
	start := time.Now()
	if err := h.heal(ctx); err != nil {
		return 0, err
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
		return 0, fmt.Errorf("put-hook counts %v, want %d each: %w", last, want, err)
	}
	if err := h.verify(ctx, want, timeout); err != nil {
		return 0, fmt.Errorf("after the heal: %w", err)
	}
	return ms(took), nil
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

func (m meshHealer) verify(ctx context.Context, want int, timeout time.Duration) error {
	_, err := Await(ctx, timeout, func() bool { return m.g.identical(ctx, all(len(m.g.peers)), want) })
	if err != nil {
		return fmt.Errorf("journals not identical with %d entries: %w", want, err)
	}
	return nil
}

// rawHealer heals a cluster of raw go-ds-crdt peers; their put-hook counts
// are RawPeer.Puts, and verify counts every store's keys.
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

func (r rawHealer) verify(ctx context.Context, want int, timeout time.Duration) error {
	_, err := Await(ctx, timeout, func() bool {
		for _, p := range r.peers {
			if c, err := p.Count(ctx); err != nil || c != want {
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("stores do not hold %d keys each: %w", want, err)
	}
	return nil
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
