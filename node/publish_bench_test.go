package node

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
)

// BenchmarkDurablePublish publishes Eventual signals in batches of 100
// from 4 goroutines on one node and waits until a second node delivered
// them all, with signing and verification on ("signed") and off
// ("unsigned", as before meshsig), in the same run. It reports signals per
// second end to end.
func BenchmarkDurablePublish(b *testing.B) {
	for _, signed := range []bool{false, true} {
		name := map[bool]string{false: "unsigned", true: "signed"}[signed]
		b.Run(name, func(b *testing.B) {
			testNoVerify = !signed
			defer func() { testNoVerify = false }()
			benchPublish(b)
		})
	}
}

func benchPublish(b *testing.B) {
	ctx := context.Background()
	mesh := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	start := func() *Node {
		n, err := New(ctx, Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = n.Close() })
		return n
	}
	pub, sub := start(), start()
	var got atomic.Int64
	if _, err := sub.Subscribe("bench.**", func(context.Context, *signalmesh.Signal) error { got.Add(1); return nil }); err != nil {
		b.Fatal(err)
	}
	if err := pub.Connect(ctx, sub.AddrInfo()); err != nil {
		b.Fatal(err)
	}
	const batch, workers = 100, 4
	total := (b.N + batch - 1) / batch * batch
	b.ResetTimer()
	begin := time.Now()
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := w * batch; i < total; i += workers * batch {
				sigs := make([]*signalmesh.Signal, batch)
				for j := range sigs {
					s, err := signalmesh.New("bench.tick", "/bench", map[string]int{"i": i + j})
					if err != nil {
						errs <- err
						return
					}
					sigs[j] = s
				}
				if err := pub.Publish(ctx, sigs...); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	published := time.Since(begin)
	deadline := time.Now().Add(2 * time.Minute)
	for got.Load() < int64(total) {
		if time.Now().After(deadline) {
			b.Fatalf("delivered %d of %d", got.Load(), total)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(total)/published.Seconds(), "published/s")
	b.ReportMetric(float64(total)/time.Since(begin).Seconds(), "delivered/s")
}
