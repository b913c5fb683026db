package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"
	"github.com/nats-io/nats.go"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/node"
)

// Kinds of peer a scenario runs. Each runs in this process or, with
// Spec.Processes, in an OS process of its own.
const (
	KindMesh   = "signalmesh" // a signalmesh node
	KindGossip = "gossipsub"  // raw GossipSub, default options, no journal
	// KindGossipTuned is raw GossipSub with signalmesh's own GossipSub
	// options (RawOptions.Tuned), no journal.
	KindGossipTuned = "gossipsub-tuned"
	KindNATS        = "nats" // a NATS core client of a local nats-server
)

// AgentConfig says what an agent runs.
type AgentConfig struct {
	Kind    string `json:"kind"`
	Mesh    string `json:"mesh"`               // mesh name, GossipSub topic or NATS subject
	DataDir string `json:"data_dir,omitempty"` // signalmesh on disk; empty: memory
	NATSURL string `json:"nats_url,omitempty"`
	// Cause and Effects are for a reopen agent (KindReopen): the id of a
	// journaled signal and how many journaled signals name it as their
	// cause, for it to time Effects and check the count.
	Cause   string `json:"cause,omitempty"`
	Effects int    `json:"effects,omitempty"`
}

// Info is how other peers reach an agent.
type Info struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
}

// PublishReq asks an agent to publish N signals of Type.
type PublishReq struct {
	Type    string  `json:"type"`
	N       int     `json:"n"`
	Rate    float64 `json:"rate,omitempty"`    // signals/s, paced; 0: as fast as Writers can
	Writers int     `json:"writers,omitempty"` // concurrent publishers; default 1
	Batch   int     `json:"batch,omitempty"`   // signals per Publish call; default 1
	Payload int     `json:"payload,omitempty"` // data bytes per signal
	// Level: "eventual" (default), "weak", "quorum1", or "mixed" (each
	// call picks one of the three from Seed).
	Level string `json:"level,omitempty"`
	Seed  uint64 `json:"seed,omitempty"`
}

// Sent is one published signal: when Publish was called, how long it took
// and with what consistency.
type Sent struct {
	At    int64  `json:"at"` // unix ns
	Took  int64  `json:"took"`
	Level string `json:"level,omitempty"`
}

// Stats are an agent's costs. CPU and memory are its process's: per peer
// with Spec.Processes, shared by all in-process peers otherwise.
type Stats struct {
	BytesIn   int64   `json:"bytes_in"`
	BytesOut  int64   `json:"bytes_out"`
	RPCsIn    int64   `json:"rpcs_in"`
	RPCsOut   int64   `json:"rpcs_out"`
	Heads     int     `json:"heads"`
	Journaled int64   `json:"journaled"`
	CPU       float64 `json:"cpu_s"`
	MaxRSS    float64 `json:"max_rss_mib"`
	Heap      float64 `json:"heap_mib"`
}

// Peer is one participant of a scenario, in this process (*agent) or in
// another (*remote). Every method is safe for concurrent use.
type Peer interface {
	Info() Info
	Connect(ctx context.Context, peers []Info) error
	// Block refuses and drops connections to the given peers; Unblock lifts
	// every block (connections are made again by Connect).
	Block(ids []string) error
	Unblock() error
	// Watch starts recording the first arrival time of every signal whose
	// type matches pattern (signalmesh) or every message (baselines).
	Watch(ctx context.Context, pattern string) error
	Publish(ctx context.Context, req PublishReq) error
	Count() (int, error)
	Arrivals() (map[string]int64, error)
	Sent() (map[string]Sent, error)
	// Digest: journal entries and their digest (signalmesh only).
	Digest(ctx context.Context) (int, string, error)
	// Journaled: journal entries seen arriving, a cheap lower bound to poll
	// before the digest (signalmesh only).
	Journaled(ctx context.Context) (int64, error)
	Stats(ctx context.Context) (Stats, error)
	Close() error
}

// agent runs one peer of any kind in this process.
type agent struct {
	cfg   AgentConfig
	node  *node.Node
	raw   *RawPeer
	nc    *nats.Conn
	gater *node.Blocklist
	bytes byteCounter

	mu       sync.Mutex
	arrivals map[string]int64
	sent     map[string]Sent
	nsub     *nats.Subscription
	cancel   context.CancelFunc
	wg       sync.WaitGroup // the gossip consumer
}

func newAgent(ctx context.Context, cfg AgentConfig) (*agent, error) {
	a := &agent{cfg: cfg, gater: node.NewBlocklist(), arrivals: map[string]int64{}, sent: map[string]Sent{}}
	var err error
	switch cfg.Kind {
	case KindMesh:
		a.node, err = node.New(ctx, node.Config{Mesh: cfg.Mesh, DataDir: cfg.DataDir, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
			Gater: a.gater, Logger: Quiet(), HostOptions: []libp2p.Option{libp2p.BandwidthReporter(&a.bytes)}})
	case KindGossip, KindGossipTuned:
		a.raw, err = NewRawPeer(RawOptions{Topic: cfg.Mesh, Gater: a.gater, Reporter: &a.bytes, Tuned: cfg.Kind == KindGossipTuned})
	case KindNATS:
		a.nc, err = nats.Connect(cfg.NATSURL, nats.Name("signalmesh-bench"))
	default:
		err = fmt.Errorf("unknown kind %q", cfg.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("bench: %s agent: %w", cfg.Kind, err)
	}
	return a, nil
}

func (a *agent) Info() Info {
	switch {
	case a.node != nil:
		return hostInfo(a.node.AddrInfo())
	case a.raw != nil:
		return hostInfo(peer.AddrInfo{ID: a.raw.Host.ID(), Addrs: a.raw.Host.Addrs()})
	}
	return Info{ID: fmt.Sprintf("nats-%p", a)}
}

func hostInfo(ai peer.AddrInfo) Info {
	in := Info{ID: ai.ID.String()}
	for _, m := range ai.Addrs {
		in.Addrs = append(in.Addrs, m.String())
	}
	return in
}

func (a *agent) Connect(ctx context.Context, peers []Info) error {
	self := a.Info().ID
	for _, p := range peers {
		if p.ID == self || a.nc != nil {
			continue
		}
		ai, err := addrInfo(p)
		if err != nil {
			return err
		}
		if a.node != nil {
			err = a.node.Connect(ctx, ai)
		} else {
			node.ClearDialBackoff(a.raw.Host, ai.ID)
			err = a.raw.Host.Connect(ctx, ai)
		}
		if err != nil {
			return fmt.Errorf("connect %s: %w", p.ID, err)
		}
	}
	return nil
}

func addrInfo(p Info) (peer.AddrInfo, error) {
	id, err := peer.Decode(p.ID)
	if err != nil {
		return peer.AddrInfo{}, err
	}
	ai := peer.AddrInfo{ID: id}
	for _, s := range p.Addrs {
		m, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return peer.AddrInfo{}, err
		}
		ai.Addrs = append(ai.Addrs, m)
	}
	return ai, nil
}

func (a *agent) Block(ids []string) error {
	for _, s := range ids {
		id, err := peer.Decode(s)
		if err != nil {
			return err
		}
		a.gater.Block(id)
		switch {
		case a.node != nil:
			_ = a.node.Disconnect(id)
		case a.raw != nil:
			_ = a.raw.Host.Network().ClosePeer(id)
		}
	}
	return nil
}

func (a *agent) Unblock() error { a.gater.Clear(); return nil }

func (a *agent) arrived(id string) {
	now := time.Now().UnixNano()
	a.mu.Lock()
	if _, ok := a.arrivals[id]; !ok {
		a.arrivals[id] = now
	}
	a.mu.Unlock()
}

func (a *agent) Watch(ctx context.Context, pattern string) error {
	switch {
	case a.node != nil:
		_, err := a.node.Subscribe(pattern, func(_ context.Context, s *signalmesh.Signal) error {
			a.arrived(s.ID)
			return nil
		})
		return err
	case a.raw != nil:
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.cancel != nil {
			return errors.New("bench: already watching")
		}
		cctx, cancel := context.WithCancel(context.Background())
		a.cancel = cancel
		return a.raw.Consume(cctx, &a.wg, func(data []byte) { a.arrived(messageID(data)) })
	default:
		sub, err := a.nc.Subscribe(a.cfg.Mesh, func(m *nats.Msg) { a.arrived(messageID(m.Data)) })
		if err != nil {
			return err
		}
		// A flush makes the subscription known to the server before anyone publishes.
		a.mu.Lock()
		a.nsub = sub
		a.mu.Unlock()
		return a.nc.FlushTimeout(10 * time.Second)
	}
}

// Baseline messages are "<id> <payload>".
func messageID(data []byte) string {
	s := string(data)
	if i := strings.IndexByte(s, ' '); i >= 0 {
		return s[:i]
	}
	return s
}

var levels = []string{"eventual", "weak", "quorum1"}

func (a *agent) Publish(ctx context.Context, req PublishReq) error {
	writers, batch := max(req.Writers, 1), max(req.Batch, 1)
	rng := rand.New(rand.NewPCG(req.Seed, 0x5167))
	payload := make([]byte, req.Payload)
	for i := range payload {
		payload[i] = 'a' + byte(rng.IntN(26))
	}
	// Calls are numbered; call c publishes signals [c*batch, ...) at the
	// level chosen for it up front, so that a run is the same whatever the
	// writers' interleaving.
	calls := (req.N + batch - 1) / batch
	lvls := make([]string, calls)
	for c := range lvls {
		lvls[c] = req.Level
		if req.Level == "" {
			lvls[c] = "eventual"
		} else if req.Level == "mixed" {
			lvls[c] = levels[rng.IntN(len(levels))]
		}
	}
	call := func(c int) error {
		n := min(batch, req.N-c*batch)
		start := time.Now()
		ids, err := a.publishCall(ctx, req.Type, n, payload, lvls[c])
		rec := Sent{At: start.UnixNano(), Took: int64(time.Since(start)), Level: lvls[c]}
		a.mu.Lock()
		for _, id := range ids {
			a.sent[id] = rec
		}
		a.mu.Unlock()
		return err
	}
	if req.Rate > 0 {
		return paced(ctx, req.Rate/float64(batch), calls, writers, call)
	}
	return parallel(calls, writers, call)
}

func (a *agent) publishCall(ctx context.Context, typ string, n int, payload []byte, level string) ([]string, error) {
	if a.node == nil {
		ids := make([]string, n)
		for i := range ids {
			s, err := signalmesh.New(typ, "/bench", nil)
			if err != nil {
				return nil, err
			}
			ids[i] = s.ID
			msg := append([]byte(s.ID+" "), payload...)
			if a.raw != nil {
				err = a.raw.Topic.Publish(ctx, msg)
			} else {
				err = a.nc.Publish(a.cfg.Mesh, msg)
			}
			if err != nil {
				return ids[:i], err
			}
		}
		return ids, nil
	}
	sigs := make([]*signalmesh.Signal, n)
	ids := make([]string, n)
	for i := range sigs {
		var data any
		if len(payload) > 0 {
			data = payload
		}
		s, err := signalmesh.New(typ, "/bench", data)
		if err != nil {
			return nil, err
		}
		sigs[i], ids[i] = s, s.ID
	}
	c := node.Eventual
	switch level {
	case "weak":
		c = node.Weak
	case "quorum1":
		c = node.Quorum(1)
		if a.cfg.DataDir == "" {
			c = node.QuorumInMemory(1) // peers in memory: their acks are all there is
		}
	}
	return ids, a.node.PublishWith(ctx, c, sigs...)
}

func (a *agent) Count() (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.arrivals), nil
}

func (a *agent) Arrivals() (map[string]int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]int64, len(a.arrivals))
	for k, v := range a.arrivals {
		out[k] = v
	}
	return out, nil
}

func (a *agent) Sent() (map[string]Sent, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]Sent, len(a.sent))
	for k, v := range a.sent {
		out[k] = v
	}
	return out, nil
}

func (a *agent) Digest(ctx context.Context) (int, string, error) {
	if a.node == nil {
		return 0, "", errors.New("bench: no journal on a baseline peer")
	}
	return a.node.JournalDigest(ctx)
}

func (a *agent) Journaled(ctx context.Context) (int64, error) {
	if a.node == nil {
		return 0, errors.New("bench: no journal on a baseline peer")
	}
	return a.node.Arrived(), nil
}

func (a *agent) Stats(ctx context.Context) (Stats, error) {
	st := Stats{BytesIn: a.bytes.in.Load(), BytesOut: a.bytes.out.Load()}
	if a.node != nil {
		ns, err := a.node.Status(ctx)
		if err != nil {
			return st, err
		}
		st.RPCsIn, st.RPCsOut, st.Heads, st.Journaled = ns.RPCsIn, ns.RPCsOut, ns.Heads, ns.Journaled
	}
	if a.raw != nil {
		st.RPCsIn, st.RPCsOut = a.raw.RPCs.In.Load(), a.raw.RPCs.Out.Load()
	}
	if a.nc != nil {
		ns := a.nc.Stats()
		st.BytesIn, st.BytesOut, st.RPCsIn, st.RPCsOut = int64(ns.InBytes), int64(ns.OutBytes), int64(ns.InMsgs), int64(ns.OutMsgs)
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		st.CPU = tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
		st.MaxRSS = float64(ru.Maxrss) / 1024 // KiB on Linux
	}
	if hwm := peakRSS(); hwm > 0 { // since the last resetPeakRSS: per run in this process
		st.MaxRSS = float64(hwm) / (1 << 20)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st.Heap = float64(ms.HeapInuse) / (1 << 20)
	return st, nil
}

func tvSeconds(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }

func (a *agent) Close() error {
	a.mu.Lock()
	cancel, nsub := a.cancel, a.nsub
	a.mu.Unlock()
	if cancel != nil {
		cancel()
		a.wg.Wait()
	}
	switch {
	case a.node != nil:
		return a.node.Close()
	case a.raw != nil:
		return a.raw.Close()
	default:
		if nsub != nil {
			_ = nsub.Unsubscribe()
		}
		a.nc.Close()
		return nil
	}
}

// byteCounter is a libp2p bandwidth reporter that only sums bytes.
type byteCounter struct{ in, out atomic.Int64 }

var _ metrics.Reporter = (*byteCounter)(nil)

func (b *byteCounter) LogSentMessage(n int64)                           { b.out.Add(n) }
func (b *byteCounter) LogRecvMessage(n int64)                           { b.in.Add(n) }
func (b *byteCounter) LogSentMessageStream(int64, protocol.ID, peer.ID) {}
func (b *byteCounter) LogRecvMessageStream(int64, protocol.ID, peer.ID) {}
func (b *byteCounter) GetBandwidthForPeer(peer.ID) metrics.Stats        { return b.GetBandwidthTotals() }
func (b *byteCounter) GetBandwidthForProtocol(protocol.ID) metrics.Stats {
	return b.GetBandwidthTotals()
}
func (b *byteCounter) GetBandwidthByPeer() map[peer.ID]metrics.Stats         { return nil }
func (b *byteCounter) GetBandwidthByProtocol() map[protocol.ID]metrics.Stats { return nil }
func (b *byteCounter) Reset()                                                { b.in.Store(0); b.out.Store(0) }
func (b *byteCounter) TrimIdle(time.Time)                                    {}
func (b *byteCounter) GetBandwidthTotals() metrics.Stats {
	return metrics.Stats{TotalIn: b.in.Load(), TotalOut: b.out.Load()}
}

// parallel runs call(i) for i in [0,n) on writers goroutines and returns
// the first error.
func parallel(n, writers int, call func(i int) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += writers {
				if err := call(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// paced calls call(i) for i in [0,n) at rate calls a second, from a pool of
// writers goroutines so that a slow call does not hold back the next tick.
func paced(ctx context.Context, rate float64, n, writers int, call func(i int) error) error {
	ticks := make(chan int, 1024)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for w := 0; w < max(writers, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ticks {
				if err := call(i); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		if d := time.Until(start.Add(time.Duration(float64(i) * float64(time.Second) / rate))); d > 0 {
			time.Sleep(d)
		}
		ticks <- i
	}
	close(ticks)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return ctx.Err()
	}
}
