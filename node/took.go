package node

import (
	"errors"
	"slices"
	"time"

	"github.com/signalmesh/signalmesh/vclock"
)

// What a consumer group member handled for departed members, announced
// with its mark (SubscriptionInfo.Took), so that a member that comes back
// passes those signals over instead of handling them again.
//
// The places are exact: a member that comes back skips only a signal that
// another member says it handled for it, whatever the members' views were
// when they judged it. (A highest-sequence-per-origin clock was not enough:
// a member that judged a signal later, with the returning member already
// in its view, passed it over as the returning member's, which then
// skipped it as covered; nobody handled it.)

// Places is a set of journal places, per origin ref: a bitmap of
// sequences from a base (a multiple of 8), bit i of byte j being sequence
// Base+8j+i.
type Places map[string]PlaceRun

// PlaceRun is one origin's places.
type PlaceRun struct {
	Base uint64 `json:"b"`
	Bits []byte `json:"m"` // base64 in JSON
}

// maxTook is how many departed members' takeovers a member announces;
// maxTookBytes bounds their bitmaps in all (an entry of the set has a size
// limit): past either, the oldest member's are forgotten, and past
// maxTookBytes for one member its newest places are not recorded. Each
// forgotten place is a signal that the member, when it comes back,
// handles again (counted in Taken where it was taken).
const (
	maxTook      = 16
	maxTookBytes = 32 << 10
	maxPlace     = 1 << 62 // a signal's sequence can be anything up to 2^64-1 (a hostile origin's): those above are not recorded
)

func (p Places) has(origin string, seq uint64) bool {
	r, ok := p[origin]
	if !ok || seq < r.Base {
		return false
	}
	i := seq - r.Base
	return i/8 < uint64(len(r.Bits)) && r.Bits[i/8]&(1<<(i%8)) != 0
}

func (p Places) size() int {
	n := 0
	for o, r := range p {
		n += len(o) + len(r.Bits) + 8
	}
	return n
}

// add adds (origin, seq) to p, in place.
func (p Places) add(origin string, seq uint64) {
	r := p[origin]
	base := seq &^ 7
	switch {
	case len(r.Bits) == 0:
		r = PlaceRun{Base: base, Bits: []byte{0}}
	case base < r.Base: // grow downwards by whole bytes
		pad := make([]byte, (r.Base-base)/8, (r.Base-base)/8+uint64(len(r.Bits)))
		r = PlaceRun{Base: base, Bits: append(pad, r.Bits...)}
	}
	i := seq - r.Base
	for uint64(len(r.Bits)) <= i/8 {
		r.Bits = append(r.Bits, 0)
	}
	r.Bits[i/8] |= 1 << (i % 8)
	p[origin] = r
}

// grown is the size p would have with (origin, seq) added.
func (p Places) grown(origin string, seq uint64) int {
	r, ok := p[origin]
	if !ok {
		return p.size() + len(origin) + 9
	}
	lo, hi := min(r.Base, seq&^7), max(r.Base+8*uint64(len(r.Bits)), (seq&^7)+8)
	return p.size() - len(r.Bits) + int((hi-lo)/8)
}

// max is the highest sequence of each origin in p.
func (p Places) max() vclock.Clock {
	var c vclock.Clock
	for o, r := range p {
		for j := len(r.Bits) - 1; j >= 0; j-- {
			if b := r.Bits[j]; b != 0 {
				hi := 7
				for b&(1<<hi) == 0 {
					hi--
				}
				c = c.Set(o, r.Base+uint64(8*j+hi))
				break
			}
		}
	}
	return c
}

var errTook = errors.New("took")

// checkTook checks the Took of an entry of the set.
func checkTook(t map[string]Places) error {
	if len(t) > maxTook {
		return errTook
	}
	total := 0
	for id, p := range t {
		if len(id) == 0 || len(id) > 128+maxNameBytes {
			return errTook
		}
		for o, r := range p {
			if o == "" || r.Base%8 != 0 || r.Base > maxPlace || uint64(len(r.Bits)) > maxPlace/8 {
				return errTook
			}
		}
		total += p.size()
	}
	if total > 2*maxTookBytes {
		return errTook
	}
	return nil
}

// tookFor records that this member handled (origin, seq) for the departed
// member id. It runs on the run goroutine, after the handler returned.
func (g *groupMember) tookFor(id, origin string, seq uint64) {
	if seq == 0 || seq > maxPlace || id == "" || id == g.id {
		return
	}
	g.tookMu.Lock()
	defer g.tookMu.Unlock()
	if g.took[id].has(origin, seq) {
		return
	}
	if g.took[id].grown(origin, seq) > maxTookBytes {
		return // this member's are full: it handles the rest again when it comes back
	}
	if g.took == nil {
		g.took, g.tookAt = map[string]Places{}, map[string]time.Time{}
	}
	if g.took[id] == nil {
		g.took[id] = Places{}
	}
	g.took[id].add(origin, seq)
	g.tookAt[id] = time.Now()
	total := 0
	for _, p := range g.took {
		total += p.size()
	}
	for len(g.took) > maxTook || total > maxTookBytes {
		oldest := ""
		for k := range g.took {
			if k != id && (oldest == "" || g.tookAt[k].Before(g.tookAt[oldest])) {
				oldest = k
			}
		}
		if oldest == "" {
			break
		}
		total -= g.took[oldest].size()
		delete(g.took, oldest)
		delete(g.tookAt, oldest)
	}
}

// pruneTook forgets what this member took for members that are back and
// whose mark covers all of it (they have judged all of it). It runs when
// the view changes.
func (g *groupMember) pruneTook(v *groupView) {
	g.tookMu.Lock()
	defer g.tookMu.Unlock()
	for id, p := range g.took {
		live := slices.ContainsFunc(v.members, func(x viewMember) bool { return x.id == id })
		mk, ok := v.marks[id]
		if !live || !ok {
			continue
		}
		if o := p.max().Compare(mk); o == vclock.Before || o == vclock.Equal {
			delete(g.took, id)
			delete(g.tookAt, id)
		}
	}
}

// tookSnapshot is a copy of what the member took over, to announce.
func (g *groupMember) tookSnapshot() map[string]Places {
	g.tookMu.Lock()
	defer g.tookMu.Unlock()
	if len(g.took) == 0 {
		return nil
	}
	return cloneTook(g.took)
}

// tookBy is a copy of what the member took for member id.
func (g *groupMember) tookBy(id string) Places {
	g.tookMu.Lock()
	defer g.tookMu.Unlock()
	return cloneTook(map[string]Places{id: g.took[id]})[id]
}

// cloneTook copies an entry's Took.
func cloneTook(t map[string]Places) map[string]Places {
	if t == nil {
		return nil
	}
	out := make(map[string]Places, len(t))
	for id, p := range t {
		q := make(Places, len(p))
		for o, r := range p {
			q[o] = PlaceRun{Base: r.Base, Bits: slices.Clone(r.Bits)}
		}
		out[id] = q
	}
	return out
}
