package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

// Join: for each n in sizes, one peer on disk journals n signals, of which
// the last retained are within its retention (a rule "**" of one hour) and
// the others dated two hours back, in Publish calls of 1,000, and prunes
// what left retention (Params.Prune 1 s) until its journal holds the
// retained alone; then a fresh peer on disk starts with that peer as
// Bootstrap and SnapshotJoin on, and subscribes; the peer publishes one
// more signal. Measured: the time from the fresh peer's node.New until
// New returned (the snapshot written), and until its subscriber has the
// new signal (it is current), and its journal's length then; the
// process's peak RSS meanwhile (both peers are in this process); the
// source's disk after pruning. The baseline is raw go-ds-crdt: a fresh
// replica's catch-up of n keys (it cannot bound history).
func Join(ctx context.Context, env Env, sizes []int, retained int) (*Outcome, error) {
	o := &Outcome{}
	for _, n := range sizes {
		variant := fmt.Sprintf("n=%d,retained=%d", n, min(retained, n))
		src, dir, err := joinSource(ctx, env, n, retained)
		if err != nil {
			return nil, fmt.Errorf("join of %d: %w", n, err)
		}
		r, err := joinOnce(ctx, src, true)
		if err != nil {
			_ = src.Close()
			removeAll(dir)
			return nil, fmt.Errorf("join of %d: %w", n, err)
		}
		o.add(Figure{System: "signalmesh", Variant: variant, Metric: "join-to-current", Unit: "ms", Value: ms(r.current),
			Note: fmt.Sprintf("New returned after %.0f ms; journal %d, read from blocks %d; peak RSS %d MiB; the source's disk %d MiB", ms(r.open), r.journal, r.arrived, r.rss>>20, dirSize(dir)>>20)})
		o.add(Figure{System: "signalmesh", Variant: variant, Metric: "join-peak-rss", Unit: "MiB", Value: float64(r.rss >> 20)})
		_ = src.Close()
		removeAll(dir)
		took, err := rawCatchUp(ctx, n, env.Payload)
		if err != nil {
			return nil, fmt.Errorf("crdt-batched catch-up of %d: %w", n, err)
		}
		o.add(Figure{System: "crdt-batched", Variant: variant, Metric: "join-to-current", Unit: "ms", Value: ms(took),
			Note: "a fresh replica's catch-up of every key ever written, to its put hook"})
	}
	return o, nil
}

// joinSource starts the peer the joins join.
func joinSource(ctx context.Context, env Env, n, retained int) (*node.Node, string, error) {
	dir, err := tempDirFor("join")
	if err != nil {
		return nil, "", err
	}
	src, err := node.New(ctx, node.Config{Mesh: fmt.Sprintf("join-%d-%d", n, time.Now().UnixNano()), DataDir: dir,
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: Quiet(), Retention: joinRetention, Params: node.Params{Prune: time.Second}})
	if err != nil {
		removeAll(dir)
		return nil, "", err
	}
	payload := make([]byte, env.Payload)
	old := time.Now().Add(-2 * time.Hour)
	for sent := 0; sent < n; {
		batch := make([]*signalmesh.Signal, min(1000, n-sent))
		for i := range batch {
			var opts []signalmesh.Option
			if sent+i < n-retained {
				opts = append(opts, signalmesh.WithTime(old))
			}
			if batch[i], err = signalmesh.New("bench.join", "/bench", payload, opts...); err != nil {
				break
			}
		}
		if err == nil {
			err = src.Publish(ctx, batch...)
		}
		if err != nil {
			_ = src.Close()
			removeAll(dir)
			return nil, "", err
		}
		sent += len(batch)
	}
	// Every signal journaled, and those past retention pruned.
	if _, err := Await(ctx, 10*time.Minute, func() bool {
		c, _, err := src.JournalDigest(ctx)
		return err == nil && src.Arrived() >= int64(n) && c == min(retained, n)
	}); err != nil {
		c, _, _ := src.JournalDigest(ctx)
		_ = src.Close()
		removeAll(dir)
		return nil, "", fmt.Errorf("source journal (%d arrived, %d left): %w", src.Arrived(), c, err)
	}
	return src, dir, nil
}

var joinRetention = journal.Retention{{Pattern: "**", MaxAge: time.Hour}}

type joinResult struct {
	open, current time.Duration
	journal       int
	arrived       int64 // journal entries read from blocks
	rss           int64
}

func joinOnce(ctx context.Context, src *node.Node, snap bool) (joinResult, error) {
	var r joinResult
	dir, err := tempDirFor("join-fresh")
	if err != nil {
		return r, err
	}
	defer removeAll(dir)
	resetPeakRSS()
	start := time.Now()
	fresh, err := node.New(ctx, node.Config{Mesh: src.Mesh(), DataDir: dir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Bootstrap: []peer.AddrInfo{src.AddrInfo()}, SnapshotJoin: snap, Retention: joinRetention, Logger: Quiet()})
	if err != nil {
		return r, err
	}
	defer fresh.Close()
	r.open = time.Since(start)
	last, err := signalmesh.New("bench.join.last", "/bench", nil)
	if err != nil {
		return r, err
	}
	var got atomic.Bool
	if _, err := fresh.Subscribe("bench.join.last", func(_ context.Context, s *signalmesh.Signal) error {
		if s.ID == last.ID {
			got.Store(true)
		}
		return nil
	}); err != nil {
		return r, err
	}
	if err := src.Publish(ctx, last); err != nil {
		return r, err
	}
	if _, err := Await(ctx, 30*time.Minute, got.Load); err != nil {
		return r, fmt.Errorf("the last signal never came: %w", err)
	}
	r.current = time.Since(start)
	r.rss = peakRSS()
	if r.journal, _, err = fresh.JournalDigest(ctx); err != nil {
		return r, err
	}
	r.arrived = fresh.Arrived()
	return r, nil
}
