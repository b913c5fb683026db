// Package journal is the replicated signal log: signals stored by id in a
// go-datastore (in a mesh, the Merkle-CRDT store), read back one by one, as
// cause→effect chains, or replayed in one deterministic causal order that is
// the same on every replica holding the same signals.
//
// Keys are the signal id in unpadded base64url under the journal's prefix, so
// that any id is a single key segment; values are the binary wire form.
package journal

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"slices"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/vclock"
)

// ErrNotFound: no signal with that id.
var ErrNotFound = errors.New("journal: not found")

// Key returns the datastore key of a signal id.
func Key(id string) ds.Key {
	return ds.RawKey("/" + base64.RawURLEncoding.EncodeToString([]byte(id)))
}

// Journal reads signals from a datastore. Writing is the caller's (batched)
// business: put Key(s.ID) → s.MarshalBinary().
type Journal struct {
	d   ds.Read
	lim signalmesh.Limits
}

// New returns a journal over d.
func New(d ds.Read) *Journal { return &Journal{d: d} }

// Get returns the signal with id.
func (j *Journal) Get(ctx context.Context, id string) (*signalmesh.Signal, error) {
	b, err := j.d.Get(ctx, Key(id))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	return signalmesh.DecodeBinary(b, j.lim)
}

// All returns every signal, in no particular order. Entries that do not
// decode are skipped and counted in bad.
func (j *Journal) All(ctx context.Context) (sigs []*signalmesh.Signal, bad int, err error) {
	res, err := j.d.Query(ctx, query.Query{})
	if err != nil {
		return nil, 0, err
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return nil, bad, r.Error
		}
		s, err := signalmesh.DecodeBinary(r.Value, j.lim)
		if err != nil || ds.RawKey(r.Key).BaseNamespace() != Key(s.ID).BaseNamespace() {
			bad++
			continue
		}
		sigs = append(sigs, s)
	}
	return sigs, bad, nil
}

// Replay returns every signal whose type matches match (nil: all), in causal
// order: sorted by Sort, which every replica computes the same way.
func (j *Journal) Replay(ctx context.Context, match func(*signalmesh.Signal) bool) ([]*signalmesh.Signal, error) {
	all, _, err := j.All(ctx)
	if err != nil {
		return nil, err
	}
	if match != nil {
		all = slices.DeleteFunc(all, func(s *signalmesh.Signal) bool { return !match(s) })
	}
	Sort(all)
	return all, nil
}

// Causes follows causeid links from id back to the root cause and returns
// the chain, cause first, ending with the signal itself. A cause that is not
// in the journal (yet) ends the chain early.
func (j *Journal) Causes(ctx context.Context, id string) ([]*signalmesh.Signal, error) {
	s, err := j.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	chain := []*signalmesh.Signal{s}
	seen := map[string]bool{id: true}
	for c := s.CauseID(); c != "" && !seen[c]; c = chain[0].CauseID() {
		seen[c] = true
		cs, err := j.Get(ctx, c)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		chain = append([]*signalmesh.Signal{cs}, chain...)
	}
	return chain, nil
}

// Effects returns the signals whose cause is id, directly, in causal order.
func (j *Journal) Effects(ctx context.Context, id string) ([]*signalmesh.Signal, error) {
	return j.Replay(ctx, func(s *signalmesh.Signal) bool { return s.CauseID() == id })
}

// Trace returns the whole cause→effect tree around id: its causes back to
// the root (root first, ending with the signal itself, as Causes) and every
// signal that descends from it through causeid links, in replay order.
func (j *Journal) Trace(ctx context.Context, id string) (causes, effects []*signalmesh.Signal, err error) {
	if causes, err = j.Causes(ctx, id); err != nil {
		return nil, nil, err
	}
	all, err := j.Replay(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	children := map[string][]*signalmesh.Signal{}
	for _, s := range all {
		if c := s.CauseID(); c != "" {
			children[c] = append(children[c], s)
		}
	}
	seen := map[string]bool{id: true}
	for queue := []string{id}; len(queue) > 0; queue = queue[1:] {
		for _, c := range children[queue[0]] {
			if !seen[c.ID] {
				seen[c.ID] = true
				effects = append(effects, c)
				queue = append(queue, c.ID)
			}
		}
	}
	Sort(effects)
	return causes, effects, nil
}

// ClockOf returns the vector clock a signal carries (empty when it has none).
func ClockOf(s *signalmesh.Signal) (vclock.Clock, error) {
	var c vclock.Clock
	v, _ := s.Extensions[signalmesh.ExtClock].(string)
	if v == "" {
		return c, nil
	}
	err := c.UnmarshalText([]byte(v))
	return c, err
}

// Sort orders signals for replay: by the sum of the signal's clock, then by
// id. If a happened before b, a's sum is smaller, so this is a linear
// extension of the causal order, and it depends only on the signals
// themselves: every replica holding the same signals sorts them the same way.
func Sort(sigs []*signalmesh.Signal) {
	type keyed struct {
		sum uint64
		s   *signalmesh.Signal
	}
	ks := make([]keyed, len(sigs))
	for i, s := range sigs {
		c, _ := ClockOf(s)
		ks[i] = keyed{c.Sum(), s}
	}
	slices.SortFunc(ks, func(a, b keyed) int {
		return cmp.Or(cmp.Compare(a.sum, b.sum), cmp.Compare(a.s.ID, b.s.ID))
	})
	for i := range ks {
		sigs[i] = ks[i].s
	}
}

// Digest is a SHA-256 over the ids of sigs, in order, in hex.
func Digest(sigs []*signalmesh.Signal) string {
	return digest(func(yield func(string) bool) {
		for _, s := range sigs {
			if !yield(s.ID) {
				return
			}
		}
	})
}

// KeyDigest returns the number of entries and a digest of their keys in
// key order, without reading a value: two journals over the same set of
// signals have the same key digest (the values under a key are the signal
// with that id). Cheaper than Digest of a Replay by far.
func (j *Journal) KeyDigest(ctx context.Context) (int, string, error) {
	res, err := j.d.Query(ctx, query.Query{KeysOnly: true})
	if err != nil {
		return 0, "", err
	}
	all, err := res.Rest()
	if err != nil {
		return 0, "", err
	}
	keys := make([]string, len(all))
	for i, e := range all {
		keys[i] = e.Key
	}
	slices.Sort(keys)
	return len(keys), digest(slices.Values(keys)), nil
}

func digest(ids iter.Seq[string]) string {
	h := sha256.New()
	for id := range ids {
		h.Write([]byte(id))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}
