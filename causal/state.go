package causal

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/signalmesh/signalmesh/internal/varint"
)

// State is what a core has delivered, for a caller to store when it stops
// and hand to a new core when it starts again (Restore), so that the new
// core need not be fed every signal delivered before: per origin the
// highest sequence delivered, its frontier entry and its last Lamport
// time; the ranges given up and still deliverable late; and the filter of
// delivered ids. Its size follows the number of origins and given-up
// ranges (at most 4,096) and the filter's fixed size, not the number of
// signals delivered.
//
// What it leaves out costs a lookup, never a wrong answer: the identities
// delivered lately (Params.Recent) are asked of the Index instead, which
// holds every journaled signal.
type State struct {
	Delivered   map[string]uint64
	Frontier    map[string]FrontierEntry
	LastLamport map[string]uint64
	MaxLamport  uint64
	Skipped     []Gap    // what is still given up (not delivered late since), in the order it was given up
	Bloom       []uint64 // Params.BloomBits/64 words
	// Lost: the origins Frontier leaves out for now (see Core.Frontier).
	// Encoded after the filter, only when there is one, so a state without
	// any encodes as before.
	Lost map[string]Loss
}

// Loss is an origin whose signals from From on were delivered after
// something given up, the last such at At (the core's time, see Add);
// Dep: a dependency was among it (filling the origin's holes does not
// clear it).
type Loss struct {
	From uint64
	At   int64
	Dep  bool
}

// FrontierEntry is an origin's latest delivered signal that no later
// delivered signal names: its sequence and Lamport time.
type FrontierEntry struct{ Seq, Lamport uint64 }

// ErrRestore: Restore on a core that has delivered or holds something, or
// with a filter of another size.
var ErrRestore = errors.New("causal: restore")

// State returns a copy of what the core has delivered.
func (c *Core[T]) State() State {
	s := State{Delivered: maps.Clone(c.delivered), LastLamport: maps.Clone(c.lastLamport), MaxLamport: c.maxLamport,
		Frontier: make(map[string]FrontierEntry, len(c.frontier)), Skipped: c.skippedNow(), Bloom: slices.Clone(c.bloom)}
	for o, f := range c.frontier {
		s.Frontier[o] = FrontierEntry{Seq: f.seq, Lamport: f.lamport}
	}
	for o := range c.lost {
		if l, ok := c.lossOf(o); ok {
			if s.Lost == nil {
				s.Lost = map[string]Loss{}
			}
			s.Lost[o] = Loss{From: l.from, At: l.at, Dep: l.dep}
		}
	}
	return s
}

// Restore makes a new core (nothing delivered, nothing waiting) continue
// from s: what s says was delivered counts as delivered. The filter must
// have the size Params.BloomBits gives this core.
func (c *Core[T]) Restore(s State) error {
	if len(c.delivered) > 0 || len(c.waiting) > 0 || len(c.skipRing) > 0 {
		return fmt.Errorf("%w: the core is not new", ErrRestore)
	}
	if len(s.Bloom) != len(c.bloom) {
		return fmt.Errorf("%w: filter of %d words, want %d", ErrRestore, len(s.Bloom), len(c.bloom))
	}
	for o, seq := range s.Delivered {
		if seq > 0 {
			c.delivered[o] = seq
			c.learn(Ref{Origin: o, Seq: seq})
		}
	}
	for o, f := range s.Frontier {
		c.frontier[o] = frontierEntry{seq: f.Seq, lamport: f.Lamport}
	}
	for o, l := range s.LastLamport {
		c.lastLamport[o] = l
	}
	c.maxLamport = s.MaxLamport
	for o, l := range s.Lost {
		c.lost[o] = loss{from: l.From, at: l.At, dep: l.Dep}
	}
	for _, g := range s.Skipped {
		if g.From <= g.To && g.To <= c.delivered[g.Origin] && len(c.skipRing) < maxSkipped {
			c.skipped[g.Origin] = append(c.skipped[g.Origin], g)
			c.skipRing = append(c.skipRing, g)
		}
	}
	copy(c.bloom, s.Bloom)
	return nil
}

// stateVersion is the first byte of an encoded State. 2: the filter's
// bits of an id lie in one cache line (package bloomline).
const stateVersion = 2

// MarshalBinary encodes s: a version byte, then varints. Origins are
// sorted, so equal states encode equally.
func (s State) MarshalBinary() ([]byte, error) {
	b := []byte{stateVersion}
	num := func(v uint64) { b = binary.AppendUvarint(b, v) }
	str := func(v string) { num(uint64(len(v))); b = append(b, v...) }
	origins := slices.Sorted(maps.Keys(s.Delivered))
	for o := range s.Frontier {
		if _, ok := s.Delivered[o]; !ok {
			origins = append(origins, o)
		}
	}
	for o := range s.LastLamport {
		if _, ok := s.Delivered[o]; !ok {
			if _, ok := s.Frontier[o]; !ok {
				origins = append(origins, o)
			}
		}
	}
	slices.Sort(origins)
	num(uint64(len(origins)))
	for _, o := range origins {
		str(o)
		f, inFrontier := s.Frontier[o]
		num(s.Delivered[o])
		num(s.LastLamport[o])
		if inFrontier {
			num(1)
			num(f.Seq)
			num(f.Lamport)
		} else {
			num(0)
		}
	}
	num(s.MaxLamport)
	num(uint64(len(s.Skipped)))
	for _, g := range s.Skipped {
		str(g.Origin)
		num(g.From)
		num(g.To)
	}
	// The filter, sparse: (distance from the previous non-zero word, word).
	num(uint64(len(s.Bloom)))
	last := -1
	for i, w := range s.Bloom {
		if w != 0 {
			num(uint64(i - last))
			b = binary.LittleEndian.AppendUint64(b, w)
			last = i
		}
	}
	num(0)
	if len(s.Lost) > 0 {
		num(uint64(len(s.Lost)))
		for _, o := range slices.Sorted(maps.Keys(s.Lost)) {
			l := s.Lost[o]
			str(o)
			num(l.From)
			num(uint64(l.At))
			if l.Dep {
				num(1)
			} else {
				num(0)
			}
		}
	}
	return b, nil
}

// Bounds on what UnmarshalBinary accepts.
const (
	maxStateOrigins = 1 << 22
	maxStateWords   = 1 << 26 // 4 Gib of filter
	maxOriginLen    = 256
)

var errState = errors.New("causal: bad state encoding")

// UnmarshalBinary decodes what MarshalBinary wrote. It checks every length
// against what is left of b, so a corrupt or hostile input fails with an
// error, never a huge allocation or a panic.
func (s *State) UnmarshalBinary(b []byte) error {
	if len(b) == 0 || b[0] != stateVersion {
		return fmt.Errorf("%w: version", errState)
	}
	d := varint.Reader{B: b[1:], Base: errState}
	n := d.Count(maxStateOrigins, 4)
	st := State{Delivered: make(map[string]uint64, n), Frontier: map[string]FrontierEntry{}, LastLamport: map[string]uint64{}}
	prev := ""
	for i := uint64(0); i < n && d.Err == nil; i++ {
		o := string(d.Bytes(maxOriginLen))
		if i > 0 && cmp.Compare(o, prev) <= 0 {
			d.Fail("origins out of order")
		}
		prev = o
		if del := d.Num(); del > 0 {
			st.Delivered[o] = del
		}
		if l := d.Num(); l > 0 {
			st.LastLamport[o] = l
		}
		switch d.Num() {
		case 0:
		case 1:
			st.Frontier[o] = FrontierEntry{Seq: d.Num(), Lamport: d.Num()}
		default:
			d.Fail("frontier flag")
		}
	}
	st.MaxLamport = d.Num()
	k := d.Count(maxSkipped, 3)
	for i := uint64(0); i < k && d.Err == nil; i++ {
		g := Gap{Origin: string(d.Bytes(maxOriginLen)), From: d.Num(), To: d.Num()}
		if g.From == 0 || g.From > g.To {
			d.Fail("gap")
		}
		st.Skipped = append(st.Skipped, g)
	}
	words := d.Num()
	if words > maxStateWords {
		d.Fail("filter size")
	}
	if d.Err == nil {
		st.Bloom = make([]uint64, words)
	}
	for at := int64(-1); d.Err == nil; {
		step := d.Num()
		if step == 0 || d.Err != nil {
			break
		}
		if at += int64(step); uint64(at) >= words || len(d.B) < 8 {
			d.Fail("filter word")
			break
		}
		st.Bloom[at] = binary.LittleEndian.Uint64(d.B)
		d.B = d.B[8:]
	}
	if d.Err == nil && len(d.B) != 0 { // the origins Frontier leaves out
		k := d.Count(maxStateOrigins, 4)
		if k == 0 {
			d.Fail("lost count")
		}
		st.Lost = make(map[string]Loss, k)
		prev := ""
		for i := uint64(0); i < k && d.Err == nil; i++ {
			o := string(d.Bytes(maxOriginLen))
			if i > 0 && cmp.Compare(o, prev) <= 0 {
				d.Fail("lost origins out of order")
			}
			prev = o
			l := Loss{From: d.Num(), At: int64(d.Num())}
			switch d.Num() {
			case 0:
			case 1:
				l.Dep = true
			default:
				d.Fail("lost flag")
			}
			st.Lost[o] = l
		}
	}
	if d.Err == nil && len(d.B) != 0 {
		d.Fail("trailing bytes")
	}
	if d.Err != nil {
		return d.Err
	}
	*s = st
	return nil
}

// skippedNow is what is given up and not delivered late since: the pieces
// of each skipped range still in skipped, in the order the ranges were
// given up (skipRing keeps whole ranges; a late delivery splits skipped).
// Saving the ranges would make a restored core give up again a signal it
// delivered late, and deliver it late a second time.
// SkippedGaps returns the ranges given up (DepWait) and not delivered
// since, each origin's sequences From to To: what a signal delivered
// later there is delivered late.
func (c *Core[T]) SkippedGaps() []Gap { return c.skippedNow() }

func (c *Core[T]) skippedNow() []Gap {
	var out []Gap
	for _, g := range c.skipRing {
		for _, p := range c.skipped[g.Origin] {
			if p.From >= g.From && p.To <= g.To {
				out = append(out, p)
			}
		}
	}
	return out
}
