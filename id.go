package signalmesh

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"sync"
	"time"
)

// IDSource makes UUIDv7 identifiers (RFC 9562) that are strictly increasing,
// both as 128-bit numbers and as strings, across every call on the same
// source. The 48-bit millisecond timestamp is followed by a 12-bit
// sub-millisecond fraction that doubles as a counter: when the clock stands
// still or goes backwards, the previous value plus one is used instead
// (method 3 of RFC 9562 section 6.2), so order never depends on the clock
// behaving.
//
// An IDSource is safe for concurrent use.
type IDSource struct {
	now  func() time.Time
	rand io.Reader

	mu   sync.Mutex
	last int64 // milliseconds<<12 | fraction of the last id
}

// NewIDSource returns a source that reads time from now and randomness from
// r. Nil arguments mean time.Now and crypto/rand.
func NewIDSource(now func() time.Time, r io.Reader) *IDSource {
	if now == nil {
		now = time.Now
	}
	if r == nil {
		r = rand.Reader
	}
	return &IDSource{now: now, rand: r}
}

// defaultIDs backs New; it is the process-wide source that makes New's ids
// strictly increasing within the process.
var defaultIDs = NewIDSource(nil, nil)

// NewID returns a new id from the process-wide source used by New.
func NewID() string { return defaultIDs.NewID() }

// NewID returns the next id. It panics only if the random source fails, which
// crypto/rand does not do on supported platforms.
func (g *IDSource) NewID() string {
	var u [16]byte
	if _, err := io.ReadFull(g.rand, u[6:]); err != nil {
		panic("signalmesh: random source failed: " + err.Error())
	}
	nano := g.now().UnixNano()
	ms := nano / 1e6
	v := ms<<12 | (nano-ms*1e6)*4096/1e6
	g.mu.Lock()
	if v <= g.last {
		v = g.last + 1
	}
	g.last = v
	g.mu.Unlock()
	ms, frac := v>>12, v&0xfff
	for i := 0; i < 6; i++ {
		u[i] = byte(ms >> (40 - 8*i))
	}
	u[6] = 0x70 | byte(frac>>8) // version 7
	u[7] = byte(frac)
	u[8] = 0x80 | u[8]&0x3f // variant 10
	return formatUUID(u)
}

func formatUUID(u [16]byte) string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}
