package bench_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/host"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/bench"
	"github.com/signalmesh/signalmesh/node"
)

// These benchmarks are scenarios: each iteration builds a fresh mesh, so run
// them with -benchtime 1x (or Nx to repeat). Every figure comes with its
// baseline from the same binary, on the same loopback hosts.
//
//	go test -run XXX -bench . -benchtime 1x ./bench

func newMesh(b *testing.B, n int, dir string) ([]*node.Node, []*node.Blocklist) {
	b.Helper()
	mesh := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	nodes := make([]*node.Node, n)
	gaters := make([]*node.Blocklist, n)
	for i := range nodes {
		gaters[i] = node.NewBlocklist()
		cfg := node.Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Gater: gaters[i], Logger: bench.Quiet()}
		if dir != "" {
			cfg.DataDir = fmt.Sprintf("%s/%d", dir, i)
		}
		nd, err := node.New(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		nodes[i] = nd
		b.Cleanup(func() { _ = nd.Close() })
	}
	hosts := make([]host.Host, n)
	for i, nd := range nodes {
		hosts[i] = nd.Host()
	}
	if err := bench.Connect(context.Background(), hosts); err != nil {
		b.Fatal(err)
	}
	return nodes, gaters
}

func newRaw(b *testing.B, n int, o bench.RawOptions) ([]*bench.RawPeer, []*node.Blocklist) {
	b.Helper()
	peers := make([]*bench.RawPeer, n)
	gaters := make([]*node.Blocklist, n)
	hosts := make([]host.Host, n)
	for i := range peers {
		gaters[i] = node.NewBlocklist()
		o := o
		o.Gater = gaters[i]
		if o.DataDir != "" {
			o.DataDir = fmt.Sprintf("%s/%d", o.DataDir, i)
		}
		p, err := bench.NewRawPeer(o)
		if err != nil {
			b.Fatal(err)
		}
		peers[i], hosts[i] = p, p.Host
		b.Cleanup(func() { _ = p.Close() })
	}
	if err := bench.Connect(context.Background(), hosts); err != nil {
		b.Fatal(err)
	}
	return peers, gaters
}

// cut blocks and disconnects every pair across sides (indices into hosts).
func cut(hosts []host.Host, gaters []*node.Blocklist, left, right []int) {
	for _, i := range left {
		for _, j := range right {
			gaters[i].Block(hosts[j].ID())
			gaters[j].Block(hosts[i].ID())
			_ = hosts[i].Network().ClosePeer(hosts[j].ID())
		}
	}
}

func heal(b *testing.B, hosts []host.Host, gaters []*node.Blocklist) {
	for _, g := range gaters {
		g.Clear()
	}
	if err := bench.Connect(context.Background(), hosts); err != nil {
		b.Fatal(err)
	}
}

const (
	partitionPeers = 5
	perSide        = 1000
)

var leftSide, rightSide = []int{0, 1}, []int{2, 3, 4}

// BenchmarkPartitionHeal: 5 peers cut into {0,1} and {2,3,4}; 1,000 signals
// written on each side while cut; then heal. Reports the time from
// reconnecting to identical journals (ms-to-converge).
func BenchmarkPartitionHeal(b *testing.B) {
	b.Run("signalmesh", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			nodes, gaters := newMesh(b, partitionPeers, "")
			hosts := make([]host.Host, len(nodes))
			for i, n := range nodes {
				hosts[i] = n.Host()
			}
			cut(hosts, gaters, leftSide, rightSide)
			ctx := context.Background()
			for _, side := range [][]int{leftSide, rightSide} {
				sigs := make([]*signalmesh.Signal, perSide)
				for i := range sigs {
					sigs[i], _ = signalmesh.New("bench.write", "/bench", nil)
				}
				// half from each of the first two peers of the side
				if err := nodes[side[0]].Publish(ctx, sigs[:perSide/2]...); err != nil {
					b.Fatal(err)
				}
				if err := nodes[side[1]].Publish(ctx, sigs[perSide/2:]...); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := bench.Await(ctx, time.Minute, func() bool {
				for i, n := range nodes {
					c, _, _ := n.JournalDigest(ctx)
					want := perSide
					if c != want {
						_ = i
						return false
					}
				}
				return true
			}); err != nil {
				b.Fatal(err)
			}
			heal(b, hosts, gaters)
			took, err := bench.Await(ctx, 5*time.Minute, func() bool { return identical(ctx, nodes, 2*perSide) })
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(took.Milliseconds()), "ms-to-converge")
			b.StartTimer()
		}
	})
	for _, batched := range []bool{false, true} {
		name := "crdt-unbatched"
		if batched {
			name = "crdt-batched"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				peers, gaters := newRaw(b, partitionPeers, bench.RawOptions{CRDT: true, Topic: "raw", Rebroadcast: 2 * time.Second})
				hosts := make([]host.Host, len(peers))
				for i, p := range peers {
					hosts[i] = p.Host
				}
				cut(hosts, gaters, leftSide, rightSide)
				ctx := context.Background()
				for s, side := range [][]int{leftSide, rightSide} {
					for k, i := range side[:2] {
						if err := rawWrite(ctx, peers[i], fmt.Sprintf("%d-%d", s, k), perSide/2, batched); err != nil {
							b.Fatal(err)
						}
					}
				}
				if _, err := bench.Await(ctx, 5*time.Minute, func() bool { return rawAll(ctx, peers, perSide) }); err != nil {
					b.Fatal(err)
				}
				heal(b, hosts, gaters)
				took, err := bench.Await(ctx, 10*time.Minute, func() bool { return rawAll(ctx, peers, 2*perSide) })
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(took.Milliseconds()), "ms-to-converge")
				b.StartTimer()
			}
		})
	}
}

// BenchmarkPartitionHeal/gossipsub is the same cut with raw GossipSub: what
// each side publishes while cut never reaches the other side, heal or not.
// Reports the share of the other side's messages a peer has 5 s after the
// heal (other-side-%).
func BenchmarkPartitionHealGossipSub(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		peers, gaters := newRaw(b, partitionPeers, bench.RawOptions{Topic: "cut"})
		hosts := make([]host.Host, len(peers))
		got := make([]atomic.Int64, len(peers))
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for i, p := range peers {
			hosts[i] = p.Host
			if err := p.CountMessages(ctx, &wg, &got[i]); err != nil {
				b.Fatal(err)
			}
		}
		cut(hosts, gaters, leftSide, rightSide)
		for _, side := range [][]int{leftSide, rightSide} {
			for k, i := range side[:2] {
				for j := 0; j < perSide/2; j++ {
					_ = peers[i].Topic.Publish(ctx, []byte(fmt.Sprintf("%d-%d-%d", i, k, j)))
				}
			}
		}
		time.Sleep(2 * time.Second) // let each side's own gossip settle
		before := make([]int64, len(peers))
		for i := range got {
			before[i] = got[i].Load()
		}
		heal(b, hosts, gaters)
		time.Sleep(5 * time.Second) // nothing to wait for: GossipSub never resends
		var other int64
		for i := range got {
			other += got[i].Load() - before[i]
		}
		b.ReportMetric(100*float64(other)/float64(len(peers)*perSide), "other-side-%")
		cancel()
		wg.Wait()
		b.StartTimer()
	}
}

func rawWrite(ctx context.Context, p *bench.RawPeer, prefix string, n int, batched bool) error {
	val := make([]byte, 200)
	if !batched {
		for i := 0; i < n; i++ {
			if err := p.CRDT.Put(ctx, ds.NewKey(fmt.Sprintf("/%s/%d", prefix, i)), val); err != nil {
				return err
			}
		}
		return nil
	}
	bt, err := p.CRDT.Batch(ctx)
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		if err := bt.Put(ctx, ds.NewKey(fmt.Sprintf("/%s/%d", prefix, i)), val); err != nil {
			return err
		}
	}
	return bt.Commit(ctx)
}

func rawAll(ctx context.Context, peers []*bench.RawPeer, want int) bool {
	for _, p := range peers {
		if c, err := p.Count(ctx); err != nil || c != want {
			return false
		}
	}
	return true
}

func identical(ctx context.Context, nodes []*node.Node, want int) bool {
	first := ""
	for i, n := range nodes {
		c, d, err := n.JournalDigest(ctx)
		if err != nil || c != want || (i > 0 && d != first) {
			return false
		}
		first = d
	}
	return true
}

const burstPeers, burstSize = 5, 10000

// BenchmarkBurst: one peer publishes 10,000 signals as fast as it can to 4
// others (16 concurrent publishers). Reports the fraction delivered to the
// worst subscriber (min-delivered-%) and the time until all were delivered
// or delivery stopped.
func BenchmarkBurst(b *testing.B) {
	b.Run("signalmesh", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			nodes, _ := newMesh(b, burstPeers, "")
			counts := make([]atomic.Int64, len(nodes))
			for i, n := range nodes[1:] {
				if _, err := n.Subscribe("burst.*", func(context.Context, *signalmesh.Signal) error {
					counts[i].Add(1)
					return nil
				}); err != nil {
					b.Fatal(err)
				}
			}
			start := time.Now()
			parallelPublish(b, burstSize, func(i int) error {
				s, _ := signalmesh.New("burst.tick", "/bench", nil)
				return nodes[0].Publish(context.Background(), s)
			})
			took := reportBurst(b, counts[:len(nodes)-1], start)
			b.ReportMetric(burstSize/took.Seconds(), "signals/s-to-all")
			b.StartTimer()
		}
	})
	b.Run("gossipsub", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			peers, _ := newRaw(b, burstPeers, bench.RawOptions{Topic: "burst"})
			counts := make([]atomic.Int64, len(peers)-1)
			var wg sync.WaitGroup
			ctx, cancel := context.WithCancel(context.Background())
			for i, p := range peers[1:] {
				if err := p.CountMessages(ctx, &wg, &counts[i]); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := bench.Await(ctx, 10*time.Second, func() bool { return len(peers[0].Topic.ListPeers()) == len(peers)-1 }); err != nil {
				b.Fatal(err)
			}
			time.Sleep(1500 * time.Millisecond) // let the mesh form on a heartbeat: a fair start for GossipSub
			start := time.Now()
			payload, _ := mustSig().MarshalBinary()
			parallelPublish(b, burstSize, func(i int) error {
				return peers[0].Topic.Publish(ctx, append([]byte(fmt.Sprint(i)), payload...))
			})
			_ = reportBurst(b, counts, start)
			cancel()
			wg.Wait()
			b.StartTimer()
		}
	})
}

// BenchmarkBurstCRDTUnbatched: the burst through raw go-ds-crdt, one
// unbatched Put per signal, with a tenth of the count (1,000) because each
// Put is a DAG node that every replica fetches in turn.
func BenchmarkBurstCRDTUnbatched(b *testing.B) {
	const n = burstSize / 10
	for b.Loop() {
		b.StopTimer()
		peers, _ := newRaw(b, burstPeers, bench.RawOptions{CRDT: true, Topic: "burst-crdt", Rebroadcast: 2 * time.Second})
		ctx := context.Background()
		val, _ := mustSig().MarshalBinary()
		start := time.Now()
		for i := 0; i < n; i++ {
			if err := peers[0].CRDT.Put(ctx, ds.NewKey(fmt.Sprint(i)), val); err != nil {
				b.Fatal(err)
			}
		}
		wrote := time.Since(start)
		took, err := bench.Await(ctx, 10*time.Minute, func() bool { return rawAll(ctx, peers, n) })
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(wrote.Milliseconds()), "ms-to-write")
		b.ReportMetric(float64((wrote + took).Milliseconds()), "ms-to-last")
		b.ReportMetric(n/(wrote+took).Seconds(), "signals/s-to-all")
		b.StartTimer()
	}
}

func mustSig() *signalmesh.Signal {
	s, _ := signalmesh.New("burst.tick", "/bench", nil)
	return s
}

func parallelPublish(b *testing.B, total int, publish func(i int) error) {
	const writers = 16
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += writers {
				if err := publish(i); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// reportBurst waits until every subscriber has the whole burst, or until no
// delivery happened for 5 s, and reports the worst fraction.
func reportBurst(b *testing.B, counts []atomic.Int64, start time.Time) time.Duration {
	last, lastChange := int64(-1), time.Now()
	for {
		total, min := int64(0), int64(burstSize)
		for i := range counts {
			c := counts[i].Load()
			total += c
			min = minInt(min, c)
		}
		if min == burstSize || time.Since(lastChange) > 5*time.Second {
			took := time.Since(start)
			if min != burstSize {
				took -= 5 * time.Second // the quiet wait
			}
			b.ReportMetric(100*float64(min)/burstSize, "min-delivered-%")
			b.ReportMetric(float64(took.Milliseconds()), "ms-to-last")
			return took
		}
		if total != last {
			last, lastChange = total, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func minInt(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

const durableN = 20000

// BenchmarkDurablePublish: one peer, on-disk store, no other peers. Reports
// signals per second made durable (Publish returned / Put returned).
func BenchmarkDurablePublish(b *testing.B) {
	b.Run("signalmesh-16-writers", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			nodes, _ := newMesh(b, 1, b.TempDir())
			sigs := make([]*signalmesh.Signal, durableN)
			for i := range sigs {
				sigs[i] = mustSig()
			}
			start := time.Now()
			parallelPublish(b, durableN, func(i int) error { return nodes[0].Publish(context.Background(), sigs[i]) })
			b.ReportMetric(durableN/time.Since(start).Seconds(), "signals/s")
			b.StartTimer()
		}
	})
	b.Run("signalmesh-batches-of-100", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			nodes, _ := newMesh(b, 1, b.TempDir())
			sigs := make([]*signalmesh.Signal, durableN)
			for i := range sigs {
				sigs[i] = mustSig()
			}
			start := time.Now()
			for i := 0; i < durableN; i += 100 {
				if err := nodes[0].Publish(context.Background(), sigs[i:i+100]...); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(durableN/time.Since(start).Seconds(), "signals/s")
			b.StartTimer()
		}
	})
	b.Run("crdt-unbatched", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			peers, _ := newRaw(b, 1, bench.RawOptions{CRDT: true, Topic: "durable", DataDir: b.TempDir()})
			const n = 2000 // unbatched Puts are slow; a tenth of the others' count
			val, _ := mustSig().MarshalBinary()
			start := time.Now()
			for i := 0; i < n; i++ {
				if err := peers[0].CRDT.Put(context.Background(), ds.NewKey(fmt.Sprint(i)), val); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(n/time.Since(start).Seconds(), "signals/s")
			b.StartTimer()
		}
	})
}
