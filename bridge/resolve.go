package bridge

import (
	"context"
	"sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/vclock"
)

// A Resolver decides what the state of a subject is when a new signal
// about it arrives: current is what the view holds (nil for none), incoming
// the new signal. It returns the signal to keep, which may be a new one
// merged from both. Resolvers must be deterministic, so that every replica
// that sees the same signals, in whatever order, keeps the same state.
type Resolver interface {
	Resolve(current, incoming *signalmesh.Signal) (*signalmesh.Signal, error)
}

// ResolverFunc is a custom Resolver.
type ResolverFunc func(current, incoming *signalmesh.Signal) (*signalmesh.Signal, error)

// Resolve calls f.
func (f ResolverFunc) Resolve(current, incoming *signalmesh.Signal) (*signalmesh.Signal, error) {
	return f(current, incoming)
}

// LastWriterWins keeps the signal with the later Time; equal times go to
// the larger ID, so that every replica picks the same one. Clocks of
// different clusters disagree, so "later" is only as good as they are.
type LastWriterWins struct{}

// Resolve implements Resolver.
func (LastWriterWins) Resolve(current, incoming *signalmesh.Signal) (*signalmesh.Signal, error) {
	if current == nil || incoming.Time.After(current.Time) ||
		(incoming.Time.Equal(current.Time) && incoming.ID > current.ID) {
		return incoming, nil
	}
	return current, nil
}

// VectorDominance keeps the signal whose vector clock dominates; for
// concurrent signals (neither clock before the other) it calls Merge,
// which must be commutative. Clock reads a signal's clock: by default the
// vector clock in the ClockExtension extension, in the text form of package
// vclock, which the application maintains (a mesh stamps signals with
// direct dependencies, not with a clock, and clusters do not share one).
type VectorDominance struct {
	Merge func(a, b *signalmesh.Signal) (*signalmesh.Signal, error)
	Clock func(*signalmesh.Signal) (vclock.Clock, error)
}

// ClockExtension is the extension VectorDominance reads a signal's vector
// clock from when its Clock is nil.
const ClockExtension = "appclock"

// extClock reads the ClockExtension extension (an empty clock when absent).
func extClock(s *signalmesh.Signal) (vclock.Clock, error) {
	var c vclock.Clock
	v, _ := s.Extensions[ClockExtension].(string)
	if v == "" {
		return c, nil
	}
	err := c.UnmarshalText([]byte(v))
	return c, err
}

// Resolve implements Resolver.
func (v VectorDominance) Resolve(current, incoming *signalmesh.Signal) (*signalmesh.Signal, error) {
	if current == nil {
		return incoming, nil
	}
	clock := v.Clock
	if clock == nil {
		clock = extClock
	}
	a, err := clock(current)
	if err != nil {
		return nil, err
	}
	b, err := clock(incoming)
	if err != nil {
		return nil, err
	}
	switch a.Compare(b) {
	case vclock.Before:
		return incoming, nil
	case vclock.After, vclock.Equal:
		return current, nil
	}
	if v.Merge == nil {
		return LastWriterWins{}.Resolve(current, incoming)
	}
	// Merge in one order whatever the arrival order.
	if current.ID > incoming.ID {
		current, incoming = incoming, current
	}
	return v.Merge(current, incoming)
}

// Latest is a view of the latest state of each subject, as a Resolver
// decides it. Feed it signals with Apply, or subscribe its Handler:
//
//	view := bridge.NewLatest(bridge.LastWriterWins{})
//	n.Subscribe("inventory.**", view.Handler())
type Latest struct {
	r  Resolver
	mu sync.RWMutex
	m  map[string]*signalmesh.Signal
}

// NewLatest returns an empty view resolved by r.
func NewLatest(r Resolver) *Latest { return &Latest{r: r, m: map[string]*signalmesh.Signal{}} }

// Apply resolves s against the state of its subject.
func (l *Latest) Apply(s *signalmesh.Signal) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	keep, err := l.r.Resolve(l.m[s.Subject], s)
	if err != nil {
		return err
	}
	l.m[s.Subject] = keep
	return nil
}

// Get returns the state of a subject.
func (l *Latest) Get(subject string) (*signalmesh.Signal, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	s, ok := l.m[subject]
	return s, ok
}

// Len is the number of subjects.
func (l *Latest) Len() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.m)
}

// Handler returns a subscription handler that applies each signal.
func (l *Latest) Handler() func(context.Context, *signalmesh.Signal) error {
	return func(_ context.Context, s *signalmesh.Signal) error { return l.Apply(s) }
}
