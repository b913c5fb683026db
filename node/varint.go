package node

import "encoding/binary"

// uvarint is binary.Uvarint that refuses overlong encodings, so that every
// message the node accepts has exactly one encoding.
func uvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b)
	if n > 1 && b[n-1] == 0 {
		return 0, 0
	}
	return v, n
}
