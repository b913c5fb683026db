package router

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/signalmesh/signalmesh"
)

// Option configures a route in Add.
type Option func(*routeConfig) error

type routeConfig struct {
	priority int
	match    func(*signalmesh.Signal) bool
}

// WithPriority sets a route's priority, from -100 to 100 (default 0). Among
// routes of equal specificity, higher priority comes first.
func WithPriority(p int) Option {
	return func(c *routeConfig) error {
		if p < -100 || p > 100 {
			return ErrPriority
		}
		c.priority = p
		return nil
	}
}

// WithMatch adds a predicate: the route applies to a signal only when match
// returns true for it. Match skips routes with a predicate; Route calls it.
// The predicate must be safe to call from several goroutines at once.
func WithMatch(match func(*signalmesh.Signal) bool) Option {
	return func(c *routeConfig) error {
		c.match = match
		return nil
	}
}

type route[T any] struct {
	pattern  string
	target   T
	priority int
	match    func(*signalmesh.Signal) bool
	spec     int
	seq      uint64 // order of Add
}

// before is the routing order: specificity, then priority (both descending),
// then the order routes were added.
func (r *route[T]) before(o *route[T]) bool {
	if r.spec != o.spec {
		return r.spec > o.spec
	}
	if r.priority != o.priority {
		return r.priority > o.priority
	}
	return r.seq < o.seq
}

// node is a trie node. Nodes are immutable once published; writers copy the
// path they change.
type node[T any] struct {
	lit    children[T]
	star   *node[T] // child for '*'
	dstar  *node[T] // child for '**'
	loop   bool     // this node is a '**' child: it may consume more segments
	routes []*route[T]
}

func (n *node[T]) empty() bool {
	return n.lit.len() == 0 && n.star == nil && n.dstar == nil && len(n.routes) == 0
}

// Router maps signal types to targets through patterns with * and **
// wildcards. See the package documentation for the rules.
//
// A Router is safe for concurrent use. Matching never blocks: Add and Remove
// publish a new copy of the changed trie path (copy-on-write), and a match
// sees either the old routes or the new ones, never a mix. Writers are
// serialized by a mutex.
type Router[T any] struct {
	mu   sync.Mutex // serializes writers
	seq  uint64     // guarded by mu
	n    int        // guarded by mu
	root atomic.Pointer[node[T]]
}

// New returns an empty router.
func New[T any]() *Router[T] {
	r := &Router[T]{}
	r.root.Store(&node[T]{})
	return r
}

// Add adds a route from pattern to target. Routes are never merged: adding the
// same pattern twice gives two routes.
func (r *Router[T]) Add(pattern string, target T, opts ...Option) error {
	if err := Validate(pattern); err != nil {
		return err
	}
	var cfg routeConfig
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	rt := &route[T]{pattern: pattern, target: target, priority: cfg.priority, match: cfg.match,
		spec: Specificity(pattern), seq: r.seq}
	r.root.Store(insert(r.root.Load(), strings.Split(pattern, "."), rt))
	r.n++
	return nil
}

func insert[T any](n *node[T], segs []string, rt *route[T]) *node[T] {
	c := *n
	if len(segs) == 0 {
		c.routes = append(slices.Clip(c.routes), rt)
		slices.SortStableFunc(c.routes, func(a, b *route[T]) int {
			if a.before(b) {
				return -1
			}
			return 1
		})
		return &c
	}
	child := func(old *node[T], loop bool) *node[T] {
		if old == nil {
			old = &node[T]{loop: loop}
		}
		return insert(old, segs[1:], rt)
	}
	switch segs[0] {
	case "**":
		c.dstar = child(c.dstar, true)
	case "*":
		c.star = child(c.star, false)
	default:
		c.lit = c.lit.with(segs[0], child(c.lit.get(segs[0]), false))
	}
	return &c
}

// Remove removes every route whose pattern is exactly pattern and returns
// how many it removed.
func (r *Router[T]) Remove(pattern string) int {
	return r.RemoveFunc(pattern, func(T) bool { return true })
}

// remove returns the new node (nil when it became empty) and the number of
// routes removed; when none was removed it returns n itself.
func remove[T any](n *node[T], segs []string, del func(*route[T]) bool) (*node[T], int) {
	if n == nil {
		return nil, 0
	}
	c := *n
	removed := 0
	if len(segs) == 0 {
		c.routes = slices.DeleteFunc(slices.Clone(n.routes), del)
		removed = len(n.routes) - len(c.routes)
	} else {
		switch segs[0] {
		case "**":
			c.dstar, removed = remove(n.dstar, segs[1:], del)
		case "*":
			c.star, removed = remove(n.star, segs[1:], del)
		default:
			var ch *node[T]
			ch, removed = remove(n.lit.get(segs[0]), segs[1:], del)
			switch {
			case removed == 0:
			case ch == nil:
				c.lit = n.lit.without(segs[0])
			default:
				c.lit = n.lit.with(segs[0], ch)
			}
		}
	}
	if removed == 0 {
		return n, 0
	}
	if c.empty() {
		return nil, removed
	}
	return &c, removed
}

// Len is the number of routes.
func (r *Router[T]) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// Match returns the targets of every route whose pattern matches typ,
// skipping routes with a predicate, in routing order: specificity, then
// priority (both descending), then the order the routes were added. Each
// route appears at most once. An invalid type matches nothing. Match makes at
// most one allocation (the result) for types of up to 16 segments.
func (r *Router[T]) Match(typ string) []T {
	return r.match(typ, nil, false)
}

// Route returns the targets for s like Match(s.Type), but also includes
// routes with a predicate when the predicate accepts s.
func (r *Router[T]) Route(s *signalmesh.Signal) []T {
	if s == nil {
		return nil
	}
	return r.match(s.Type, s, true)
}

// RemoveFunc removes the routes whose pattern is exactly pattern and whose
// target del accepts, and returns how many it removed.
func (r *Router[T]) RemoveFunc(pattern string, del func(T) bool) int {
	if Validate(pattern) != nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	root, removed := remove(r.root.Load(), strings.Split(pattern, "."), func(rt *route[T]) bool {
		return rt.pattern == pattern && del(rt.target)
	})
	if removed > 0 {
		if root == nil {
			root = &node[T]{}
		}
		r.root.Store(root)
		r.n -= removed
	}
	return removed
}
