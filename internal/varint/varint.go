// Package varint reads the length-prefixed binary forms signalmesh stores
// (a causal core's state, a node's reopen state): unsigned varints and
// byte strings, each bounded, the first error kept.
package varint

import (
	"encoding/binary"
	"fmt"
)

// Reader reads from B; after the first failure every read returns zero and
// Err says what failed, wrapped in Base.
type Reader struct {
	B    []byte
	Err  error
	Base error
}

// Fail records a failure (only the first counts).
func (d *Reader) Fail(what string) {
	if d.Err == nil {
		d.Err = fmt.Errorf("%w: %s", d.Base, what)
	}
}

// Num reads an unsigned varint.
func (d *Reader) Num() uint64 {
	if d.Err != nil {
		return 0
	}
	v, k := binary.Uvarint(d.B)
	if k <= 0 {
		d.Fail("varint")
		return 0
	}
	d.B = d.B[k:]
	return v
}

// Count reads a count of items of at least minSize bytes each: at most
// limit, and no more than what is left could hold.
func (d *Reader) Count(limit uint64, minSize int) uint64 {
	n := d.Num()
	if n > limit || n > uint64(len(d.B)/minSize) {
		d.Fail("count")
		return 0
	}
	return n
}

// Bytes reads a length-prefixed string of at most limit bytes.
func (d *Reader) Bytes(limit uint64) []byte {
	n := d.Num()
	if d.Err != nil {
		return nil
	}
	if n > limit || n > uint64(len(d.B)) {
		d.Fail("length")
		return nil
	}
	v := d.B[:n]
	d.B = d.B[n:]
	return v
}
