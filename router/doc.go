// Package router routes signals to targets by their type, through a trie of
// patterns with wildcards.
//
// # Types and patterns
//
// A signal type is one or more dot-separated segments of ASCII letters,
// digits, '_' and '-' (order.created, user.123.updated). A pattern segment is
// a literal, * (exactly one segment) or ** (zero or more segments); ** may
// appear anywhere but never directly next to another **. Validate says which
// rule a bad pattern breaks.
//
// # Order
//
// Match and Route return every target whose route matches, each route at most
// once, ordered by the specificity of its pattern (see Specificity), then by
// priority (-100 to 100, default 0), both descending, then by the order the
// routes were added. A route with a predicate (WithMatch) ranks like any
// other; Match skips such routes, Route asks the predicate.
//
// # Performance and concurrency
//
// Matching runs the trie as an automaton over the type's segments: its work is
// bounded by segments × trie nodes whatever the wildcards, and it makes one
// allocation, the result. Readers never block: Add and Remove publish a new
// copy of the path they change (copy-on-write). See BENCHMARKS.md for figures.
//
// The package is pure: no goroutines, no I/O, no clock.
package router
