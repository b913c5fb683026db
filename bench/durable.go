package bench

import (
	"context"
	"fmt"
	"time"

	ds "github.com/ipfs/go-datastore"
)

// durableWays are the ways Durable drives each system: the same calls of
// the same sizes from the same number of goroutines.
var durableWays = []struct {
	name, note     string
	batch, writers int
}{
	{"batch100", "one goroutine, 100 signals per call", 100, 1},
	{"batch100x4", "4 goroutines, 100 signals per call", 100, 4},
	{"writers16", "16 goroutines, one signal per call; a fifth of the count", 1, 16},
}

// Durable: one peer on disk (pebble) writes total signals, each way of
// durableWays. For signalmesh each Publish returns once its signals are
// fsynced (the outbox), and go-ds-crdt journals them after; the clock runs
// from the first call until the journal holds every signal (the node's put
// hook counted total: durable-to-journal), and the time until the last
// call returned is reported apart (publish-return). Baseline: raw
// go-ds-crdt on pebble with the same cache, driven the same way: a call is
// a Batch of its Puts committed (or one Put), then a Sync (pebble fsyncs
// its write-ahead log), so that it too is durable when the call returns;
// its clock stops when every call returned and the put hook counted total.
// The journal's or the store's contents are checked after, off the clock.
func Durable(ctx context.Context, env Env, total int) (*Outcome, error) {
	o := &Outcome{}
	env.Disk = true
	for _, w := range rotate(durableWays, env.Round) {
		for _, sys := range rotate([]string{KindMesh, "crdt-batched"}, env.Round) {
			var journal, returned float64
			err := o.measured(env, sys, w.name, func() (err error) {
				n := total
				if w.batch == 1 {
					n = max(total/5, 1) // one fsync per call: 100,000 would take minutes
				}
				if sys == KindMesh {
					journal, returned, err = durableMesh(ctx, env, n, w.batch, w.writers)
				} else {
					journal, err = durableCRDT(ctx, env, n, w.batch, w.writers)
				}
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", sys, w.name, err)
			}
			note := w.note + "; until the journal holds all"
			if sys != KindMesh {
				note = w.note + "; each call a committed Batch (or a Put) and a Sync"
			}
			o.add(Figure{System: sys, Variant: w.name, Metric: "durable-to-journal", Unit: "signals/s", Value: journal, Note: note})
			if sys == KindMesh {
				o.add(Figure{System: sys, Variant: w.name, Metric: "publish-return", Unit: "signals/s", Value: returned,
					Note: w.note + "; until the last Publish returned (fsynced to the outbox, not yet journaled)"})
			}
		}
	}
	return o, nil
}

// durableMesh returns the signals per second into the journal and the
// signals per second of Publish returning.
func durableMesh(ctx context.Context, env Env, total, batch, writers int) (journal, returned float64, err error) {
	g, err := startGroup(ctx, env, KindMesh, 1)
	if err != nil {
		return 0, 0, err
	}
	defer g.Close()
	p := g.peers[0]
	req := PublishReq{Type: "durable.write", N: total, Batch: batch, Writers: writers, Payload: env.Payload}
	start := time.Now()
	if err := p.Publish(ctx, req); err != nil {
		return 0, 0, err
	}
	ret := time.Since(start)
	if _, err := Await(ctx, 10*time.Minute, func() bool {
		n, err := p.Journaled(ctx)
		return err == nil && n >= int64(total)
	}); err != nil {
		return 0, 0, fmt.Errorf("journal: %w", err)
	}
	in := time.Since(start)
	// The put hook runs as go-ds-crdt merges an entry, just before the
	// merge's writes land: the count is checked after, off the clock.
	if _, err := Await(ctx, time.Minute, func() bool {
		n, _, err := p.Digest(ctx)
		return err == nil && n == total
	}); err != nil {
		return 0, 0, fmt.Errorf("journal does not hold %d entries: %w", total, err)
	}
	return float64(total) / in.Seconds(), float64(total) / ret.Seconds(), nil
}

func durableCRDT(ctx context.Context, env Env, total, batch, writers int) (float64, error) {
	dir, err := tempDirFor("crdt")
	if err != nil {
		return 0, err
	}
	defer removeAll(dir)
	raw, c, err := newRaw(ctx, 1, RawOptions{CRDT: true, Topic: "durable"}, dir)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	p := raw[0]
	val := make([]byte, env.Payload)
	key := func(i int) ds.Key { return ds.NewKey(fmt.Sprintf("/durable/%d", i)) }
	calls := (total + batch - 1) / batch
	start := time.Now()
	err = parallel(calls, writers, func(call int) error {
		first, n := call*batch, min(batch, total-call*batch)
		if n == 1 {
			if err := p.CRDT.Put(ctx, key(first), val); err != nil {
				return err
			}
		} else if err := putBatch(ctx, p, key, first, n, val); err != nil {
			return err
		}
		return p.CRDT.Sync(ctx, ds.NewKey("/"))
	})
	if err != nil {
		return 0, err
	}
	if _, err := Await(ctx, 10*time.Minute, func() bool { return p.Puts.Load() >= int64(total) }); err != nil {
		return 0, fmt.Errorf("put hook: %w", err)
	}
	took := time.Since(start)
	if _, err := Await(ctx, time.Minute, func() bool {
		n, err := p.Count(ctx)
		return err == nil && n == total
	}); err != nil {
		return 0, fmt.Errorf("store does not hold %d keys: %w", total, err)
	}
	return float64(total) / took.Seconds(), nil
}

func putBatch(ctx context.Context, p *RawPeer, key func(int) ds.Key, first, n int, val []byte) error {
	bt, err := p.CRDT.Batch(ctx)
	if err != nil {
		return err
	}
	for i := first; i < first+n; i++ {
		if err := bt.Put(ctx, key(i), val); err != nil {
			return err
		}
	}
	return bt.Commit(ctx)
}
