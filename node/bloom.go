package node

import (
	"hash/maphash"
	"sync/atomic"
)

// bloom is a fixed-size Bloom filter over signal ids, safe for concurrent
// use: the put hook adds every id that reaches the journal, and the
// committer asks it before the journal lookup that keeps Publish
// idempotent. A "no" is certain, so a fresh id (the usual case) costs no
// lookup; a "maybe" (about 0.1 % of fresh ids at a million signals) costs
// one.
type bloom struct {
	seed  maphash.Seed
	words []atomic.Uint64
}

const bloomHashes = 4

func newBloom(bits int) *bloom {
	return &bloom{seed: maphash.MakeSeed(), words: make([]atomic.Uint64, bits/64)}
}

func (b *bloom) positions(id string, f func(word int, bit uint64)) {
	h := maphash.String(b.seed, id)
	h1, h2 := h&0xffffffff, h>>32|1
	n := uint64(len(b.words) * 64)
	for i := uint64(0); i < bloomHashes; i++ {
		p := (h1 + i*h2) % n
		f(int(p/64), 1<<(p%64))
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
