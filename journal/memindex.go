package journal

import (
	"slices"
	"strings"
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
	ids     map[string]*placed[causal.Copy] // id -> its copies
	effects map[string]*placed[causal.Ref]  // cause id -> the places of its effects
	strs    map[string]string               // origins and sources, held once
}

// placed is an id's copies or a cause's effects in the order added,
// sorted when read if they came out of place order. Most have one: it is
// held in one.
type placed[E any] struct {
	one   [1]E
	list  []E
	messy bool
}

func newPlaced[E any](e E) *placed[E] {
	l := &placed[E]{one: [1]E{e}}
	l.list = l.one[:]
	return l
}

// add appends e, at place ref.
func (l *placed[E]) add(e E, ref, last causal.Ref) {
	if comparePlaces(last, ref) >= 0 {
		l.messy = true
	}
	l.list = append(l.list, e)
}

// NewMemIndex returns an empty MemIndex.
func NewMemIndex() *MemIndex {
	return &MemIndex{ids: map[string]*placed[causal.Copy]{}, effects: map[string]*placed[causal.Ref]{}, strs: map[string]string{}}
}

// Add indexes the signal m describes, as IndexEntries' entries would: by
// its id, and by its cause when it names one. Adding a place twice keeps
// one entry (the last one's digest and source, as a store's Put would).
// It appends: a list out of order (a cause whose effects come from several
// origins) is sorted when it is next read, so one cause with a million
// effects costs no more per effect than one with a single effect.
//
// The index keeps copies of m's strings, not m's: a decoded signal's
// strings share the signal's text (signalmesh.DecodeBinary), which a key
// kept in a map would keep for the life of the index. A list is changed
// through its pointer, never stored again: storing to a map's existing
// string key replaces the key with the new string.
func (x *MemIndex) Add(m causal.Meta) {
	x.mu.Lock()
	defer x.mu.Unlock()
	ref := causal.Ref{Origin: x.intern(m.Origin), Seq: m.Seq}
	cp := causal.Copy{Ref: ref, Digest: m.Digest, Source: x.intern(m.Source)}
	if l := x.ids[m.ID]; l != nil {
		l.add(cp, ref, l.list[len(l.list)-1].Ref)
	} else {
		x.ids[strings.Clone(m.ID)] = newPlaced(cp)
	}
	if m.Cause == "" {
		return
	}
	if l := x.effects[m.Cause]; l != nil {
		l.add(ref, ref, l.list[len(l.list)-1])
	} else {
		x.effects[strings.Clone(m.Cause)] = newPlaced(ref)
	}
}

// intern returns s, held once: a journal's signals share a few origins and
// sources, each of which every decoded signal holds a copy of.
func (x *MemIndex) intern(s string) string {
	if v, ok := x.strs[s]; ok {
		return v
	}
	s = strings.Clone(s)
	x.strs[s] = s
	return s
}

// Len returns how many places the index holds by id.
func (x *MemIndex) Len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for _, l := range x.ids {
		n += len(tidyCopies(l))
	}
	return n
}

// copies is Journal.Copies over the index: sorted by place, a copy the
// caller may keep.
func (x *MemIndex) copies(id string) []causal.Copy {
	x.mu.Lock()
	defer x.mu.Unlock()
	if l := x.ids[id]; l != nil {
		return slices.Clone(tidyCopies(l))
	}
	return nil
}

// effectPlaces is Journal.EffectPlaces over the index: sorted, a copy.
func (x *MemIndex) effectPlaces(id string) []causal.Ref {
	x.mu.Lock()
	defer x.mu.Unlock()
	l := x.effects[id]
	if l == nil {
		return nil
	}
	if l.messy {
		slices.SortFunc(l.list, comparePlaces)
		l.list, l.messy = slices.Compact(l.list), false
	}
	return slices.Clone(l.list)
}

// tidyCopies sorts an id's copies by place, keeping the last added of a
// place added twice.
func tidyCopies(l *placed[causal.Copy]) []causal.Copy {
	if !l.messy {
		return l.list
	}
	cs := l.list
	slices.SortStableFunc(cs, func(a, b causal.Copy) int { return comparePlaces(a.Ref, b.Ref) })
	out := cs[:0]
	for i, c := range cs {
		if i+1 < len(cs) && cs[i+1].Ref == c.Ref {
			continue // a later Add of this place follows
		}
		out = append(out, c)
	}
	clear(cs[len(out):])
	l.list, l.messy = out, false
	return out
}

// Remove drops the entries Add made for m (a signal pruned from the
// journal): its place among m.ID's copies and among m.Cause's effects; an
// id or cause left with none is forgotten.
func (x *MemIndex) Remove(m causal.Meta) {
	x.mu.Lock()
	defer x.mu.Unlock()
	ref := causal.Ref{Origin: m.Origin, Seq: m.Seq}
	if l := x.ids[m.ID]; l != nil {
		l.list = slices.DeleteFunc(l.list, func(c causal.Copy) bool { return c.Ref == ref })
		if len(l.list) == 0 {
			delete(x.ids, m.ID)
		}
	}
	if m.Cause == "" {
		return
	}
	if l := x.effects[m.Cause]; l != nil {
		l.list = slices.DeleteFunc(l.list, func(r causal.Ref) bool { return r == ref })
		if len(l.list) == 0 {
			delete(x.effects, m.Cause)
		}
	}
}
