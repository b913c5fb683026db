// Package bloomline places a Bloom filter's bits for one key within one
// 64-byte cache line (eight 64-bit words): a lookup or an insert touches
// one line of memory, not one per hash function. The filters of package
// causal and package node use it; they are large (megabytes, one per node)
// and touched once per signal, so a miss per hash function was most of their
// cost. Blocking raises the false-positive rate a little: 0.03 % against
// 0.02 % for four hashes over the whole filter, with an eighth of the bits
// set (TestSlots).
package bloomline

// Hashes is the number of bits set per key.
const Hashes = 4

// lineWords is the words in a cache line.
const lineWords = 8

// Slot is one bit of a key: word index and bit mask.
type Slot struct {
	Word int
	Bit  uint64
}

// Hash is FNV-1a of s with a final mix (murmur3's fmix64): deterministic
// across processes and runs (a filter's answers may be saved and
// replayed), and well mixed in both halves, as Slots needs.
func Hash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

// Slots returns the Hashes bits of the key whose 64-bit hash is h, in a
// filter of words 64-bit words (at least 1). The hash must be well mixed
// (both halves are used).
func Slots(h uint64, words int) [Hashes]Slot {
	lines := max(1, words/lineWords)
	span := uint64(min(words, lineWords) * 64) // bits in a line (fewer in a tiny filter)
	base := int(uint64(uint32(h))%uint64(lines)) * lineWords
	g := h>>32 | h<<32
	g *= 0x9e3779b97f4a7c15 // spread the upper half over all 64 bits
	var out [Hashes]Slot
	for i := range out {
		p := (g >> (16 * i) & 0xffff) % span
		out[i] = Slot{Word: base + int(p/64), Bit: 1 << (p % 64)}
	}
	return out
}

// Touch writes a zero to every page of words, so that the memory is
// committed now (at a node's start) rather than page by page under the
// first signals: a filter is touched at random, so its first few thousand
// keys would each fault in a page (tens of microseconds apiece on a
// virtual machine, measured in the burst benchmark).
func Touch(words []uint64) {
	const pageWords = 4096 / 8
	for i := 0; i < len(words); i += pageWords {
		words[i] = 0
	}
}
