package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Env is how a scenario runs its peers.
type Env struct {
	// Processes runs every peer in an OS process of its own (AgentMain).
	Processes bool
	// Seed drives every random choice (sides, who writes, churn, payloads).
	Seed uint64
	// Payload is the data size of each signal, in bytes.
	Payload int
	// Disk puts signalmesh peers on disk (pebble, in a temporary directory
	// removed on close) instead of in memory.
	Disk bool
	// Settle is how long a scenario lets a new GossipSub mesh form (one
	// heartbeat and more) before it publishes, so that every system starts
	// on a formed mesh. Quiet is how long with no new delivery ends the
	// wait for a lossy system's last messages: what has not arrived by
	// then is lost (GossipSub's gossip repairs within a heartbeat or two,
	// 1 s each). Default 1.5 s and 2 s.
	Settle, Quiet time.Duration
	// Round is the run's number among a scenario's repeats: the systems
	// run in the order rotate(systems, Round).
	Round int

	// newPeer, when set, makes every peer instead of an agent (tests).
	newPeer func(ctx context.Context, cfg AgentConfig) (Peer, error)
}

// rotate returns xs rotated left by r: the order in which run r of a
// repeated scenario runs its systems, so that each system runs first, and
// after each other, as often as the others.
func rotate[T any](xs []T, r int) []T {
	if len(xs) == 0 {
		return xs
	}
	r %= len(xs)
	return append(slices.Clone(xs[r:]), xs[:r]...)
}

func (e Env) withDefaults() Env {
	if e.Settle == 0 {
		e.Settle = 1500 * time.Millisecond
	}
	if e.Quiet == 0 {
		e.Quiet = 2 * time.Second
	}
	return e
}

func (e Env) rng(salt uint64) *rand.Rand { return rand.New(rand.NewPCG(e.Seed, salt)) }

// group is n peers of one kind, fully connected.
type group struct {
	kind  string
	peers []Peer
	infos []Info
	stop  func() // the NATS server and the temporary directory, if any
}

// startGroup starts n peers of kind (concurrently: process start-up is
// slow), then connects every pair.
func startGroup(ctx context.Context, env Env, kind string, n int) (*group, error) {
	g := &group{kind: kind, peers: make([]Peer, n), infos: make([]Info, n), stop: func() {}}
	cfg := AgentConfig{Kind: kind, Mesh: fmt.Sprintf("bench-%d", time.Now().UnixNano())}
	if kind == KindNATS {
		s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
			MaxPending: 1 << 30, WriteDeadline: 10 * time.Second})
		if err != nil {
			return nil, err
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			s.Shutdown()
			return nil, errors.New("bench: nats-server did not start")
		}
		g.stop = func() { s.Shutdown(); s.WaitForShutdown() }
		cfg.NATSURL = s.ClientURL()
	}
	dir := ""
	if env.Disk && kind == KindMesh {
		var err error
		if dir, err = os.MkdirTemp("", "signalmesh-bench-"); err != nil {
			g.stop()
			return nil, err
		}
		stop := g.stop
		g.stop = func() { stop(); _ = os.RemoveAll(dir) }
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cfg
			if dir != "" {
				c.DataDir = filepath.Join(dir, fmt.Sprint(i))
			}
			var p Peer
			var err error
			switch {
			case env.newPeer != nil:
				p, err = env.newPeer(ctx, c)
			case env.Processes:
				var r *remote
				if r, err = startRemote(ctx, c); err == nil {
					p = r
				}
			default:
				var a *agent
				if a, err = newAgent(ctx, c); err == nil {
					p = a
				}
			}
			g.peers[i], errs[i] = p, err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		_ = g.Close()
		return nil, err
	}
	for i, p := range g.peers {
		g.infos[i] = p.Info()
	}
	if err := g.connect(ctx); err != nil {
		_ = g.Close()
		return nil, err
	}
	return g, nil
}

func (g *group) connect(ctx context.Context) error {
	errs := make([]error, len(g.peers))
	var wg sync.WaitGroup
	for i, p := range g.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.Connect(ctx, g.infos[i+1:])
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Close closes every peer (concurrently) and the NATS server.
func (g *group) Close() error {
	errs := make([]error, len(g.peers))
	var wg sync.WaitGroup
	for i, p := range g.peers {
		if p == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.Close()
		}()
	}
	wg.Wait()
	g.stop()
	return errors.Join(errs...)
}

// cut separates the groups of peer indices from each other.
func (g *group) cut(sides ...[]int) error {
	for a, side := range sides {
		var others []string
		for b, other := range sides {
			if b != a {
				for _, j := range other {
					others = append(others, g.infos[j].ID)
				}
			}
		}
		for _, i := range side {
			if err := g.peers[i].Block(others); err != nil {
				return err
			}
		}
	}
	return nil
}

// heal lifts every block and reconnects every pair.
func (g *group) heal(ctx context.Context) error {
	for _, p := range g.peers {
		if err := p.Unblock(); err != nil {
			return err
		}
	}
	return g.connect(ctx)
}

func (g *group) watch(ctx context.Context, idx []int, pattern string) error {
	for _, i := range idx {
		if err := g.peers[i].Watch(ctx, pattern); err != nil {
			return err
		}
	}
	return nil
}

// identical reports whether the peers idx hold want journal entries each,
// with one digest.
func (g *group) identical(ctx context.Context, idx []int, want int) bool {
	first := ""
	for k, i := range idx {
		n, d, err := g.peers[i].Digest(ctx)
		if err != nil || n != want || (k > 0 && d != first) {
			return false
		}
		first = d
	}
	return true
}

// arrived reports whether every peer of idx has seen want journal entries
// arrive: cheap enough to poll every few milliseconds.
func (g *group) arrived(ctx context.Context, idx []int, want int) bool {
	for _, i := range idx {
		if n, err := g.peers[i].Journaled(ctx); err != nil || n < int64(want) {
			return false
		}
	}
	return true
}

// awaitIdentical waits until the peers idx hold the same want journal
// entries and returns the moment they did. It polls the cheap arrival
// counts and takes the moment they all reach want; then it checks the
// digests, which read whole journals and would slow down what they wait for
// if they were polled, and whose reading is not part of the time. If the
// digests differ (an entry counted twice), it keeps polling them and takes
// the moment they agree.
func (g *group) awaitIdentical(ctx context.Context, idx []int, want int, timeout time.Duration) (time.Time, error) {
	start := time.Now()
	took, err := Await(ctx, timeout, func() bool { return g.arrived(ctx, idx, want) })
	at := start.Add(took)
	if err != nil || g.identical(ctx, idx, want) {
		return at, err
	}
	start = time.Now()
	more, err := Await(ctx, timeout, func() bool { return g.identical(ctx, idx, want) })
	return start.Add(more), err
}

// counts returns how many signals each of idx has received.
func (g *group) counts(idx []int) ([]int, error) {
	out := make([]int, len(idx))
	for k, i := range idx {
		var err error
		if out[k], err = g.peers[i].Count(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// stats sums the costs of every peer; cpu and memory are per process, so
// in-process they are the whole process's, counted once.
func (g *group) stats(ctx context.Context, env Env) (Stats, error) {
	var sum Stats
	for _, p := range g.peers {
		st, err := p.Stats(ctx)
		if err != nil {
			return sum, err
		}
		sum.BytesIn += st.BytesIn
		sum.BytesOut += st.BytesOut
		sum.RPCsIn += st.RPCsIn
		sum.RPCsOut += st.RPCsOut
		sum.Heads = max(sum.Heads, st.Heads)
		sum.Journaled += st.Journaled
		if env.Processes {
			sum.CPU += st.CPU
			sum.MaxRSS = max(sum.MaxRSS, st.MaxRSS)
			sum.Heap = max(sum.Heap, st.Heap)
		} else {
			sum.CPU, sum.MaxRSS, sum.Heap = st.CPU, st.MaxRSS, st.Heap
		}
	}
	return sum, nil
}

func all(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// split deals peers into k sides of near-equal size at random (seeded).
func split(rng *rand.Rand, n, k int) [][]int {
	perm := rng.Perm(n)
	sides := make([][]int, k)
	for i, p := range perm {
		sides[i%k] = append(sides[i%k], p)
	}
	return sides
}
