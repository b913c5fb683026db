package node

import (
	"bytes"
	"sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
)

// Bounds of the vetted entries waiting for the put hook: a delta's entries
// are merged soon after they are vetted, and one that never is (its delta
// refused for another entry, or a copy that loses to the value already
// merged) is evicted oldest first. go-ds-crdt vets every entry of a delta
// before it merges the first, and its workers (5) walk deltas at once:
// about 5 MiB of values in flight (1 MiB a delta), 26,000 entries of 200
// bytes. The bounds hold that with room for what gossip vetted meanwhile.
// With 4,096 entries, the bench's 8-peer partition of 10,000 signals a
// side decoded and verified 11,044 of its 140,000 remote entries twice
// (8,315 while the sides wrote, 2,729 in the heal); none since. An entry
// costs what it keeps (vettedCost): its value, the decoded signal's copy
// of it, the signal's extensions and the meta's dependencies, and
// vettedOverhead for the rest (the signal, its meta, the key, the map
// slot, the order); so the cost bound holds the memory kept near 48 MiB
// whatever the values' sizes and shapes (TestVettedMemoryWithinItsBound).
// A journaled signal of 200 bytes with 3 extensions costs about 1.8 KiB:
// 27,900 fit, the 26,000 of the workers' deltas with little room; one of
// 32 extensions about 4.5 KiB. (Counted as its value's length and 512
// bytes, an entry kept 2 to 5 times that: 32,768 entries of 32
// extensions kept 137 MB against a stated 32 MiB.)
// Large values are not kept at all: they are rare, and a peer sending
// them in deltas that are refused must not pin memory.
const (
	maxVetted      = 1 << 15
	maxVettedBytes = 48 << 20
	maxVettedValue = 16 << 10
	vettedOverhead = 1024
	vettedPerExt   = 112 // an extension: its map slot, boxed value and name
	vettedPerDep   = 24  // a dependency of the meta (causal.Ref)
)

// vettedCost is the memory an entry keeps: the value, the decoded
// signal's strings and data (copies of the value's bytes), its extensions
// and the meta's dependencies, and the fixed part.
func vettedCost(value []byte, s *signalmesh.Signal, m *causal.Meta) int {
	c := 2*len(value) + vettedOverhead
	if s != nil {
		c += vettedPerExt * len(s.Extensions)
	}
	if m != nil {
		c += vettedPerDep * len(m.Deps)
	}
	return c
}

// vetted hands the put hook what checkEntry decoded and verified of a
// journal entry from another replica: go-ds-crdt vets every entry of a
// delta before it merges it, then calls the put hook with the same key and
// value. The put hook takes the signal instead of decoding and verifying
// the same bytes again. The gossip validator puts the journaled signals it
// decoded and verified too, with their meta, under their journal keys: the
// same wire form comes again in a journal delta, and checkEntry and the put
// hook find it decoded (each signal is decoded and verified once on the
// two paths, when its delta comes while it is kept). Safe for concurrent
// use (go-ds-crdt's workers, GossipSub's validators).
type vetted struct {
	mu    sync.Mutex
	m     map[string]vettedEntry
	fifo  []vettedKey // oldest first from head; stale items (taken, replaced) are skipped
	head  int
	gen   uint64
	bytes int // cost of the entries kept (vettedCost)
}

type vettedEntry struct {
	value []byte
	s     *signalmesh.Signal
	m     *causal.Meta // nil: not read yet
	gen   uint64
	cost  int // vettedCost
}

type vettedKey struct {
	key string
	gen uint64
}

// put remembers the decoded signal s of the checked entry (key, value),
// and its meta when m is not nil.
func (v *vetted) put(key string, value []byte, s *signalmesh.Signal, m *causal.Meta) {
	if len(value) > maxVettedValue {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = make(map[string]vettedEntry)
	}
	v.forget(key)
	v.gen++
	v.fifo = append(v.fifo, vettedKey{key, v.gen})
	c := vettedCost(value, s, m)
	v.m[key] = vettedEntry{value, s, m, v.gen, c}
	v.bytes += c
	for len(v.m) > maxVetted || v.bytes > maxVettedBytes {
		v.evictOldest()
	}
	if len(v.fifo)-v.head > 2*maxVetted { // mostly stale: keep the live ones
		live := make([]vettedKey, 0, len(v.m))
		for _, k := range v.fifo[v.head:] {
			if e, ok := v.m[k.key]; ok && e.gen == k.gen {
				live = append(live, k)
			}
		}
		v.fifo, v.head = live, 0
	}
}

func (v *vetted) evictOldest() {
	for v.head < len(v.fifo) {
		k := v.fifo[v.head]
		v.fifo[v.head] = vettedKey{}
		v.head++
		if e, ok := v.m[k.key]; ok && e.gen == k.gen {
			v.forget(k.key)
			return
		}
	}
}

func (v *vetted) forget(key string) {
	if e, ok := v.m[key]; ok {
		delete(v.m, key)
		v.bytes -= e.cost
	}
}

// value returns the value vetted at key (nil: none), which stays: a
// journal block is built from the values gossip brought (crdt's block
// recipes), then vetted and merged.
func (v *vetted) value(key string) []byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.m[key].value
}

// take returns the signal vetted at key, and its meta when known, if its
// value is value, and forgets it.
func (v *vetted) take(key string, value []byte) (*signalmesh.Signal, *causal.Meta, bool) {
	v.mu.Lock()
	e, ok := v.m[key]
	if ok {
		v.forget(key)
	}
	v.mu.Unlock()
	if !ok || !bytes.Equal(e.value, value) {
		return nil, nil, false
	}
	return e.s, e.m, true
}

// has reports whether (key, value) is vetted, and keeps it for take.
func (v *vetted) has(key string, value []byte) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.m[key]
	return ok && bytes.Equal(e.value, value)
}
