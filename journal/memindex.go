package journal

import (
	"slices"
	"sync"

	"github.com/signalmesh/signalmesh/causal"
)

// MemIndex is a journal's index held in memory, for a journal whose store
// is in memory too (a node without a data directory): what IndexEntries
// would write, kept in maps by id and by cause.
//
// The index in a store is a set of keys read by prefix. A map-backed store
// (go-datastore's MapDatastore) answers a prefix query by visiting every
// key it holds, so on an in-memory node each Get, Causes and identity check
// visited the whole store; and every signal cost one or two keys of about
// 100 bytes, built, hashed and copied, on the path of every signal a peer
// journals. A MemIndex costs a map lookup per signal and per read.
//
// It is safe for concurrent use.
type MemIndex struct {
	mu      sync.Mutex
	ids     map[string][]causal.Copy // id -> its copies, in the order added
	effects map[string][]causal.Ref  // cause id -> the places of its effects, in the order added
	messy   map[string]bool          // ids and causes whose list is out of place order: sorted when read
	strs    map[string]string        // origins and sources, held once
}

// NewMemIndex returns an empty MemIndex.
func NewMemIndex() *MemIndex {
	return &MemIndex{ids: map[string][]causal.Copy{}, effects: map[string][]causal.Ref{},
		messy: map[string]bool{}, strs: map[string]string{}}
}

// Add indexes the signal m describes, as IndexEntries' entries would: by
// its id, and by its cause when it names one. Adding a place twice keeps
// one entry (the last one's digest and source, as a store's Put would).
// It appends: a list out of order (a cause whose effects come from several
// origins) is sorted when it is next read, so one cause with a million
// effects costs no more per effect than one with a single effect.
func (x *MemIndex) Add(m causal.Meta) {
	x.mu.Lock()
	defer x.mu.Unlock()
	ref := causal.Ref{Origin: x.intern(m.Origin), Seq: m.Seq}
	cs := append(x.ids[m.ID], causal.Copy{Ref: ref, Digest: m.Digest, Source: x.intern(m.Source)})
	if len(cs) > 1 && comparePlaces(cs[len(cs)-2].Ref, ref) >= 0 {
		x.messy["i"+m.ID] = true
	}
	x.ids[m.ID] = cs
	if m.Cause == "" {
		return
	}
	es := append(x.effects[m.Cause], ref)
	if len(es) > 1 && comparePlaces(es[len(es)-2], ref) >= 0 {
		x.messy["e"+m.Cause] = true
	}
	x.effects[m.Cause] = es
}

// intern returns s, held once: a journal's signals share a few origins and
// sources, each of which every decoded signal holds a copy of.
func (x *MemIndex) intern(s string) string {
	if v, ok := x.strs[s]; ok {
		return v
	}
	x.strs[s] = s
	return s
}

// Len returns how many places the index holds by id.
func (x *MemIndex) Len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for id := range x.ids {
		n += len(x.tidyIDs(id))
	}
	return n
}

// copies is Journal.Copies over the index: sorted by place, a copy the
// caller may keep.
func (x *MemIndex) copies(id string) []causal.Copy {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.tidyIDs(id))
}

// effectPlaces is Journal.EffectPlaces over the index: sorted, a copy.
func (x *MemIndex) effectPlaces(id string) []causal.Ref {
	x.mu.Lock()
	defer x.mu.Unlock()
	es := x.effects[id]
	if x.messy["e"+id] {
		slices.SortFunc(es, comparePlaces)
		es = slices.Compact(es)
		x.effects[id] = es
		delete(x.messy, "e"+id)
	}
	return slices.Clone(es)
}

// tidyIDs sorts id's copies by place, keeping the last added of a place
// added twice.
func (x *MemIndex) tidyIDs(id string) []causal.Copy {
	cs := x.ids[id]
	if !x.messy["i"+id] {
		return cs
	}
	slices.SortStableFunc(cs, func(a, b causal.Copy) int { return comparePlaces(a.Ref, b.Ref) })
	out := cs[:0]
	for i, c := range cs {
		if i+1 < len(cs) && cs[i+1].Ref == c.Ref {
			continue // a later Add of this place follows
		}
		out = append(out, c)
	}
	clear(cs[len(out):])
	x.ids[id] = out
	delete(x.messy, "i"+id)
	return out
}
