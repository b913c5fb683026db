package causal

import "maps"

// Floor is what a core keeps of an origin it forgot (Forget): the highest
// sequence delivered and the Lamport time of that signal, as the core
// bounded it. Handed back through Params.Recall, it is all the core needs
// to go on with the origin as if it had never forgotten it: its signals at
// or below Seq are duplicates, the next is Seq+1, and a signal naming it
// is bounded by Lamport.
type Floor struct {
	Origin  string
	Seq     uint64
	Lamport uint64
}

// recall gives back the state of an origin the core holds nothing of and
// Params.Recall has a floor for (it was forgotten). Every entry point that
// meets an origin (Add, for its origin and its dependencies, Know, Decide)
// calls it first, so no other code sees a forgotten origin.
func (c *Core[T]) recall(o string) {
	if _, ok := c.known[o]; ok { // every origin the core holds state of is known (learn)
		return
	}
	if f, ok := c.floorOf(o); ok {
		c.install(f)
	}
}

func (c *Core[T]) install(f Floor) {
	o := f.Origin
	c.delivered[o] = f.Seq
	c.known[o] = f.Seq
	c.lastLamport[o] = f.Lamport
	c.maxLamport = max(c.maxLamport, f.Lamport)
	c.recalled++
}

// floorOf asks Params.Recall for the floor of o, an origin the core holds
// nothing of. A "none" is remembered (the last maxNoFloor origins, until
// Forget drops the origin): refused signals do not learn their
// dependencies, so without it every signal naming an origin never
// forgotten would ask again, up to MaxDeps times per signal.
func (c *Core[T]) floorOf(o string) (Floor, bool) {
	if c.p.Recall == nil {
		return Floor{}, false
	}
	if _, ok := c.noFloor[o]; ok {
		return Floor{}, false
	}
	f, ok := c.p.Recall(o)
	if ok && f.Seq > 0 {
		f.Origin = o
		return f, true
	}
	if c.noFloor == nil {
		c.noFloor = map[string]struct{}{}
		c.noFloorRing = make([]string, maxNoFloor)
	}
	if old := c.noFloorRing[c.noFloorNext]; old != "" {
		delete(c.noFloor, old) // a newer entry of it, if any, is only asked again
	}
	c.noFloorRing[c.noFloorNext] = o
	c.noFloorNext = (c.noFloorNext + 1) % maxNoFloor
	c.noFloor[o] = struct{}{}
	return Floor{}, false
}

// maxNoFloor bounds the origins remembered to have no floor (floorOf): 4,096
// origins, about 200 KiB at most.
const maxNoFloor = 1 << 12

// moot reports whether r is at or below what the core delivered of its
// origin, or below the floor of a forgotten one (read without recalling
// it): a decision about it decides nothing any more.
func (c *Core[T]) moot(r Ref) bool {
	if _, ok := c.known[r.Origin]; ok {
		return r.Seq <= c.delivered[r.Origin]
	}
	f, ok := c.floorOf(r.Origin)
	return ok && r.Seq <= f.Seq
}

// Forgettable returns the floors of the origins of want that the core may
// forget: each has delivered exactly want[origin] (nothing since the
// caller chose it), nothing of it waits, was refused or is named by a
// waiting signal, none of its sequences is given up and still deliverable
// late, Frontier does not leave it out for a loss, and the core knows of
// no signal of it above what it delivered. An origin the core holds
// nothing of (forgotten already) is forgettable at its floor (Recall's),
// and Forget then has nothing to drop. It changes nothing: the caller
// stores the floors, then hands them to Forget.
func (c *Core[T]) Forgettable(want map[string]uint64) []Floor {
	pinned := c.pinned()
	var out []Floor
	for o, seq := range want {
		if _, held := c.known[o]; !held && seq > 0 {
			if f, ok := c.floorOf(o); ok && f.Seq == seq {
				out = append(out, f)
			}
			continue
		}
		if d, ok := c.delivered[o]; !ok || d != seq || seq == 0 || pinned[o] || c.known[o] > seq || c.listed[o] > seq {
			continue
		}
		out = append(out, Floor{Origin: o, Seq: seq, Lamport: c.lastLamport[o]})
	}
	return out
}

// FloorOf returns the floor of origin o as Forget would keep it now (the
// highest sequence delivered and its Lamport time), whether or not o may
// be forgotten; false if the core holds nothing delivered of o.
func (c *Core[T]) FloorOf(o string) (Floor, bool) {
	d := c.delivered[o]
	if d == 0 {
		return Floor{}, false
	}
	return Floor{Origin: o, Seq: d, Lamport: c.lastLamport[o]}, true
}

// Forget drops everything the core holds of the origins of fs that are
// still as Forgettable found them (the same sequence and Lamport time,
// and still forgettable), and returns those it forgot. From then on the
// core knows of them only through Params.Recall, which must find their
// floors (see the package doc, Origins that left).
func (c *Core[T]) Forget(fs []Floor) []Floor {
	pinned := c.pinned()
	var out []Floor
	for _, f := range fs {
		o := f.Origin
		if d, ok := c.delivered[o]; !ok || d != f.Seq || c.lastLamport[o] != f.Lamport || pinned[o] || c.known[o] > f.Seq || c.listed[o] > f.Seq {
			continue
		}
		delete(c.delivered, o)
		delete(c.known, o)
		delete(c.knownAt, o)
		delete(c.frontier, o)
		delete(c.lost, o)
		delete(c.lastLamport, o)
		delete(c.listed, o)
		delete(c.holes, o)
		delete(c.noFloor, o) // it has one now
		out = append(out, f)
	}
	c.forgotten += int64(len(out))
	if c.dropped += len(out); c.dropped > len(c.known)+64 {
		c.shrink()
	}
	return out
}

// pinned lists the origins the core may not forget now (see Forgettable).
func (c *Core[T]) pinned() map[string]bool {
	p := map[string]bool{}
	for r, it := range c.waiting {
		p[r.Origin] = true
		for _, d := range it.m.Deps {
			p[d.Origin] = true
		}
	}
	for r := range c.onRef {
		p[r.Origin] = true
	}
	for r := range c.refused {
		p[r.Origin] = true
	}
	for r := range c.lateKnown {
		p[r.Origin] = true
	}
	for r := range c.afterGap {
		p[r.Origin] = true
	}
	for r := range c.decided {
		p[r.Origin] = true
	}
	for r := range c.preSkip {
		p[r.Origin] = true
	}
	for o := range c.skipped {
		p[o] = true
	}
	for o, h := range c.holes {
		if h.seq > c.delivered[o] { // else moot: skipHoles clears it only when Pull names the origin again
			p[o] = true
		}
	}
	for o := range c.lost {
		if _, ok := c.lossOf(o); ok {
			p[o] = true
		}
	}
	return p
}

// shrink copies the per-origin maps into maps of their size: a Go map
// keeps the room of the entries deleted from it, so without this the
// memory of forgotten origins would stay. Called when more origins were
// forgotten since the last copy than are held: amortised, a constant per
// forgotten origin.
func (c *Core[T]) shrink() {
	c.dropped = 0
	c.delivered = fit(c.delivered)
	c.known = fit(c.known)
	c.knownAt = fit(c.knownAt)
	c.frontier = fit(c.frontier)
	c.lost = fit(c.lost)
	c.lastLamport = fit(c.lastLamport)
	c.listed = fit(c.listed)
	c.holes = fit(c.holes)
	c.skipped = fit(c.skipped)
	c.perOrigin = fit(c.perOrigin)
	c.bySeq = fit(c.bySeq)
}

func fit[K comparable, V any](m map[K]V) map[K]V {
	n := make(map[K]V, len(m))
	maps.Copy(n, m)
	return n
}

// Origins is the number of origins the core holds state of (forgotten
// ones are not counted until they are recalled).
func (c *Core[T]) Origins() int { return len(c.known) }

// Forgotten counts the origins Forget dropped, and Recalled those whose
// floor Params.Recall gave back since.
func (c *Core[T]) Forgotten() (forgotten, recalled int64) { return c.forgotten, c.recalled }

// upTo is the highest delivered sequence of o, recalled first if o was
// forgotten: for a journaled copy the Index names (its origin may have
// been forgotten while the copy stayed, in a block kept as a head).
func (c *Core[T]) upTo(o string) uint64 {
	c.recall(o)
	return c.delivered[o]
}
