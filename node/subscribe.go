package node

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/router"
)

// Handler handles one signal. It runs on the subscription's own goroutine,
// one signal at a time, in causal order. ctx ends when the node closes. An
// error (or a panic) is counted and logged; the signal is not redelivered.
type Handler func(ctx context.Context, s *signalmesh.Signal) error

// Middleware wraps a Handler (logging, timeouts, filtering, ...).
type Middleware func(Handler) Handler

// SubOption configures a subscription.
type SubOption func(*subConfig) error

type subConfig struct {
	mw       []Middleware
	priority int
}

// WithMiddleware wraps the handler; the first middleware is the outermost.
func WithMiddleware(mw ...Middleware) SubOption {
	return func(c *subConfig) error { c.mw = append(c.mw, mw...); return nil }
}

// WithPriority orders this subscription among others matching the same
// signal with the same specificity (-100..100), like router.WithPriority.
func WithPriority(p int) SubOption {
	return func(c *subConfig) error { c.priority = p; return nil }
}

// Subscription is a handle on a subscription; Close ends it.
type Subscription struct {
	n       *Node
	pattern string
	h       Handler
	limit   int

	mu     sync.Mutex // guards q and closed
	q      []*signalmesh.Signal
	closed bool

	wake      chan struct{} // buffer 1
	quit      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once

	delivered, failed, dropped atomic.Int64
}

// Subscribe calls h for every signal whose type matches pattern (router
// rules) that this node delivers from now on: signals published here or by
// any peer, each once, in causal order. Signals wait in a queue of
// Params.SubscriberQueue; past that they are dropped for this subscription
// and counted.
func (n *Node) Subscribe(pattern string, h Handler, opts ...SubOption) (*Subscription, error) {
	if h == nil {
		return nil, fmt.Errorf("node: Subscribe with a nil handler")
	}
	var cfg subConfig
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	for i := len(cfg.mw) - 1; i >= 0; i-- {
		h = cfg.mw[i](h)
	}
	s := &Subscription{n: n, pattern: pattern, h: h, limit: n.p.SubscriberQueue,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), stopped: make(chan struct{})}
	if err := router.Validate(pattern); err != nil {
		return nil, err
	}
	n.subMu.Lock()
	defer n.subMu.Unlock()
	if n.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if err := n.subs.Add(pattern, s, router.WithPriority(cfg.priority)); err != nil {
		return nil, err
	}
	n.subWG.Add(1)
	go s.run()
	return s, nil
}

// enqueue is called by the loop; it never blocks.
func (s *Subscription) enqueue(sig *signalmesh.Signal) {
	s.mu.Lock()
	switch {
	case s.closed:
	case len(s.q) >= s.limit:
		s.dropped.Add(1)
		s.n.m.drop("subscriber_overflow")
	default:
		s.q = append(s.q, sig)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Subscription) run() {
	defer s.n.subWG.Done()
	defer close(s.stopped)
	for {
		select {
		case <-s.quit:
			return
		case <-s.n.ctx.Done():
			return
		case <-s.wake:
		}
		for {
			s.mu.Lock()
			if len(s.q) == 0 || s.closed {
				s.q = nil
				s.mu.Unlock()
				break
			}
			sig := s.q[0]
			s.q[0] = nil
			s.q = s.q[1:]
			s.mu.Unlock()
			s.call(sig)
		}
	}
}

func (s *Subscription) call(sig *signalmesh.Signal) {
	defer func() {
		if r := recover(); r != nil {
			s.failed.Add(1)
			s.n.m.handlerErrors.Add(1)
			s.n.log.Error("node: handler panicked", "pattern", s.pattern, "signal", sig.ID, "panic", r)
		}
	}()
	if err := s.h(s.n.ctx, sig); err != nil {
		s.failed.Add(1)
		s.n.m.handlerErrors.Add(1)
		s.n.log.Warn("node: handler failed", "pattern", s.pattern, "signal", sig.ID, "err", err)
		return
	}
	s.delivered.Add(1)
	s.n.m.delivered.Add(1)
}

// Pattern is the subscription's pattern.
func (s *Subscription) Pattern() string { return s.pattern }

// Dropped is the number of signals dropped because the queue was full.
func (s *Subscription) Dropped() int64 { return s.dropped.Load() }

// Close ends the subscription: no more calls to its handler once Close
// returns (a call in progress finishes first; do not call Close from the
// handler itself). Idempotent.
func (s *Subscription) Close() error {
	s.closeOnce.Do(func() {
		s.n.subs.RemoveFunc(s.pattern, func(t *Subscription) bool { return t == s })
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.quit)
	})
	<-s.stopped
	return nil
}

func (n *Node) dispatch(sig *signalmesh.Signal) {
	for _, s := range n.subs.Route(sig) {
		s.enqueue(sig)
	}
}

// closeSubscriptions waits for every subscription goroutine; the node's
// context is already cancelled, so they are on their way out.
func (n *Node) closeSubscriptions() {
	n.subMu.Lock()
	defer n.subMu.Unlock()
	n.subWG.Wait()
}
