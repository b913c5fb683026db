package node

import (
	"sync/atomic"

	"github.com/signalmesh/signalmesh/internal/bloomline"
)

// bloom is a fixed-size Bloom filter over signal ids, safe for concurrent
// use: the put hook adds every id that reaches the journal, and the
// committer asks it before the journal lookup that keeps Publish
// idempotent. A "no" is certain, so a fresh id (the usual case) costs no
// lookup; a "maybe" (about 0.1 % of fresh ids at a million signals) costs
// one.
//
// Its hash is fixed (FNV-1a with a final mix, not a random seed), so that
// Close can store its words and the next start load them (see state.go).
type bloom struct {
	words []atomic.Uint64
}

func newBloom(bits int) *bloom {
	b := &bloom{words: make([]atomic.Uint64, bits/64)}
	for i := 0; i < len(b.words); i += 4096 / 8 {
		b.words[i].Store(0) // commit the memory now (see bloomline.Touch)
	}
	return b
}

// positions calls f with each of id's bits, all in one cache line (see
// package bloomline).
func (b *bloom) positions(id string, f func(word int, bit uint64)) {
	for _, x := range bloomline.Slots(bloomline.Hash(id), len(b.words)) {
		f(x.Word, x.Bit)
	}
}

func (b *bloom) add(id string) {
	b.positions(id, func(w int, bit uint64) { b.words[w].Or(bit) })
}

func (b *bloom) mayHave(id string) bool {
	all := true
	b.positions(id, func(w int, bit uint64) {
		if b.words[w].Load()&bit == 0 {
			all = false
		}
	})
	return all
}

// snapshot returns a copy of the filter's words.
func (b *bloom) snapshot() []uint64 {
	out := make([]uint64, len(b.words))
	for i := range b.words {
		out[i] = b.words[i].Load()
	}
	return out
}

// load ORs words into the filter; false (and nothing loaded) when their
// number is not the filter's.
func (b *bloom) load(words []uint64) bool {
	if len(words) != len(b.words) {
		return false
	}
	for i, w := range words {
		b.words[i].Or(w)
	}
	return true
}
