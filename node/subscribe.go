package node

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/router"
	"github.com/signalmesh/signalmesh/vclock"
)

// Handler handles one signal. It runs on the subscription's own goroutine,
// one signal at a time, in causal order (within the subscription: another
// subscription's handler runs at its own pace). ctx ends when the node
// closes. An
// error (or a panic) is counted and logged; the signal is not redelivered.
// A handler that calls the node it was called by (Publish, Status, ...)
// should pass ctx, or a context derived from it: a subscription
// WithOverflow(OverflowBlock) needs it to tell its handler's calls from
// others' (see WithOverflow). The signal is shared (with other
// subscriptions, and with the node, which reads it on other goroutines):
// a handler reads it and must not modify it; Clone it to change a copy.
type Handler func(ctx context.Context, s *signalmesh.Signal) error

// Middleware wraps a Handler (logging, timeouts, filtering, ...).
type Middleware func(Handler) Handler

// SubOption configures a subscription.
type SubOption func(*subConfig) error

type subConfig struct {
	mw       []Middleware
	priority int
	inFlight int
	retry    *Retry
	name     string
	start    Start

	overflow    Overflow
	overflowSet bool

	group       string
	strategy    Strategy
	strategySet bool
	local       bool
	noNotice    bool
}

// Start says where a subscription begins.
type Start struct {
	kind  int // 0 now, 1 beginning, 2 time, 3 cursor
	at    time.Time
	after vclock.Clock
}

var (
	// StartNow: only signals delivered from now on (the default for a new
	// subscription).
	StartNow = Start{}
	// StartBeginning: every journaled signal first, in replay order, then live.
	StartBeginning = Start{kind: 1}
)

// StartAt begins with the journaled signals whose time is t or later.
func StartAt(t time.Time) Start { return Start{kind: 2, at: t} }

// StartAfter begins after a cursor: the signals the cursor does not cover.
// A cursor names origins by peer id (as Status.Clock does) or by their
// causal.PeerRef.
func StartAfter(cursor vclock.Clock) Start { return Start{kind: 3, after: byRef(cursor)} }

// byRef returns c with every peer id replaced by its causal.PeerRef.
func byRef(c vclock.Clock) vclock.Clock {
	var out vclock.Clock
	for _, e := range c.Entries() {
		o := e.Peer
		if len(o) != causal.RefLen {
			o = causal.PeerRef(o)
		}
		out = out.Set(o, max(out.Get(o), e.N))
	}
	return out
}

// WithName makes the subscription persistent: its cursor (what it has
// handled, per origin) is stored under name in the node's store, and a
// subscription with the same name made later, also after a restart, resumes
// after it, each signal handled once. Delivery is at least once across a
// crash: the cursor is written after each handled signal and synced on
// Close. With a Config.DataDir (which holds the cursor log), after a crash
// what the last process handed over to the handler without recording it
// as handled is handed over again first, once each, in the order it was
// handed over, before any signal that process never handed over; only
// what the node can read then: a Weak signal, or one whose journal entry
// and local copy were both lost (such as a signal of another replica's
// journal delta handed over before the delta's merge committed here),
// comes again only if it is delivered again, maybe after new ones. (With a Config.Datastore and no DataDir,
// such a signal comes again in the backlog's order.)
func WithName(name string) SubOption {
	return func(c *subConfig) error {
		if name == "" || len(name) > maxNameBytes || strings.ContainsAny(name, "/\x00") {
			return fmt.Errorf("node: subscription name %q: 1-1024 bytes, no '/'", name)
		}
		c.name = name
		return nil
	}
}

// WithoutTruncationNotice keeps truncation notices (TypeTruncated) from
// the handler: for a handler that forwards what it gets (a bridge to
// another system), where a notice would pass for an event. Signals past
// retention are still counted (Status.Truncated) and logged.
func WithoutTruncationNotice() SubOption {
	return func(c *subConfig) error {
		c.noNotice = true
		return nil
	}
}

// WithStart sets where the subscription begins. For a named subscription with
// a stored cursor, the cursor wins. The backlog it asks for (and a named
// subscription's, from its cursor) leaves out the signals past
// Config.Retention; when it passed over any, the handler first gets a
// truncation notice saying how many (TypeTruncated, Truncation; see
// WithoutTruncationNotice). The backlog comes in the journal's replay
// order (Replay's), read as the handler takes it; with a count or byte
// retention rule it first reads itself once to count (time, not memory).
func WithStart(s Start) SubOption {
	return func(c *subConfig) error { c.start = s; return nil }
}

// WithMiddleware wraps the handler; the first middleware is the outermost.
func WithMiddleware(mw ...Middleware) SubOption {
	return func(c *subConfig) error { c.mw = append(c.mw, mw...); return nil }
}

// WithMaxInFlight bounds the signals dispatched to this subscription and
// held in memory, not yet handled (default Params.SubscriberQueue). Past
// it, a named subscription (WithName) keeps the rest in a log in the node's
// store, in order, and reads it back once it has handled what is in memory:
// it loses nothing, it falls behind on disk. An unnamed subscription does
// what its Overflow policy says (WithOverflow): by default it drops them,
// counted ("subscriber_overflow"); with OverflowBlock the node waits for
// room.
func WithMaxInFlight(n int) SubOption {
	return func(c *subConfig) error {
		if n < 1 {
			return fmt.Errorf("node: WithMaxInFlight(%d): at least 1", n)
		}
		c.inFlight = n
		return nil
	}
}

// Overflow is what an unnamed subscription does with a signal its node
// delivers while the subscription's queue (Params.SubscriberQueue, or
// WithMaxInFlight) is full. It is chosen per subscription (WithOverflow).
type Overflow int

const (
	// OverflowDrop (the default) drops the signal for this subscription
	// and counts it: Subscription.Dropped, Status.Dropped and the
	// signalmesh_dropped_total metric, reason "subscriber_overflow".
	// Nothing else slows down; the subscription misses what it dropped.
	OverflowDrop Overflow = iota
	// OverflowBlock makes the node wait for room in the queue:
	// back-pressure, nothing dropped. What waits, what that costs the rest
	// of the node and what ends the wait is told on WithOverflow.
	OverflowBlock
)

func (o Overflow) String() string {
	switch o {
	case OverflowDrop:
		return "drop"
	case OverflowBlock:
		return "block"
	}
	return fmt.Sprintf("Overflow(%d)", int(o))
}

// WithOverflow sets what the subscription does when its queue is full
// (default OverflowDrop). Only an unnamed subscription has the choice:
// with WithName or WithGroup, Subscribe returns an error, since a named
// subscription neither drops nor holds the node up; past its queue it
// spills to the node's store and reads back in order (WithMaxInFlight).
//
// With OverflowBlock the node's loop, the one goroutine that puts every
// signal (from gossip, from the journal and published here) in causal
// order and hands it to the subscriptions, waits, before it queues a
// signal for this subscription, until the queue has room. The
// subscription gets every signal the node delivers, each once, in causal
// order, with at most its queue's bound in memory (but see the handler's
// own calls, below). While the loop waits, the whole node waits with it:
//
//   - every other subscription on the node gets nothing new (what is in
//     their queues goes on being handled);
//   - signals from other peers wait: the gossip reader waits for the loop
//     (its inbox holds 1,024 signals), and what GossipSub receives past
//     its buffer for the topic (4,096 messages) it drops, so those come
//     later by the journal; the journal's put hook waits too, so the DAG
//     sync of the journal slows down, and so do this node's
//     acknowledgements of other peers' Quorum signals;
//   - Publish on this node still returns once its signals are durable,
//     but the committer hands each batch to the loop before it takes the
//     next: once the loop's inbox is full, Publish calls on every
//     goroutine wait behind it (ctx ends such a wait only while the call
//     waits for room in the commit queue, Params.CommitQueue; once
//     queued, it waits for its commit, like any Publish);
//   - calls that ask the loop wait: Subscribe, Status, Health (its loop
//     check fails after 2 s, so the daemon's /healthz answers 503),
//     Causes, Effects, Trace, and Get for a signal not journaled yet;
//     their ctx ends the wait (Subscribe has none: Node.Close does);
//   - so do the loop's periodic work (adoption of unjournaled signals,
//     cause checks) and its pulls from the journal.
//
// The backlog a start asks for (WithStart) is read from the journal as
// the handler takes it, before what came live, and is not counted against
// the bound: only live signals wait for room. The time a
// handler spends in its retries' backoff (WithRetry) is time the node
// waits too.
//
// So the slowest OverflowBlock handler sets the pace of its node: use it
// for a consumer that must see everything and keeps up on average (the
// queue absorbs bursts, the wait the rest), and give a consumer that may
// stay slow a name instead (it falls behind on disk, holding no one up).
//
// The wait ends when the subscription's goroutine takes the next signal
// from the queue; at once when Subscription.Close is called (Close
// returns once the handler's call in progress, if any, returns); and at
// once when Node.Close is called: from then on nothing waits for the
// subscription, what comes is queued, and what is queued when the node's
// context ends is not handled.
//
// A handler that calls its own node while the loop waits for its queue
// waits for the loop, which waits for the handler. The node breaks that
// cycle for calls made with the handler's ctx, or a context derived from
// it (Publish, PublishWith, Status, Health, Get, Causes, ...): while one
// is in progress the loop does not wait for this subscription, whose
// queue may then grow past its bound by what the node delivers meanwhile.
// The dead letters the subscription publishes after a handler's last
// failure are such calls too. A handler that calls its node with another
// context, calls Subscribe (which takes none) or closes another
// subscription whose handler waits for the node, or waits for another
// OverflowBlock subscription's handler (a lock they share), can stall the
// node until Subscription.Close or Node.Close from elsewhere: the node
// breaks the cycle only for a handler's own calls with its own ctx.
func WithOverflow(p Overflow) SubOption {
	return func(c *subConfig) error {
		if p != OverflowDrop && p != OverflowBlock {
			return fmt.Errorf("node: WithOverflow(%v): OverflowDrop or OverflowBlock", p)
		}
		c.overflow, c.overflowSet = p, true
		return nil
	}
}

// WithPriority orders this subscription among others matching the same
// signal with the same specificity (-100..100), like router.WithPriority.
func WithPriority(p int) SubOption {
	return func(c *subConfig) error { c.priority = p; return nil }
}

// Subscription is a handle on a subscription; Close ends it.
type Subscription struct {
	n       *Node
	id      string
	pattern string
	h       Handler
	limit   int

	mu     sync.Mutex // guards q and closed
	q      []queued
	closed bool

	wake      chan struct{} // buffer 1
	quit      chan struct{}
	stopped   chan struct{}
	closeOnce sync.Once

	delivered, failed, dropped atomic.Int64

	// OverflowBlock only (see WithOverflow)
	block   bool
	hctx    context.Context // the handler's ctx: the node's, carrying the subscription (see reenter)
	room    chan struct{}   // buffer 1: the run goroutine took a signal, or the handler called the node
	calls   atomic.Int32    // calls to the node with hctx in progress: the loop does not wait
	waiting atomic.Bool     // the loop waits for room
	started int             // what queueStart queued that is still in q: handed over again at a start, not counted against the bound (guarded by mu)
	blocked atomic.Int64    // signals the loop waited for room for

	retry *Retry

	// persistent subscriptions only; cursor is owned by the run goroutine
	name    string
	cursor  vclock.Clock
	spill   *spill      // guarded by mu
	clog    *cursorLog  // on disk only; owned by the run goroutine
	handled *handledSet // named only; owned by the run goroutine (see handledSet)

	bl       *backlogReader     // the backlog a start asked for, until handed over; owned by the run goroutine
	blCancel context.CancelFunc // ends its stream (Close); guarded by mu
	noNotice bool               // WithoutTruncationNotice

	info    SubscriptionInfo // its entry in the subscription set (lease and mark aside)
	local   bool             // not in the subscription set (WithLocal)
	leaving atomic.Bool      // withdrawn: renewals leave it alone
	group   *groupMember     // WithGroup only
}

// Subscribe calls h for every signal whose type matches pattern (router
// rules) that this node delivers from now on: signals published here or by
// any peer, each once, in causal order. Signals wait in a queue of
// Params.SubscriberQueue (WithMaxInFlight); past that a named subscription
// spills them to the node's store in order, an unnamed one drops them
// (counted), or, WithOverflow(OverflowBlock), makes the node wait for room.
func (n *Node) Subscribe(pattern string, h Handler, opts ...SubOption) (*Subscription, error) {
	if h == nil {
		return nil, fmt.Errorf("node: Subscribe with a nil handler")
	}
	if n.ctx.Err() != nil {
		return nil, ErrClosed
	}
	var cfg subConfig
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if err := n.groupDefaults(&cfg); err != nil {
		return nil, err
	}
	if cfg.overflowSet && cfg.name != "" {
		return nil, fmt.Errorf("node: WithOverflow(%v) with a named subscription (%q): a named subscription never drops and never holds the node up, it spills past its queue to the store (WithMaxInFlight); WithOverflow is for unnamed subscriptions", cfg.overflow, cfg.name)
	}
	mw := append(append([]Middleware(nil), n.cfg.DispatchMiddleware...), cfg.mw...)
	if n.m.hist != nil {
		mw = append([]Middleware{n.m.hist.observeLag}, mw...)
	}
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	limit := n.p.SubscriberQueue
	if cfg.inFlight > 0 {
		limit = cfg.inFlight
	}
	s := &Subscription{n: n, pattern: pattern, h: h, limit: limit, name: cfg.name, retry: cfg.retry, noNotice: cfg.noNotice,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), stopped: make(chan struct{}), hctx: n.ctx}
	if cfg.overflow == OverflowBlock {
		s.block, s.room = true, make(chan struct{}, 1)
		s.hctx = context.WithValue(n.ctx, handlerKey{}, s)
	}
	if err := router.Validate(pattern); err != nil {
		return nil, err
	}
	start := cfg.start
	var owed []handover // handed over by the last process, not recorded as handled
	if cfg.name != "" {
		s.spill = newSpill(n.cfg.Mesh, cfg.name)
		if err := n.clearSpill(s.spill); err != nil {
			return nil, fmt.Errorf("node: subscription %s: %w", cfg.name, err)
		}
		c, found, err := n.loadCursor(cfg.name)
		if err != nil {
			return nil, err
		}
		var handled []uint64
		if b, err := n.store.Get(n.ctx, n.handledKey(cfg.name)); err == nil {
			handled = unmarshalHandled(b)
		} else if !errors.Is(err, ds.ErrNotFound) {
			return nil, err
		}
		if n.cfg.DataDir != "" {
			log, logged, ids, open, err := openCursorLog(n.cfg.DataDir, n.cfg.Mesh, cfg.name)
			if err != nil {
				return nil, err
			}
			handled = append(handled, ids...)
			owed = open
			s.clog = log
			n.subMu.Lock()
			n.clogs = append(n.clogs, log) // closed by Close if the subscription is not
			n.subMu.Unlock()
			for _, e := range logged.Entries() { // advances after the last checkpoint
				c = c.Set(e.Peer, max(c.Get(e.Peer), e.N))
				found = true
			}
		}
		s.handled = newHandledSet(handled)
		if found {
			start = StartAfter(c)
		}
		if start.kind == 3 {
			s.cursor = start.after
		}
	}
	var from vclock.Clock // a group member takes the signals after it
	n.subMu.Lock()
	defer n.subMu.Unlock()
	if n.ctx.Err() != nil {
		return nil, ErrClosed
	}
	// On the loop, so that no signal is dispatched between the backlog and
	// the registration.
	var addErr error
	pending := false // a backlog waits: wake the subscription once it runs
	err := n.do(context.Background(), func() {
		if start.kind != 0 {
			// Each copy of an event is judged by a group member (see
			// handle): it may own the copy the cursor does not cover.
			s.bl = n.openBacklog(pattern, start, cfg.group != "" && cfg.strategy.kind != kindBroadcast, cfg.name != "")
		}
		s.queueStart(n.handedBefore(pattern, owed))
		pending = len(s.q) > 0 || s.bl != nil
		switch start.kind {
		case 0:
			for o, seq := range n.core.Delivered() {
				from = from.Set(o, seq)
			}
		case 3:
			from = start.after
		}
		if addErr = n.subs.Add(pattern, s, router.WithPriority(cfg.priority)); addErr != nil {
			s.q = nil
			return
		}
	})
	if err == nil {
		err = addErr
	}
	if err != nil {
		return nil, err
	}
	s.id = newSubID(cfg.name)
	s.local = cfg.local
	s.info = SubscriptionInfo{Peer: n.self.String(), ID: s.id, Pattern: pattern, Name: cfg.name, Priority: cfg.priority,
		Group: cfg.group, Region: n.cfg.Region}
	if cfg.group != "" {
		s.info.Strategy, s.info.From = cfg.strategy.String(), from
		s.group = newGroupMember(s.info, cfg.strategy)
		if s.cursor.Len() == 0 {
			s.cursor = from // it never gets what its node delivered before it joined
		} else if cfg.strategy.kind != kindBroadcast {
			s.group.returned = time.Now() // it comes back: see passOver
		}
		s.group.publish(s.cursor)
	}
	if !s.local {
		if err := n.announceSub(s); err != nil {
			n.subs.RemoveFunc(pattern, func(t *Subscription) bool { return t == s })
			s.mu.Lock()
			s.closed = true // the loop may wait for its room (OverflowBlock): no run goroutine will make any
			s.mu.Unlock()
			close(s.quit)
			return nil, fmt.Errorf("node: announce subscription: %w", err)
		}
	}
	n.subWG.Add(1)
	go s.run()
	if pending {
		select {
		case s.wake <- struct{}{}:
		default: // already woken by a newer signal
		}
	}
	return s, nil
}

// queueStart queues what the subscription starts with, before its
// registration (from then on the loop appends, in enqueue under s.mu, and
// only the loop and run touch s.q): again, what the last process handed
// over and did not record as handled (see handedBefore). The backlog comes
// after them, from the backlog reader, which leaves them out.
func (s *Subscription) queueStart(again []*signalmesh.Signal) {
	for _, b := range again {
		s.q = append(s.q, queued{sig: b, mark: markAgain})
		if s.bl != nil {
			origin, seq := journal.Place(b)
			s.bl.again[causal.Ref{Origin: origin, Seq: seq}] = true
		}
	}
	s.started = len(s.q) // not counted against an OverflowBlock bound
}

// backlogReader hands over a subscription's backlog (the journaled
// signals matching its pattern that its node had delivered when it
// subscribed and that its start asks for, in replay order, each identity
// once, or each copy marked for a consumer group member) one signal at a
// time as its handler takes them: journal.Stream, pulled by the
// subscription's goroutine. Its memory follows the number of origins and
// the node's lately delivered signals (held by reference), not the
// backlog's length; a named subscription that resumes reads what it
// missed, not the history. A read that fails is tried again from where it
// stopped. Owned by the run goroutine (made before it starts; the stream
// starts at the first pull).
type backlogReader struct {
	ctx    context.Context // ends with the subscription or the node
	cancel context.CancelFunc
	tops   map[string]uint64
	after  journal.Cursor // where the stream starts: then, where the last one stopped
	opts   journal.StreamOptions
	next   func() (journal.StreamStep, error, bool)
	stop   func()
	cur    journal.Cursor      // the running stream's cursor (live: read it once the stream stopped)
	again  map[causal.Ref]bool // handed over first (queueStart): not again
	held   *queued             // the signal that comes after a truncation notice
	cut    bool                // ended before its end: the subscription or the node closed
	failed int                 // reads that failed in a row
}

// maxBacklogRetries is how many times a backlog's read is tried again
// after it failed (after 1, 2, 4, 8 and 16 s) before the rest of the
// backlog is given up.
const maxBacklogRetries = 5

// backlogRetry is the wait before a backlog's first read again (a var:
// tests shorten it).
var backlogRetry = time.Second

// openBacklog takes, on the loop, what the backlog is: per origin, the
// journal up to what the core delivered (and the delivered signals whose
// journal entries have not arrived yet, streamed as if journaled), minus
// the ranges given up (delivered late, if they come, live), after the
// cursor for StartAfter. Nothing is read until the subscription pulls.
func (n *Node) openBacklog(pattern string, start Start, keepCopies, named bool) *backlogReader {
	tops := n.tops.all()
	for o, top := range tops {
		tops[o] = min(top, n.core.DeliveredOf(o))
	}
	var extra []*signalmesh.Signal
	for _, s := range n.fresh.list("") {
		origin, seq := journal.Place(s)
		if seq == 0 || seq > n.core.DeliveredOf(origin) {
			continue
		}
		extra = append(extra, s)
		tops[origin] = max(tops[origin], seq)
	}
	skipped := map[string][]causal.Gap{}
	for _, g := range n.core.SkippedGaps() {
		skipped[g.Origin] = append(skipped[g.Origin], g)
	}
	var after journal.Cursor
	if start.kind == 3 {
		after = journal.Cursor{}
		for _, e := range start.after.Entries() {
			after[e.Peer] = e.N
		}
	}
	match := func(s *signalmesh.Signal) bool {
		if !router.Matches(pattern, s.Type) || (start.kind == 2 && s.Time.Before(start.at)) {
			return false
		}
		origin, seq := journal.Place(s)
		for _, g := range skipped[origin] {
			if seq >= g.From && seq <= g.To {
				return false // given up, not delivered: it comes live, late
			}
		}
		return true
	}
	return &backlogReader{tops: tops, after: after, again: map[causal.Ref]bool{},
		// A named subscription judges a copy of what lies at or before
		// its cursor by what it handled (handle, s.handled): the copy there
		// may have left retention unhandled.
		opts: journal.StreamOptions{Match: match, Copies: keepCopies, Extra: extra, ResumeCopies: named}}
}

// pull starts the stream from b.after; false when the subscription is
// closed already.
func (s *Subscription) pull() bool {
	b := s.bl
	if b.ctx == nil {
		// Its own context, which Close ends: a stream that reads on
		// (a stretch of signals that do not match, the first count of a
		// retention rule) stops at once.
		b.ctx, b.cancel = context.WithCancel(s.n.ctx)
		s.mu.Lock()
		closed := s.closed
		s.blCancel = b.cancel
		s.mu.Unlock()
		if closed {
			b.cancel()
			return false
		}
	}
	after, jr := b.after, s.n.jr
	seq := func(yield func(journal.StreamStep, error) bool) {
		err := jr.Stream(b.ctx, b.tops, after, b.opts, func(st journal.StreamStep) bool {
			b.cur = st.Cursor
			return yield(st, nil)
		})
		if err != nil {
			yield(journal.StreamStep{}, err)
		}
	}
	b.next, b.stop = iter.Pull2(iter.Seq2[journal.StreamStep, error](seq))
	return true
}

// nextBacklog returns the backlog's next signal for the handler (a
// truncation notice where the backlog passed over signals past
// Config.Retention, before the next one), or false once it is done or cut
// short (b.cut: the subscription or the node closed); it then stops the
// reader. A read that fails is logged, counted, and tried again from where
// the stream's last step left it, up to maxBacklogRetries times in a row.
// Only run calls it.
func (s *Subscription) nextBacklog() (queued, bool) {
	b := s.bl
	if b.held != nil {
		q := *b.held
		b.held = nil
		return q, true
	}
	for {
		if b.next == nil && !s.pull() {
			b.cut = true
			return queued{}, false
		}
		st, err, ok := b.next()
		if !ok || err != nil {
			b.stop()
			b.next, b.stop = nil, nil
			if err == nil {
				s.closeBacklog() // done
				return queued{}, false
			}
			if b.ctx.Err() != nil {
				b.cut = true
				return queued{}, false
			}
			s.n.m.drop("backlog_read")
			if b.failed++; b.failed > maxBacklogRetries {
				// A store that cannot be read: what is left of the backlog
				// is not handed over (the live signals wait no longer).
				s.n.log.Error("node: read a subscription's backlog; giving up on the rest of it", "name", s.name, "pattern", s.pattern, "err", err)
				s.closeBacklog()
				return queued{}, false
			}
			s.n.log.Error("node: read a subscription's backlog; trying again", "name", s.name, "pattern", s.pattern, "err", err)
			if b.cur != nil {
				b.after = maps.Clone(b.cur) // the stream is over: its cursor is where its last step left it
			}
			t := time.NewTimer(backlogRetry << (b.failed - 1))
			select {
			case <-t.C:
			case <-b.ctx.Done():
				t.Stop()
				b.cut = true
				return queued{}, false
			}
			continue
		}
		b.failed = 0
		var q *queued
		if st.Signal != nil {
			origin, seq := journal.Place(st.Signal)
			if !b.again[causal.Ref{Origin: origin, Seq: seq}] {
				q = &queued{sig: st.Signal}
				if st.Copy {
					q.mark = markCovered // another copy of an event already in the backlog or judged
				}
			}
		}
		if st.Truncated > 0 {
			s.n.m.truncated.Add(int64(st.Truncated))
			s.n.log.Info("node: a subscription's backlog passed over signals past retention", "name", s.name, "pattern", s.pattern, "left", st.Truncated)
			if notice, err := s.n.truncationNotice(s.name, s.pattern, st.Truncated); err == nil && !s.noNotice {
				b.held = q
				return queued{sig: notice, mark: markNotice}, true
			}
		}
		if q != nil {
			return *q, true
		}
	}
}

// closeBacklog stops the backlog reader, if any. Only run calls it.
func (s *Subscription) closeBacklog() {
	if b := s.bl; b != nil {
		if b.stop != nil {
			b.stop()
		}
		if b.cancel != nil {
			b.cancel()
		}
		s.bl = nil
	}
}

// handedBefore returns, in order, the signals of owed (what the last
// process handed over to a named subscription and did not record as
// handled, see cursorLog) that match pattern and that the node can read
// by their place: delivered and not journaled yet (the fresh set, in
// memory or, kept by the last process, in the store), or journaled. It
// reads them whether or not the core has delivered them again yet: the
// last process delivered them, after their causal past. One it cannot
// read (a Weak signal has no place) is logged: it comes again only if it
// is delivered again, and then maybe after new ones. It runs on the loop.
func (n *Node) handedBefore(pattern string, owed []handover) []*signalmesh.Signal {
	var out []*signalmesh.Signal
	seen := map[uint64]bool{}
	for _, h := range owed {
		if seen[h.id] {
			continue
		}
		seen[h.id] = true
		if h.seq == 0 {
			// Weak: no place to read it from (documented on WithName).
			n.log.Debug("node: a Weak signal handed over before a crash comes again only if it is delivered again")
			continue
		}
		s := n.readPlace(causal.Ref{Origin: h.origin, Seq: h.seq})
		if s == nil || identityHash(s) != h.id {
			// The documented limit on WithName (e.g. an entry of a remote
			// delta whose merge the kill cut short): not a fault of this
			// process, so not a warning; it comes again with its delta.
			n.log.Info("node: a signal handed over before a crash cannot be read to hand it over again first; it comes again when delivered again",
				"origin", h.origin, "seq", h.seq)
			continue
		}
		if router.Matches(pattern, s.Type) {
			out = append(out, s)
		}
	}
	return out
}

// readPlace returns the signal the node delivered or journaled at r, or
// nil. The durable fresh area is read before the journal: the adopter
// journals a signal, then drops it from there. It runs on the loop.
func (n *Node) readPlace(r causal.Ref) *signalmesh.Signal {
	if r.Seq == 0 {
		return nil
	}
	if e, ok := n.fresh.sigs[r]; ok {
		return e.s
	}
	if s, ok := n.fresh.settled[r]; ok {
		return s
	}
	ctx := context.WithoutCancel(n.ctx)
	if b, err := n.store.Get(ctx, n.freshKey(r)); err == nil {
		if s, err := signalmesh.DecodeBinary(b, signalmesh.Limits{}); err == nil {
			return s
		}
	}
	s, err := n.jr.At(ctx, r.Origin, r.Seq)
	if err != nil {
		return nil
	}
	return s
}

// handledKey holds a named subscription's handledSet, saved with its cursor.
func (n *Node) handledKey(name string) ds.Key {
	return ds.NewKey("/signalmesh/" + n.cfg.Mesh + "/handled/" + name)
}

func (n *Node) cursorKey(name string) ds.Key {
	return ds.NewKey("/signalmesh/" + n.cfg.Mesh + "/cursor/" + name)
}

func (n *Node) loadCursor(name string) (vclock.Clock, bool, error) {
	var c vclock.Clock
	b, err := n.store.Get(n.ctx, n.cursorKey(name))
	if errors.Is(err, ds.ErrNotFound) {
		return c, false, nil
	}
	if err != nil {
		return c, false, err
	}
	return c, true, c.UnmarshalBinary(b)
}

// mark says what a queued signal is besides a signal for the handler.
type mark uint8

const (
	markNone    mark = iota
	markCovered      // another copy of an event it saw: it only moves a named subscription's cursor (a group member judges it: see handle)
	markLate         // delivered after later signals of its origin (causal.Release.Late): the cursor is past it
	markAgain        // the last process handed it over and did not record it as handled (see cursorLog)
	markNotice       // a truncation notice (TypeTruncated): for the handler only
)

// queued is a signal for the handler, and its mark.
type queued struct {
	sig  *signalmesh.Signal
	mark mark
}

// enqueue is called by the loop. It never blocks, but for an OverflowBlock
// subscription with a full queue (see awaitRoom).
func (s *Subscription) enqueue(sig *signalmesh.Signal, covered mark) {
	s.mu.Lock()
	if s.block {
		s.awaitRoom()
	}
	switch {
	case s.closed:
	case s.spill != nil && (s.spill.on || len(s.q) >= s.limit):
		if err := s.toSpill(sig, covered); err != nil { // the store failed: nothing else can keep it
			s.dropped.Add(1)
			s.n.m.drop("subscriber_spill")
			s.n.log.Error("node: spill a signal for a slow subscription", "name", s.name, "signal", sig.ID, "err", err)
		}
	case len(s.q) >= s.limit && !s.block:
		s.dropped.Add(1)
		s.n.m.drop("subscriber_overflow")
	default: // an OverflowBlock subscription past its bound: its handler calls the node, or the node closes
		s.q = append(s.q, queued{sig, covered})
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// awaitRoom waits, on the loop, while the queue of an OverflowBlock
// subscription is full, until the run goroutine takes a signal from it,
// the subscription closes, the node's Close begins, or the handler calls
// the node with its ctx (reenter). It is called, and returns, with s.mu
// held.
func (s *Subscription) awaitRoom() {
	counted := false
	for len(s.q)-s.started >= s.limit && !s.closed && s.calls.Load() == 0 && !s.n.releasing() && s.n.ctx.Err() == nil {
		s.mu.Unlock()
		if !counted {
			counted = true
			s.blocked.Add(1)
		}
		select { // the run goroutine was woken for what is queued; this is cheap insurance
		case s.wake <- struct{}{}:
		default:
		}
		s.waiting.Store(true)
		select {
		case <-s.room:
		case <-s.quit:
		case <-s.n.unblock:
		case <-s.n.ctx.Done():
		}
		s.waiting.Store(false)
		s.mu.Lock()
	}
}

// handlerKey is the key of the subscription in its handler's ctx.
type handlerKey struct{}

// reenter tells an OverflowBlock subscription of n, when ctx is (or
// derives from) its handler's ctx, that its handler calls the node: until
// the returned func is called, the loop does not wait for room in its
// queue (the call may wait for the loop, which would wait for the
// handler). Any other ctx costs a lookup.
func (n *Node) reenter(ctx context.Context) (done func()) {
	s, _ := ctx.Value(handlerKey{}).(*Subscription)
	if s == nil || s.n != n {
		return func() {}
	}
	s.calls.Add(1)
	select {
	case s.room <- struct{}{}: // the loop, if it waits for s, looks again
	default:
	}
	return func() { s.calls.Add(-1) }
}

func (s *Subscription) run() {
	defer s.n.subWG.Done()
	defer close(s.stopped)
	defer s.closeBacklog()
	for {
		s.flushCursor() // it waits: what it handled is in its cursor log
		select {
		case <-s.quit:
			return
		case <-s.n.ctx.Done():
			return
		case <-s.wake:
		}
		if s.group != nil && !s.syncView() {
			continue // no view of its group yet: the registrar wakes it with one
		}
		for {
			if s.n.ctx.Err() != nil && s.n.crashing() {
				return // as a kill -9 would: nothing more is handled
			}
			s.mu.Lock()
			if s.bl != nil && s.started == 0 && !s.closed {
				// The backlog, after what was handed over again and
				// before what came live.
				s.mu.Unlock()
				if q, ok := s.nextBacklog(); ok {
					s.handle(q.sig, q.mark)
				} else if s.bl != nil && s.bl.cut {
					// Cut short by Close: nothing after it is handled
					// either (what came live would move a named
					// subscription's cursor past what it did not read).
					return
				}
				continue
			}
			if len(s.q) == 0 || s.closed {
				s.q = nil
				spilling := s.spill != nil && s.spill.on && !s.closed
				s.mu.Unlock()
				if spilling { // what came after the queue filled up, in order
					s.drainSpill()
				}
				break
			}
			q := s.q[0]
			s.q[0] = queued{}
			s.q = s.q[1:]
			if s.started > 0 {
				s.started--
			}
			s.mu.Unlock()
			if s.block {
				select {
				case s.room <- struct{}{}: // the loop may wait for it
				default:
				}
			}
			s.handle(q.sig, q.mark)
		}
	}
}

// handle calls the handler unless the cursor says the signal was handled
// before, then moves the cursor. A signal the last process handed over
// (markAgain) is handed over again unless its event was handled since,
// whatever the cursor and the group say: it may be behind the cursor (it
// was late, or a later one was handled while its handler was cut short),
// and the last process judged it this member's.
func (s *Subscription) handle(sig *signalmesh.Signal, m mark) {
	if s.group != nil {
		s.group.pending = "" // passOver sets it for this signal
	}
	if m == markNotice {
		// No place, no cursor, nobody else's share: it is for this
		// handler, once. Not retried, no dead letter (one naming it as
		// its cause would wait for it everywhere: it is in no journal),
		// not counted as delivered.
		if err := s.callOnce(sig); err != nil {
			s.failed.Add(1)
			s.n.m.handlerErrors.Add(1)
			s.n.log.Warn("node: handler failed on a truncation notice (not retried)", "pattern", s.pattern, "name", s.name, "err", err)
		}
		return
	}
	covered := m == markCovered
	if s.name == "" {
		if !covered {
			s.call(sig)
		}
		return
	}
	origin, seq := journal.Place(sig)
	if seq != 0 && seq <= s.cursor.Get(origin) && m != markLate && m != markAgain {
		return
	}
	id := identityHash(sig)
	copied := false
	if covered && s.group != nil && s.group.shares() && !s.handled.has(id) {
		// Another copy of an event this member has not handled: its node
		// delivered first a copy that was not this member's share, and
		// this copy may be (LocalFirst: the copies were published on two
		// peers; any strategy: a member eligible for one copy's place
		// only). Another node may have delivered the copies the other way
		// round, its member passing this one over as this member's: so it
		// is judged like any signal, as the journal's replay judges each
		// copy after a restart and takeOver after a departure. Each
		// (source, id) is handled at least once, by the owner of each of
		// its copies at most once each.
		covered, copied = false, true
	} else if covered && s.group != nil && s.group.shares() && s.group.cur != nil &&
		s.group.cur.owner(s.group.strategy, sig) != s.group.id {
		// Another copy of an event this member handled, another member's
		// share: its owner handles it too if its node delivered it first
		// (each publishing peer delivers its own copy first): count it.
		s.group.taken.Add(1)
		s.n.m.takenOver.Add(1)
	}
	if s.group != nil && !covered && m != markAgain && s.passOver(sig, origin, seq, m) {
		return // another member's
	}
	if copied && !s.handled.has(id) { // passOver may have handled it (a takeover) meanwhile
		// Its other copy may have been handled by another member (or by
		// this one, past the handled set's bound): a duplicate Taken
		// counts.
		s.group.taken.Add(1)
		s.n.m.takenOver.Add(1)
	}
	// A Weak signal has no place, and a late one is behind the cursor
	// already (reopened, the subscription does not get it again from the
	// journal): their log line only records that they were handled, so
	// that a copy met again after a crash (a Weak signal gossiped again)
	// is not handed over twice.
	line := handover{origin: origin, seq: seq, id: id}
	if seq == 0 {
		line.origin = "-"
	}
	if s.handled.has(line.id) {
		covered = true // another copy of an event it handled, maybe in an earlier process
	}
	if !covered && !s.handOver(sig, line) {
		return // cut short by Close: not handled, it comes again (first, after a crash)
	}
	if s.group != nil && s.group.pending != "" && !covered {
		s.group.tookFor(s.group.pending, origin, seq)
	}
	s.handled.add(line.id)
	if seq != 0 && m != markLate {
		s.cursor = s.cursor.Set(origin, max(s.cursor.Get(origin), seq))
	}
	if s.group != nil {
		s.group.publish(s.cursor)
	}
	if s.clog != nil {
		err := s.clog.add(line)
		if err == nil && s.clog.n >= cursorCheckpoint {
			if err = s.saveCursor(); err == nil {
				err = s.clog.reset()
			}
		}
		if err != nil {
			s.n.log.Error("node: save subscription cursor", "name", s.name, "err", err)
		}
		return
	}
	if seq == 0 || m == markLate {
		return
	}
	b, _ := s.cursor.MarshalBinary()
	if err := s.n.store.Put(context.WithoutCancel(s.n.ctx), s.n.cursorKey(s.name), b); err != nil {
		s.n.log.Error("node: save subscription cursor", "name", s.name, "err", err)
	}
}

// handOver calls the handler (see call), with a hand-over line in the
// cursor log before, if it has one.
func (s *Subscription) handOver(sig *signalmesh.Signal, line handover) bool {
	if s.clog != nil {
		if err := s.clog.handing(line); err != nil {
			s.n.log.Error("node: save subscription cursor", "name", s.name, "err", err)
		}
	}
	return s.call(sig)
}

// flushCursor writes the cursor log's held back advances.
func (s *Subscription) flushCursor() {
	if s.clog == nil {
		return
	}
	if err := s.clog.flush(); err != nil {
		s.n.log.Error("node: save subscription cursor", "name", s.name, "err", err)
	}
}

// saveCursor writes the whole cursor to the store and syncs it.
func (s *Subscription) saveCursor() error {
	ctx := context.WithoutCancel(s.n.ctx)
	b, _ := s.cursor.MarshalBinary()
	if err := s.n.store.Put(ctx, s.n.cursorKey(s.name), b); err != nil {
		return err
	}
	if err := s.n.store.Put(ctx, s.n.handledKey(s.name), s.handled.marshal()); err != nil {
		return err
	}
	return s.n.store.Sync(ctx, ds.NewKey("/signalmesh/"+s.n.cfg.Mesh))
}

// call runs the handler under the retry policy; after the last failure it
// publishes a dead-letter signal (never for a dead letter itself). It
// reports false when Close or the node's Close cut the retries short: the
// signal was not handled.
func (s *Subscription) call(sig *signalmesh.Signal) bool {
	r := s.retry
	if r == nil {
		d := defaultRetry()
		r = &d
	}
	backoff := r.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		if err = s.callOnce(sig); err == nil {
			s.delivered.Add(1)
			s.n.m.delivered.Add(1)
			return true
		}
		s.failed.Add(1)
		s.n.m.handlerErrors.Add(1)
		if attempt >= r.Attempts {
			break
		}
		t := time.NewTimer(jitter(backoff))
		select {
		case <-t.C:
		case <-s.quit:
			t.Stop()
			return false
		case <-s.n.ctx.Done():
			t.Stop()
			return false
		}
		backoff = min(2*backoff, r.MaxBackoff)
	}
	s.n.log.Warn("node: handler failed", "pattern", s.pattern, "signal", sig.ID, "attempts", r.Attempts, "err", err)
	if r.NoDeadLetter || sig.Type == DeadLetterType {
		return true
	}
	s.deadLetter(sig, r.Attempts, err)
	return true
}

func (s *Subscription) callOnce(sig *signalmesh.Signal) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return s.h(s.hctx, sig)
}

// DeadLetterType is the type of the signal a subscription publishes when its
// handler gave up on a signal. Its data (JSON) names the subscription, the
// signal, the attempts and the last error; its causeid is the failed signal.
const DeadLetterType = "signalmesh.deadletter"

func (s *Subscription) deadLetter(sig *signalmesh.Signal, attempts int, err error) {
	dl, e := signalmesh.New(DeadLetterType, "/signalmesh/"+s.n.self.String(), map[string]any{
		"subscription": s.name, "pattern": s.pattern, "signal": sig.ID, "type": sig.Type,
		"attempts": attempts, "error": err.Error(),
	}, signalmesh.WithCause(sig), signalmesh.WithSubject(sig.Type))
	if e == nil {
		e = s.n.Publish(s.hctx, dl) // hctx: an OverflowBlock subscription's loop must not wait for it meanwhile
	}
	if e != nil {
		s.n.log.Error("node: publish dead letter", "signal", sig.ID, "err", e)
		return
	}
	s.n.m.drop("dead_letter")
}

// Retry is a subscription's handler error policy: up to Attempts calls,
// waiting Backoff before the second, doubling up to MaxBackoff (each wait
// ±20 % jitter); after the last failure a DeadLetterType signal is published
// unless NoDeadLetter. While it retries, the subscription's later signals
// wait: order is kept.
type Retry struct {
	Attempts     int
	Backoff      time.Duration
	MaxBackoff   time.Duration
	NoDeadLetter bool
}

// defaultRetry: 3 attempts, 100 ms then 200 ms, then a dead letter.
func defaultRetry() Retry {
	return Retry{Attempts: 3, Backoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second}
}

// WithRetry sets the handler error policy (default: 3 attempts, 100 ms
// backoff doubling to 5 s, then a dead letter).
func WithRetry(r Retry) SubOption {
	return func(c *subConfig) error {
		if r.Attempts < 1 || r.Backoff < 0 || r.MaxBackoff < r.Backoff {
			return fmt.Errorf("node: WithRetry(%+v): Attempts >= 1, 0 <= Backoff <= MaxBackoff", r)
		}
		c.retry = &r
		return nil
	}
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d - d/5 + rand.N(2*d/5+1)
}

// Pattern is the subscription's pattern.
func (s *Subscription) Pattern() string { return s.pattern }

// Dropped is the number of signals dropped because the queue was full.
func (s *Subscription) Dropped() int64 { return s.dropped.Load() }

// Blocked is the number of signals the node's loop waited for room in
// the queue to hand over (WithOverflow(OverflowBlock); 0 otherwise).
func (s *Subscription) Blocked() int64 { return s.blocked.Load() }

// Close ends the subscription: no more calls to its handler once Close
// returns (a call in progress finishes first; do not call Close from the
// handler itself). Idempotent.
func (s *Subscription) Close() error {
	s.closeOnce.Do(func() {
		s.n.subs.RemoveFunc(s.pattern, func(t *Subscription) bool { return t == s })
		if s.group == nil {
			// Stop first: the loop may wait for its room (OverflowBlock),
			// and the withdrawal below writes to the store.
			s.mu.Lock()
			s.closed = true
			cancel := s.blCancel
			s.mu.Unlock()
			if cancel != nil {
				cancel() // a backlog stream reading on
			}
			close(s.quit)
			if !s.local {
				if err := s.n.withdrawSub(s); err != nil {
					s.n.log.Warn("node: withdraw subscription", "id", s.id, "err", err)
				}
			}
		} else {
			s.mu.Lock()
			s.closed = true
			cancel := s.blCancel
			s.mu.Unlock()
			if cancel != nil {
				cancel() // a backlog stream reading on
			}
			close(s.quit)
		}
		if s.group != nil {
			// Once it has stopped: its mark is final, and the members
			// that take its share over start after it (no duplicate).
			<-s.stopped
			if err := s.n.withdrawSub(s); err != nil {
				s.n.log.Warn("node: leave consumer group", "id", s.id, "err", err)
			}
		}
	})
	<-s.stopped
	s.n.subMu.Lock() // the node's Close closes the store under it
	defer s.n.subMu.Unlock()
	if s.n.storeClosed {
		return ErrClosed // the node's Close saved what the subscription held
	}
	if s.name != "" {
		// What is still spilled comes again from the journal, after the
		// cursor, when the subscription is next opened.
		errs := []error{s.n.clearSpill(s.spill)}
		if s.clog != nil {
			if err := s.saveCursor(); err != nil {
				errs = append(errs, err, s.clog.close())
			} else {
				errs = append(errs, s.clog.remove())
			}
		} else {
			errs = append(errs, s.saveCursor())
		}
		return errors.Join(errs...)
	}
	return nil
}

func (n *Node) dispatch(sig *signalmesh.Signal, m mark) {
	for _, s := range n.subs.Route(sig) {
		s.enqueue(sig, m)
	}
}

// dispatchCovered tells the named subscriptions that match sig, another
// copy of an event they were given, to move their cursor past it: reopened,
// they do not get it from the journal as new. A group member hands it over
// if it is its share of an event it has not handled (see handle).
func (n *Node) dispatchCovered(sig *signalmesh.Signal) {
	for _, s := range n.subs.Route(sig) {
		if s.name != "" {
			s.enqueue(sig, markCovered)
		}
	}
}

// closeSubscriptions waits for every subscription goroutine; the node's
// context is already cancelled, so they are on their way out.
func (n *Node) closeSubscriptions() {
	n.subMu.Lock()
	defer n.subMu.Unlock()
	n.subWG.Wait()
	for _, l := range n.clogs { // what they hold is read at the next open
		_ = l.close()
	}
	n.storeClosed = true // from now on Subscription.Close leaves the store alone
}
