package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/vclock"
)

type via int

const (
	viaGossip via = iota
	viaJournal
	viaLocal // a Weak signal published here
)

type inbound struct {
	s   *signalmesh.Signal
	via via
}

// send hands a signal to the loop, waiting while the inbox is full. It
// returns false when the node is closing.
func (n *Node) send(in inbound) bool {
	select {
	case n.inbox <- in:
		return true
	case <-n.ctx.Done():
		return false
	}
}

// do runs f on the loop and waits for it.
func (n *Node) do(ctx context.Context, f func()) error {
	done := make(chan struct{})
	select {
	case n.reqs <- func() { f(); close(done) }:
	case <-n.ctx.Done():
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-n.ctx.Done():
		return ErrClosed
	}
}

// loop owns the causal buffer: every signal, from gossip, from the journal
// or published locally, goes through it, and released signals are
// dispatched to subscriptions in causal order.
func (n *Node) loop() {
	defer n.wg.Done()
	tick := time.NewTicker(n.p.Resync)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case in := <-n.inbox:
			n.handle(in)
		case f := <-n.reqs:
			f()
		case <-tick.C:
			if n.needResync { // causes that are not lost arrive by the put hook
				n.feedJournal(n.ctx, true)
			}
			n.checkCauses()
		}
	}
}

// checkCauses reports signals that have waited longer than CauseTimeout for
// a cause, once per episode (until the buffer empties).
func (n *Node) checkCauses() {
	switch {
	case n.buf.Len() == 0:
		n.waitingSince, n.reported = time.Time{}, false
	case n.waitingSince.IsZero():
		n.waitingSince = time.Now()
	case !n.reported && time.Since(n.waitingSince) > n.p.CauseTimeout:
		n.reported = true
		n.m.drop("missing_cause")
		n.log.Warn("node: signals wait for causes that have not arrived", "waiting", n.buf.Len(),
			"for", time.Since(n.waitingSince).Round(time.Millisecond), "missing", fmt.Sprint(n.buf.Missing()))
	}
}

func (n *Node) handle(in inbound) {
	c, err := journal.ClockOf(in.s)
	if err != nil {
		n.m.reject("clock")
		return
	}
	if c.Len() == 0 { // Weak: no causal order, delivered as it comes
		n.dispatch(in.s)
		return
	}
	origin, _ := in.s.Extensions[signalmesh.ExtPeer].(string)
	out, err := n.buf.Add(origin, c, in.s)
	switch {
	case errors.Is(err, vclock.ErrDuplicate):
		n.m.deduped.Add(1)
		return
	case errors.Is(err, vclock.ErrFull):
		n.m.drop("causal_buffer_full")
		n.needResync = true
		return
	case err != nil:
		n.m.reject("clock")
		return
	}
	if len(out) > 0 {
		n.publishDelivered()
	}
	for _, s := range out {
		n.dispatch(s)
	}
}

// publishDelivered makes the delivered clock visible to the committer, which
// stamps new signals with it: whatever a handler saw is a cause of what it
// publishes next.
func (n *Node) publishDelivered() {
	c := n.buf.Delivered()
	n.delivered.Store(&c)
	n.m.buffered.Store(int64(n.buf.Len()))
}

// feedJournal offers every journaled signal that has not been delivered to
// the buffer, in replay order. It runs at start (dispatch off: what is in
// the journal then counts as delivered) and when signals were dropped from a
// full buffer or are waiting for causes. It returns the highest sequence
// number of this node's own signals in the journal, delivered or not.
func (n *Node) feedJournal(ctx context.Context, dispatch bool) (ownSeq uint64) {
	all, _, err := n.jr.All(ctx)
	if err != nil {
		n.log.Warn("node: resync: read journal", "err", err)
		return 0
	}
	journal.Sort(all)
	self := n.self.String()
	for _, s := range all {
		n.seen.add(s.ID)
		if origin, seq := originSeq(s); origin == self {
			ownSeq = max(ownSeq, seq)
		}
	}
	n.needResync = false
	delivered := n.buf.Delivered()
	for _, s := range all {
		c, err := journal.ClockOf(s)
		origin, _ := s.Extensions[signalmesh.ExtPeer].(string)
		if err != nil || c.Get(origin) <= delivered.Get(origin) {
			continue
		}
		out, err := n.buf.Add(origin, c, s)
		if errors.Is(err, vclock.ErrFull) {
			n.needResync = true
			break
		}
		for _, r := range out {
			if dispatch {
				n.dispatch(r)
			}
		}
	}
	n.publishDelivered()
	return ownSeq
}
