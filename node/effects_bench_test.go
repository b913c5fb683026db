package node_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// BenchmarkEffects: Effects and Trace of a tree of 6 (a chain of 3 and a
// fan-out of 3 below a root) on one node on disk (pebble) whose journal
// holds n other signals (a root every 10, the 9 others its effects). One
// op is one call; B/op is what it allocates. Setting up 200,000 signals
// takes a minute or two: run it with -benchtime=5x.
func BenchmarkEffects(b *testing.B) {
	for _, n := range []int{20000, 200000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			ctx := context.Background()
			nd, err := node.New(ctx, node.Config{Mesh: fmt.Sprintf("bench-effects-%d", time.Now().UnixNano()), DataDir: b.TempDir(),
				ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer nd.Close()
			var root *signalmesh.Signal
			batch := make([]*signalmesh.Signal, 0, 1000)
			for i := range n {
				var opts []signalmesh.Option
				if i%10 != 0 {
					opts = append(opts, signalmesh.WithCause(root))
				}
				s, err := signalmesh.New("bench.other", "/bench", nil, opts...)
				if err != nil {
					b.Fatal(err)
				}
				if i%10 == 0 {
					root = s
				}
				if batch = append(batch, s); len(batch) == cap(batch) || i == n-1 {
					if err := nd.Publish(ctx, batch...); err != nil {
						b.Fatal(err)
					}
					batch = batch[:0]
				}
			}
			mk := func(cause *signalmesh.Signal) *signalmesh.Signal {
				var opts []signalmesh.Option
				if cause != nil {
					opts = append(opts, signalmesh.WithCause(cause))
				}
				s, err := signalmesh.New("bench.tree", "/bench", nil, opts...)
				if err != nil {
					b.Fatal(err)
				}
				return s
			}
			top := mk(nil)
			c1 := mk(top)
			c2 := mk(c1)
			tree := []*signalmesh.Signal{top, c1, c2, mk(c2), mk(top), mk(top), mk(top)}
			if err := nd.Publish(ctx, tree...); err != nil {
				b.Fatal(err)
			}
			for deadline := time.Now().Add(10 * time.Minute); ; {
				if c, _, err := nd.JournalDigest(ctx); err == nil && c == n+len(tree) {
					break
				}
				if time.Now().After(deadline) {
					b.Fatal("the journal did not take every signal")
				}
				time.Sleep(100 * time.Millisecond)
			}
			b.Run("Effects", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if es, err := nd.Effects(ctx, top.ID); err != nil || len(es) != 4 {
						b.Fatalf("Effects: %d, %v", len(es), err)
					}
				}
			})
			b.Run("Trace", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, es, err := nd.Trace(ctx, top.ID); err != nil || len(es) != 6 {
						b.Fatalf("Trace: %d, %v", len(es), err)
					}
				}
			})
		})
	}
}
