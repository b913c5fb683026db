package router

import "slices"

// smallFanout is the number of literal children kept in a slice and found by
// comparing strings; nodes with more use a map. Comparing a few short strings
// is cheaper than hashing the segment.
const smallFanout = 8

// children are a node's literal children. Values are immutable: with and
// without return changed copies and leave the receiver alone.
type children[T any] struct {
	keys  []string
	nodes []*node[T]
	m     map[string]*node[T] // used instead of keys/nodes past smallFanout
}

func (c *children[T]) get(k string) *node[T] {
	if c.m != nil {
		return c.m[k]
	}
	for i, key := range c.keys {
		if key == k {
			return c.nodes[i]
		}
	}
	return nil
}

func (c *children[T]) len() int {
	if c.m != nil {
		return len(c.m)
	}
	return len(c.keys)
}

// with returns c with k mapped to n.
func (c children[T]) with(k string, n *node[T]) children[T] {
	if c.m != nil {
		m := make(map[string]*node[T], len(c.m)+1)
		for key, v := range c.m {
			m[key] = v
		}
		m[k] = n
		return children[T]{m: m}
	}
	if i := slices.Index(c.keys, k); i >= 0 {
		nodes := slices.Clone(c.nodes)
		nodes[i] = n
		return children[T]{keys: c.keys, nodes: nodes}
	}
	if len(c.keys) < smallFanout {
		return children[T]{keys: append(slices.Clip(c.keys), k), nodes: append(slices.Clip(c.nodes), n)}
	}
	m := make(map[string]*node[T], len(c.keys)+1)
	for i, key := range c.keys {
		m[key] = c.nodes[i]
	}
	m[k] = n
	return children[T]{m: m}
}

// without returns c with k removed.
func (c children[T]) without(k string) children[T] {
	if c.m != nil {
		m := make(map[string]*node[T], len(c.m))
		for key, v := range c.m {
			if key != k {
				m[key] = v
			}
		}
		return children[T]{m: m}
	}
	i := slices.Index(c.keys, k)
	if i < 0 {
		return c
	}
	return children[T]{keys: slices.Delete(slices.Clone(c.keys), i, i+1), nodes: slices.Delete(slices.Clone(c.nodes), i, i+1)}
}
