package hostile

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/chaos"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

// Config says whom to attack, from where, and for how long.
type Config struct {
	Mesh      string
	Listen    string // libp2p listen address of every identity (port 0)
	Bootstrap []peer.AddrInfo
	Victims   []peer.ID // the honest nodes, in whose names it forges
	Seed      uint64
	Duration  time.Duration // the attacks are spread over it
	Flood     int           // never-ready signals in all; default 2000
	Log       *slog.Logger
}

// forgers take turns at forged gossip: each forged message graylists its
// sender for a second or two (node/score.go), and a graylisted sender's
// next messages are not even read, so none is counted.
const forgers = 4

// attacker is one run's state.
type attacker struct {
	cfg  Config
	log  *slog.Logger
	mu   sync.Mutex
	rep  chaos.HostileReport
	tops map[string]uint64 // per origin ref, the highest sequence seen in gossip
}

// Run attacks the mesh until ctx ends or Duration has passed and returns
// what it sent. An error is also in the report (Err).
func Run(ctx context.Context, cfg Config) chaos.HostileReport {
	if cfg.Flood == 0 {
		cfg.Flood = 2000
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	a := &attacker{cfg: cfg, log: cfg.Log, tops: map[string]uint64{},
		rep: chaos.HostileReport{Peers: map[string]string{}, Sent: map[string]int{}}}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	if len(cfg.Victims) == 0 || len(cfg.Bootstrap) == 0 {
		a.rep.Err = "no victims or no bootstrap peers"
		return a.rep
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i, f := range []func(context.Context) error{a.forge, a.flood, a.herald, a.journal} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		a.rep.Err = err.Error()
	}
	return a.report()
}

func (a *attacker) report() chaos.HostileReport {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.rep
}

// unreached counts a turn of the attack family whose first kind is kind
// skipped for want of a peer.
func (a *attacker) unreached(kind string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rep.Unreached == nil {
		a.rep.Unreached = map[string]int{}
	}
	a.rep.Unreached[kind]++
}

// sent counts n attacks of kind.
func (a *attacker) sent(kind string, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rep.Sent[kind] += n
}

// start makes the identity of role, runs open on it (before it connects:
// bitswap learns of peers from connection events), and connects it.
func (a *attacker) start(ctx context.Context, role string, open func(*member) error) (*member, error) {
	m, err := newMember(ctx, a.cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", role, err)
	}
	a.mu.Lock()
	a.rep.Peers[role] = m.id.String()
	a.mu.Unlock()
	if open != nil {
		if err := open(m); err != nil {
			m.close()
			return nil, fmt.Errorf("%s: %w", role, err)
		}
	}
	if err := m.connect(ctx, a.cfg.Bootstrap); err != nil {
		m.close()
		return nil, fmt.Errorf("%s: %w", role, err)
	}
	m.redial(a.cfg.Bootstrap)
	return m, nil
}

func (a *attacker) topic(kind string) string { return "/signalmesh/" + a.cfg.Mesh + "/" + kind }

// every calls f(k) for k = 0, 1, ... about every d (jittered by rng) until
// ctx ends; an error of f ends it.
func every(ctx context.Context, rng *mrand.Rand, d time.Duration, f func(k int) error) error {
	for k := 0; ; k++ {
		wait := d/2 + time.Duration(rng.Int64N(int64(d)))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		if err := f(k); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// next is the sequence an origin would use next, as far as gossip told.
func (a *attacker) next(origin peer.ID) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.tops[causal.PeerRef(origin.String())] + 1
}

// noteTops records the highest sequence of each origin in a gossip message.
func (a *attacker) noteTops(data []byte) {
	sigs, err := decodeFrame(data)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range sigs {
		if ref, seq := journal.Place(s); ref != "" {
			a.tops[ref] = max(a.tops[ref], seq)
		}
	}
}

// signal makes a signal of the hostile source in origin's name at seq
// (0: Weak, no stamp).
func (a *attacker) signal(id string, origin peer.ID, seq uint64) *signalmesh.Signal {
	opts := []signalmesh.Option{signalmesh.WithID(id), signalmesh.WithExtension(signalmesh.ExtPeer, origin.String())}
	if seq > 0 {
		opts = append(opts, signalmesh.WithExtension(signalmesh.ExtCausal, fmt.Sprintf("%d/%d/", seq, seq)))
	}
	s, err := signalmesh.New("chaos.hostile", chaos.HostileSource, map[string]any{"id": id}, opts...)
	if err != nil {
		panic(err) // a constant type and source: cannot fail
	}
	return s
}

// frame packs wire forms into one gossip message as a node frames them
// (node/frame.go): 0xF1, a uvarint count, then each length and wire form.
func frame(wires ...[]byte) []byte {
	b := binary.AppendUvarint([]byte{0xF1}, uint64(len(wires)))
	for _, w := range wires {
		b = binary.AppendUvarint(b, uint64(len(w)))
		b = append(b, w...)
	}
	return b
}

// decodeFrame reads a gossip message: one signal, or a frame.
func decodeFrame(b []byte) ([]*signalmesh.Signal, error) {
	if len(b) == 0 || b[0] != 0xF1 {
		s, err := signalmesh.DecodeBinary(b, signalmesh.Limits{})
		return []*signalmesh.Signal{s}, err
	}
	rest := b[1:]
	n, k := binary.Uvarint(rest)
	if k <= 0 || n > 10000 {
		return nil, errors.New("hostile: bad frame")
	}
	rest = rest[k:]
	out := make([]*signalmesh.Signal, 0, n)
	for range n {
		l, k := binary.Uvarint(rest)
		if k <= 0 || uint64(len(rest)-k) < l {
			return nil, errors.New("hostile: bad frame")
		}
		s, err := signalmesh.DecodeBinary(rest[k:k+int(l)], signalmesh.Limits{})
		if err != nil {
			return nil, err
		}
		out = append(out, s)
		rest = rest[k+int(l):]
	}
	return out, nil
}

// wire signs s with m's key (when sign) and returns its wire form.
func (a *attacker) wire(m *member, s *signalmesh.Signal, sign bool) ([]byte, error) {
	if sign {
		if err := node.Sign(a.cfg.Mesh, m.key, s); err != nil {
			return nil, err
		}
	}
	return s.MarshalBinary()
}

// randomBytes returns n random bytes.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}
