package vclock

import (
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Errors from Buffer.Add. None of them changes the buffer.
var (
	// ErrFull: the buffer holds its limit of waiting items; the new one was
	// not taken. The caller keeps it (or can fetch it again later) and should
	// count the drop.
	ErrFull = errors.New("vclock: causal buffer full")
	// ErrDuplicate: an item with this origin and sequence was already
	// released or is already waiting.
	ErrDuplicate = errors.New("vclock: duplicate")
	// ErrNoOrigin: the clock has no entry for the item's own origin.
	ErrNoOrigin = errors.New("vclock: clock has no entry for its origin")
)

// Gap is a range of sequence numbers of one origin, From to To inclusive,
// that waiting items depend on and the buffer has not seen.
type Gap struct {
	Origin   string
	From, To uint64
}

// Buffer releases items in causal order. Each item comes from an origin
// (the peer that made it) with the origin's clock at that moment, whose
// origin entry is the item's sequence number among that origin's items.
//
// An item is released when it is the origin's next (its sequence is one more
// than the origin's last released) and every other entry of its clock is at
// most what was released from that peer: then everything that happened
// before it has been released. Other items wait, up to a limit.
//
// A Buffer is a plain data structure: it is not safe for concurrent use, it
// starts no goroutines and reads no clock. Release order is deterministic for
// a given sequence of calls.
type Buffer[T any] struct {
	limit     int
	delivered map[string]uint64
	waiting   map[string]map[uint64]waitItem[T] // origin -> sequence -> item
	origins   []string                          // origins with waiting items, sorted
	n         int
}

type waitItem[T any] struct {
	clock Clock
	v     T
}

// NewBuffer returns a buffer that holds at most limit waiting items and
// treats what delivered says as already released (zero value: nothing).
func NewBuffer[T any](limit int, delivered Clock) (*Buffer[T], error) {
	if limit < 1 {
		return nil, fmt.Errorf("vclock: buffer limit %d, must be at least 1", limit)
	}
	b := &Buffer[T]{limit: limit, delivered: make(map[string]uint64, delivered.Len()), waiting: map[string]map[uint64]waitItem[T]{}}
	for _, e := range delivered.e {
		b.delivered[e.Peer] = e.N
	}
	return b, nil
}

// Add offers an item and returns, in causal order, every item that became
// releasable: the item itself and any waiting items it unblocked. On error
// the item was not taken and nothing was released.
func (b *Buffer[T]) Add(origin string, c Clock, v T) ([]T, error) {
	seq := c.Get(origin)
	switch {
	case seq == 0:
		return nil, ErrNoOrigin
	case seq <= b.delivered[origin]:
		return nil, ErrDuplicate
	}
	if _, ok := b.waiting[origin][seq]; ok {
		return nil, ErrDuplicate
	}
	if !b.ready(origin, c) {
		if b.n >= b.limit {
			return nil, ErrFull
		}
		b.hold(origin, seq, waitItem[T]{clock: c, v: v})
		return nil, nil
	}
	b.delivered[origin] = seq
	return b.cascade([]T{v}), nil
}

func (b *Buffer[T]) ready(origin string, c Clock) bool {
	for _, e := range c.e {
		d := b.delivered[e.Peer]
		if e.Peer == origin {
			if e.N != d+1 {
				return false
			}
		} else if e.N > d {
			return false
		}
	}
	return true
}

func (b *Buffer[T]) hold(origin string, seq uint64, it waitItem[T]) {
	m := b.waiting[origin]
	if m == nil {
		m = map[uint64]waitItem[T]{}
		b.waiting[origin] = m
		i, _ := slices.BinarySearch(b.origins, origin)
		b.origins = slices.Insert(b.origins, i, origin)
	}
	m[seq] = it
	b.n++
}

// cascade releases waiting items until none is ready, appending them to out.
func (b *Buffer[T]) cascade(out []T) []T {
	for progress := true; progress; {
		progress = false
		for i := 0; i < len(b.origins); i++ {
			o := b.origins[i]
			next := b.delivered[o] + 1
			it, ok := b.waiting[o][next]
			if !ok || !b.ready(o, it.clock) {
				continue
			}
			b.delivered[o] = next
			out = append(out, it.v)
			b.n--
			delete(b.waiting[o], next)
			if len(b.waiting[o]) == 0 {
				delete(b.waiting, o)
				b.origins = slices.Delete(b.origins, i, i+1)
			}
			progress = true
			i-- // look at the same position again: the next item of o, or the next origin
		}
	}
	return out
}

// Len is the number of waiting items.
func (b *Buffer[T]) Len() int { return b.n }

// Delivered returns the clock of everything released (or given to NewBuffer).
func (b *Buffer[T]) Delivered() Clock {
	e := make([]Entry, 0, len(b.delivered))
	for p, n := range b.delivered {
		e = append(e, Entry{Peer: p, N: n})
	}
	return New(e...)
}

// Missing reports the sequence ranges that waiting items depend on and the
// buffer has not seen, sorted by origin then sequence. Fetching them (and
// adding them) releases the waiting items.
func (b *Buffer[T]) Missing() []Gap {
	need := map[string]uint64{}
	for _, m := range b.waiting {
		for _, it := range m {
			for _, e := range it.clock.e {
				need[e.Peer] = max(need[e.Peer], e.N)
			}
		}
	}
	var gaps []Gap
	for _, o := range slices.Sorted(maps.Keys(need)) {
		next := b.delivered[o] + 1
		for _, s := range slices.Sorted(maps.Keys(b.waiting[o])) {
			if s > next {
				gaps = append(gaps, Gap{Origin: o, From: next, To: s - 1})
			}
			next = s + 1 // waiting sequences are above delivered and at most need[o]
		}
		if next != 0 && next <= need[o] {
			gaps = append(gaps, Gap{Origin: o, From: next, To: need[o]})
		}
	}
	return gaps
}
