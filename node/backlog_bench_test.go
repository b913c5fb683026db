package node_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// BenchmarkBacklogFirstSignal: a subscription from the beginning of a
// journal of n signals (one node on disk, pebble), from Subscribe until
// its handler has the first signal. One op is one Subscribe; B/op is what
// the node allocates meanwhile, live-MiB the Go heap in use then (after a
// GC) above what it was before: the backlog held in memory. Run it with
// -benchtime=5x.
func BenchmarkBacklogFirstSignal(b *testing.B) {
	for _, n := range []int{20000, 100000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			ctx := context.Background()
			nd, err := node.New(ctx, node.Config{Mesh: fmt.Sprintf("bench-backlog-%d", time.Now().UnixNano()), DataDir: b.TempDir(),
				ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer nd.Close()
			batch := make([]*signalmesh.Signal, 0, 1000)
			for i := range n {
				s, err := signalmesh.New("bench.backlog", "/bench", []byte("a payload of some forty bytes, give or take"), signalmesh.WithSubject(fmt.Sprint(i)))
				if err != nil {
					b.Fatal(err)
				}
				if batch = append(batch, s); len(batch) == cap(batch) {
					if err := nd.Publish(ctx, batch...); err != nil {
						b.Fatal(err)
					}
					batch = batch[:0]
				}
			}
			for {
				if c, _, err := nd.JournalDigest(ctx); err == nil && c == n {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			var live float64
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				first := make(chan struct{})
				release := make(chan struct{})
				b.StartTimer()
				sub, err := nd.Subscribe("bench.**", func(ctx context.Context, _ *signalmesh.Signal) error {
					select {
					case first <- struct{}{}:
						<-release
					case <-release:
					}
					return nil
				}, node.WithStart(node.StartBeginning))
				if err != nil {
					b.Fatal(err)
				}
				<-first
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&after)
				live += float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / (1 << 20)
				close(release)
				if err := sub.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(live/float64(b.N), "live-MiB")
		})
	}
}
