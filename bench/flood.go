package bench

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// Flood: a hostile peer gossips flood signals that never become ready
// (their origin's first sequence never comes) to a victim peer, as fast as
// it can, while an honest peer publishes rate signals a second for dur to
// the victim's subscriber. The same honest workload runs first without
// the flood (the baseline, same process, same clock): the figures are the
// honest signals' delivery latency at the victim (p50, p99, max; lost ones
// count as never arriving), the share delivered, how many flood signals
// the victim holds at most (Status.Buffered, bounded by
// Params.OriginBuffer), and the process's peak heap during the run.
func Flood(ctx context.Context, env Env, flood, rate int, dur time.Duration) (*Outcome, error) {
	o := &Outcome{}
	for _, n := range []int{0, flood} {
		figs, err := floodRun(ctx, env, n, rate, dur)
		o.add(figs...)
		if err != nil {
			return o, err
		}
	}
	return o, nil
}

func floodRun(ctx context.Context, env Env, flood, rate int, dur time.Duration) ([]Figure, error) {
	mesh := fmt.Sprintf("flood-%d", time.Now().UnixNano())
	quiet := Quiet()
	victim, err := node.New(ctx, node.Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet})
	if err != nil {
		return nil, err
	}
	defer victim.Close()
	honest, err := node.New(ctx, node.Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: quiet})
	if err != nil {
		return nil, err
	}
	defer honest.Close()
	var mu sync.Mutex
	lat := map[string]float64{}
	if _, err := victim.Subscribe("bench.honest", func(_ context.Context, s *signalmesh.Signal) error {
		mu.Lock()
		lat[s.ID] = ms(time.Since(s.Time))
		mu.Unlock()
		return nil
	}); err != nil {
		return nil, err
	}
	// The flooder: a bare libp2p peer on the signals topic, its GossipSub
	// signing nothing (as a node's), its signals stamped and signed
	// (meshsig) in its own name from sequence 2 on: a member.
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		return nil, err
	}
	defer h.Close()
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ps, err := pubsub.NewGossipSub(fctx, h, pubsub.WithFloodPublish(true), pubsub.WithPeerOutboundQueueSize(4096),
		pubsub.WithNoAuthor(), pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign),
		pubsub.WithMessageIdFn(func(m *pb.Message) string { h := sha256.Sum256(m.Data); return string(h[:]) }))
	if err != nil {
		return nil, err
	}
	topic, err := ps.Join("/signalmesh/" + mesh + "/signals")
	if err != nil {
		return nil, err
	}
	defer topic.Close()
	if err := honest.Connect(ctx, victim.AddrInfo()); err != nil {
		return nil, err
	}
	if err := h.Connect(ctx, victim.AddrInfo()); err != nil {
		return nil, err
	}
	if _, err := Await(ctx, 10*time.Second, func() bool { return len(topic.ListPeers()) > 0 }); err != nil {
		return nil, fmt.Errorf("bench: flooder not in the topic mesh: %w", err)
	}
	runtime.GC()
	debug.FreeOSMemory()
	var peakHeap, maxBuffered uint64
	sample := func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		peakHeap = max(peakHeap, m.HeapInuse)
		if st, err := victim.Status(ctx); err == nil {
			maxBuffered = max(maxBuffered, uint64(st.Buffered))
		}
	}
	var wg sync.WaitGroup
	floodErr := make(chan error, 1)
	if flood > 0 {
		wg.Add(1)
		go func() { // owned: cancelled and awaited below
			defer wg.Done()
			id, key := h.ID().String(), h.Peerstore().PrivKey(h.ID())
			const chunk = 256 // signed a batch at a time, as a node signs (meshsig)
			for k := 2; k <= flood+1 && fctx.Err() == nil; k += chunk {
				sigs := make([]*signalmesh.Signal, 0, chunk)
				var err error
				for j := k; j < k+chunk && j <= flood+1 && err == nil; j++ {
					var s *signalmesh.Signal
					s, err = signalmesh.New("bench.flood", "/flood", nil, signalmesh.WithExtension(signalmesh.ExtPeer, id),
						signalmesh.WithExtension(signalmesh.ExtCausal, fmt.Sprintf("%d/%d/", j, j)))
					sigs = append(sigs, s)
				}
				if err == nil {
					err = node.SignBatch(mesh, key, sigs)
				}
				for _, s := range sigs {
					if err != nil {
						break
					}
					var wire []byte
					if wire, err = s.MarshalBinary(); err == nil {
						err = topic.Publish(fctx, wire)
					}
				}
				if err != nil && fctx.Err() == nil {
					floodErr <- err
					return
				}
			}
		}()
	}
	total := int(float64(rate) * dur.Seconds())
	tick := time.NewTicker(time.Second / time.Duration(rate))
	ids := make([]string, 0, total)
	for len(ids) < total {
		<-tick.C
		s, err := signalmesh.New("bench.honest", "/bench", make([]byte, env.Payload))
		if err != nil {
			tick.Stop()
			return nil, err
		}
		if err := honest.Publish(ctx, s); err != nil {
			tick.Stop()
			return nil, err
		}
		ids = append(ids, s.ID)
		if len(ids)%rate == 0 {
			sample()
		}
	}
	tick.Stop()
	_, _ = Await(ctx, 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(lat) == total })
	sample()
	cancel()
	wg.Wait()
	select {
	case err := <-floodErr:
		return nil, fmt.Errorf("bench: flooder: %w", err)
	default:
	}
	st, _ := victim.Status(ctx)
	mu.Lock()
	xs := make([]float64, 0, total)
	for _, id := range ids {
		if v, ok := lat[id]; ok {
			xs = append(xs, v)
		} else {
			xs = append(xs, math.Inf(1))
		}
	}
	got := len(lat)
	mu.Unlock()
	variant := fmt.Sprintf("honest %d/s for %v, no flood", rate, dur)
	if flood > 0 {
		variant = fmt.Sprintf("honest %d/s for %v, flood of %d never-ready signals", rate, dur, flood)
	}
	figs := []Figure{{System: KindMesh, Variant: variant, Metric: "flood/honest-delivered", Unit: "%", Value: 100 * float64(got) / float64(total),
		Note: fmt.Sprintf("%d of %d at the victim", got, total)}}
	for _, q := range []struct {
		name string
		q    float64
	}{{"p50", 0.5}, {"p99", 0.99}, {"max", 1}} {
		v := quantile(xs, q.q)
		f := Figure{System: KindMesh, Variant: variant, Metric: "flood/honest-latency-" + q.name, Unit: "ms", Value: v}
		if math.IsInf(v, 1) {
			f.Value, f.NotReached = 0, true
		}
		figs = append(figs, f)
	}
	figs = append(figs,
		Figure{System: KindMesh, Variant: variant, Metric: "flood/victim-buffered-max", Unit: "signals", Value: float64(maxBuffered),
			Note: fmt.Sprintf("causal_buffer_full %d", st.Dropped["causal_buffer_full"])},
		Figure{System: KindMesh, Variant: variant, Metric: "flood/peak-heap", Unit: "MiB", Value: float64(peakHeap) / (1 << 20),
			Note: "this process (victim, honest peer and flooder), sampled each second"})
	return figs, nil
}
