package vclock

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Order is the result of comparing two clocks.
type Order int

const (
	// Equal: the clocks are the same.
	Equal Order = iota
	// Before: the receiver happened before the argument.
	Before
	// After: the receiver happened after the argument.
	After
	// Concurrent: neither happened before the other.
	Concurrent
)

func (o Order) String() string {
	switch o {
	case Equal:
		return "Equal"
	case Before:
		return "Before"
	case After:
		return "After"
	case Concurrent:
		return "Concurrent"
	}
	return fmt.Sprintf("Order(%d)", int(o))
}

// Entry is one peer's counter in a clock.
type Entry struct {
	Peer string
	N    uint64
}

// Clock is a vector clock: a counter per peer, zero for peers it does not
// list. The zero value is the empty clock, before every other clock.
//
// Clocks are immutable values: Increment and Merge return new clocks and never
// modify their receiver or argument, so clocks may be shared between
// goroutines freely. Entries are kept sorted by peer, without zero counters,
// which makes equal clocks encode to equal bytes.
type Clock struct {
	e []Entry
}

// ErrMalformed is wrapped by decoding errors.
var ErrMalformed = errors.New("vclock: malformed clock")

// New returns a clock with the given counters; zero counters are dropped and a
// peer listed twice keeps its highest counter.
func New(entries ...Entry) Clock {
	e := make([]Entry, 0, len(entries))
	for _, x := range entries {
		if x.N > 0 {
			e = append(e, x)
		}
	}
	sort.SliceStable(e, func(i, j int) bool { return e[i].Peer < e[j].Peer })
	out := e[:0]
	for _, x := range e {
		if n := len(out); n > 0 && out[n-1].Peer == x.Peer {
			out[n-1].N = max(out[n-1].N, x.N)
			continue
		}
		out = append(out, x)
	}
	return Clock{e: out}
}

// Len is the number of peers with a non-zero counter.
func (c Clock) Len() int { return len(c.e) }

// Entries returns a copy of the clock's entries, sorted by peer.
func (c Clock) Entries() []Entry { return append([]Entry(nil), c.e...) }

// Get returns peer's counter (zero when absent).
func (c Clock) Get(peer string) uint64 {
	i, ok := c.find(peer)
	if !ok {
		return 0
	}
	return c.e[i].N
}

func (c Clock) find(peer string) (int, bool) {
	i := sort.Search(len(c.e), func(i int) bool { return c.e[i].Peer >= peer })
	return i, i < len(c.e) && c.e[i].Peer == peer
}

// Increment returns a copy of c with peer's counter raised by one.
func (c Clock) Increment(peer string) Clock { return c.Set(peer, c.Get(peer)+1) }

// Set returns a copy of c with peer's counter set to n (zero removes it).
func (c Clock) Set(peer string, n uint64) Clock {
	i, ok := c.find(peer)
	e := make([]Entry, 0, len(c.e)+1)
	e = append(e, c.e[:i]...)
	if n > 0 {
		e = append(e, Entry{Peer: peer, N: n})
	}
	if ok {
		i++
	}
	e = append(e, c.e[i:]...)
	return Clock{e: e}
}

// Merge returns the entry-wise maximum of c and o: the least clock that is
// after or equal to both.
func (c Clock) Merge(o Clock) Clock {
	e := make([]Entry, 0, max(len(c.e), len(o.e)))
	i, j := 0, 0
	for i < len(c.e) || j < len(o.e) {
		switch {
		case j == len(o.e) || i < len(c.e) && c.e[i].Peer < o.e[j].Peer:
			e = append(e, c.e[i])
			i++
		case i == len(c.e) || o.e[j].Peer < c.e[i].Peer:
			e = append(e, o.e[j])
			j++
		default:
			e = append(e, Entry{Peer: c.e[i].Peer, N: max(c.e[i].N, o.e[j].N)})
			i++
			j++
		}
	}
	return Clock{e: e}
}

// Compare tells whether c happened Before, After, Equal to or Concurrent
// with o. It does not allocate.
func (c Clock) Compare(o Clock) Order {
	less, greater := false, false // c has an entry below / above o's
	i, j := 0, 0
	for i < len(c.e) || j < len(o.e) {
		switch {
		case j == len(o.e) || i < len(c.e) && c.e[i].Peer < o.e[j].Peer:
			greater = true
			i++
		case i == len(c.e) || o.e[j].Peer < c.e[i].Peer:
			less = true
			j++
		default:
			if c.e[i].N < o.e[j].N {
				less = true
			} else if c.e[i].N > o.e[j].N {
				greater = true
			}
			i++
			j++
		}
		if less && greater {
			return Concurrent
		}
	}
	switch {
	case less:
		return Before
	case greater:
		return After
	}
	return Equal
}

// Sum is the total of all counters: the number of events the clock has seen.
// It is a linear extension of the causal order: Before implies a smaller Sum.
func (c Clock) Sum() uint64 {
	var s uint64
	for _, x := range c.e {
		s += x.N
	}
	return s
}

// String is a human-readable form, such as {a:1 b:3}.
func (c Clock) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, x := range c.e {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%d", x.Peer, x.N)
	}
	b.WriteByte('}')
	return b.String()
}

// AppendBinary appends the compact binary form: a uvarint count, then per
// entry in peer order a uvarint peer length, the peer bytes and a uvarint counter.
func (c Clock) AppendBinary(b []byte) ([]byte, error) {
	b = binary.AppendUvarint(b, uint64(len(c.e)))
	for _, x := range c.e {
		b = binary.AppendUvarint(b, uint64(len(x.Peer)))
		b = append(b, x.Peer...)
		b = binary.AppendUvarint(b, x.N)
	}
	return b, nil
}

// MarshalBinary returns the compact binary form (see AppendBinary).
func (c Clock) MarshalBinary() ([]byte, error) { return c.AppendBinary(nil) }

// UnmarshalBinary decodes the compact binary form. It accepts only the
// canonical form (peers strictly ascending, no zero counter, no trailing bytes)
// and never allocates more than the input's size.
func (c *Clock) UnmarshalBinary(b []byte) error {
	n, k := uvarint(b)
	if k <= 0 {
		return fmt.Errorf("%w: bad count", ErrMalformed)
	}
	b = b[k:]
	if n > uint64(len(b))/2 { // every entry takes at least two bytes
		return fmt.Errorf("%w: %d entries in %d bytes", ErrMalformed, n, len(b))
	}
	e := make([]Entry, 0, n)
	for i := uint64(0); i < n; i++ {
		l, k := uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return fmt.Errorf("%w: bad peer length", ErrMalformed)
		}
		peer := string(b[k : k+int(l)])
		b = b[k+int(l):]
		v, k := uvarint(b)
		if k <= 0 || v == 0 {
			return fmt.Errorf("%w: bad counter for %q", ErrMalformed, peer)
		}
		b = b[k:]
		if len(e) > 0 && peer <= e[len(e)-1].Peer {
			return fmt.Errorf("%w: peers out of order", ErrMalformed)
		}
		e = append(e, Entry{Peer: peer, N: v})
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(b))
	}
	c.e = e
	return nil
}

// uvarint is binary.Uvarint that also refuses overlong (non-canonical) encodings.
func uvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b)
	if n > 1 && b[n-1] == 0 {
		return 0, 0
	}
	return v, n
}

// MarshalText returns the binary form in unpadded base64url: the form a signal
// carries in its meshclock extension.
func (c Clock) MarshalText() ([]byte, error) {
	b, _ := c.MarshalBinary()
	return base64.RawURLEncoding.AppendEncode(nil, b), nil
}

// UnmarshalText decodes the form MarshalText makes.
func (c *Clock) UnmarshalText(t []byte) error {
	b, err := base64.RawURLEncoding.DecodeString(string(t))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return c.UnmarshalBinary(b)
}

// MarshalJSON encodes the clock as a JSON object from peer to counter, such
// as {"a":1,"b":3}. Peers must be valid UTF-8 for this form to round-trip.
func (c Clock) MarshalJSON() ([]byte, error) {
	m := make(map[string]uint64, len(c.e))
	for _, x := range c.e {
		m[x.Peer] = x.N
	}
	return json.Marshal(m)
}

// UnmarshalJSON decodes the object form; zero counters are dropped.
func (c *Clock) UnmarshalJSON(b []byte) error {
	var m map[string]uint64
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	e := make([]Entry, 0, len(m))
	for p, n := range m {
		e = append(e, Entry{Peer: p, N: n})
	}
	*c = New(e...)
	return nil
}
