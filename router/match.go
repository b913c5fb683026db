package router

import (
	"slices"

	"github.com/signalmesh/signalmesh"
)

// match runs the trie as a nondeterministic automaton: the state set holds
// every trie node that the type's segments read so far can reach. Each node
// enters a set at most once, so each route is found at most once, and the
// work is bounded by segments × nodes whatever the wildcards.
//
// The fast path keeps the state sets and the matches in fixed arrays on the
// stack, indexed directly so that the compiler knows they are stack memory
// (no write barriers); only the returned slice is allocated. Past 16
// segments, 32 states or 32 matches it falls back to matchSlow.
func (r *Router[T]) match(typ string, s *signalmesh.Signal, withPred bool) []T {
	const maxSegs, maxStates, maxFound = 16, 32, 32
	var segs [maxSegs]string
	nseg, ok := 0, true
	start := 0
	for i := 0; i <= len(typ) && ok; i++ {
		if i < len(typ) && typ[i] != '.' {
			ok = signalmesh.IsSegmentByte(typ[i])
			continue
		}
		if i == start {
			return nil // empty type or empty segment
		}
		if nseg == maxSegs {
			return r.matchSlow(typ, s, withPred)
		}
		segs[nseg] = typ[start:i]
		nseg++
		start = i + 1
	}
	if !ok {
		return nil
	}

	var sets [2][maxStates]*node[T]
	var nset [2]int
	cur := 0
	root := r.root.Load()
	sets[0][0] = root
	nset[0] = 1
	if root.dstar != nil {
		sets[0][1] = root.dstar
		nset[0] = 2
	}
	for _, seg := range segs[:nseg] {
		nx := 1 - cur
		nset[nx] = 0
		for k := 0; k < nset[cur]; k++ {
			n := sets[cur][k]
			for c := 0; c < 3; c++ {
				var m *node[T]
				switch c {
				case 0:
					if n.loop {
						m = n
					}
				case 1:
					m = n.star
				case 2:
					m = n.lit.get(seg)
				}
				if m == nil {
					continue
				}
				// enter m (and its ** child: ** may match zero segments)
				for ; m != nil; m = m.dstar {
					dup := false
					for j := 0; j < nset[nx]; j++ {
						if sets[nx][j] == m {
							dup = true
							break
						}
					}
					if dup {
						break
					}
					if nset[nx] == maxStates {
						return r.matchSlow(typ, s, withPred)
					}
					sets[nx][nset[nx]] = m
					nset[nx]++
				}
			}
		}
		if nset[nx] == 0 {
			return nil
		}
		cur = nx
	}

	var found [maxFound]*route[T]
	nf := 0
	for k := 0; k < nset[cur]; k++ {
		for _, rt := range sets[cur][k].routes {
			if rt.match == nil || withPred && rt.match(s) {
				if nf == maxFound {
					return r.matchSlow(typ, s, withPred)
				}
				found[nf] = rt
				nf++
			}
		}
	}
	if nf == 0 {
		return nil
	}
	// Insertion sort: the lists are short, and it needs no closure.
	for i := 1; i < nf; i++ {
		for j := i; j > 0 && found[j].before(found[j-1]); j-- {
			found[j], found[j-1] = found[j-1], found[j]
		}
	}
	out := make([]T, nf)
	for i, rt := range found[:nf] {
		out[i] = rt.target
	}
	return out
}

// matchSlow is match without size limits, on heap slices.
func (r *Router[T]) matchSlow(typ string, s *signalmesh.Signal, withPred bool) []T {
	segs, ok := split(typ, nil)
	if !ok {
		return nil
	}
	cur := enter(nil, r.root.Load())
	var next []*node[T]
	for _, seg := range segs {
		next = next[:0]
		for _, n := range cur {
			if n.loop {
				next = enter(next, n)
			}
			if n.star != nil {
				next = enter(next, n.star)
			}
			if c := n.lit.get(seg); c != nil {
				next = enter(next, c)
			}
		}
		if len(next) == 0 {
			return nil
		}
		cur, next = next, cur
	}
	var found []*route[T]
	for _, n := range cur {
		for _, rt := range n.routes {
			if rt.match == nil || withPred && rt.match(s) {
				found = append(found, rt)
			}
		}
	}
	if len(found) == 0 {
		return nil
	}
	slices.SortFunc(found, func(a, b *route[T]) int {
		if a.before(b) {
			return -1
		}
		return 1
	})
	out := make([]T, len(found))
	for i, rt := range found {
		out[i] = rt.target
	}
	return out
}

// enter adds n to the state set unless it is there, and, because '**' may
// match zero segments, its '**' child too.
func enter[T any](set []*node[T], n *node[T]) []*node[T] {
	for _, m := range set {
		if m == n {
			return set
		}
	}
	set = append(set, n)
	if n.dstar != nil {
		set = enter(set, n.dstar)
	}
	return set
}

// split cuts a type into segments, appending them to buf; ok is false when
// the type is invalid.
func split(typ string, buf []string) (segs []string, ok bool) {
	if typ == "" {
		return nil, false
	}
	start := 0
	for i := 0; i < len(typ); i++ {
		c := typ[i]
		if c == '.' {
			if i == start {
				return nil, false
			}
			buf = append(buf, typ[start:i])
			start = i + 1
		} else if !signalmesh.IsSegmentByte(c) {
			return nil, false
		}
	}
	if start == len(typ) {
		return nil, false
	}
	return append(buf, typ[start:]), true
}
