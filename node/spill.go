package node

import (
	"context"
	"fmt"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/signalmesh/signalmesh"
)

// spill is a named subscription's overflow: past its queue's bound the
// loop appends signals (their wire form, in dispatch order) to a log in the
// node's store instead of dropping them, and the subscription reads the
// log back once its queue is empty, before it takes from memory again. A
// persistent subscription whose handler is slower than the stream (a
// database outage, a slow API) falls behind on disk, not in memory, and
// loses nothing. Its fields are guarded by the subscription's mu.
type spill struct {
	prefix     string // /signalmesh/<mesh>/spill/<name>/
	head, tail uint64 // next to read, next to write
	on         bool   // new signals go to the log until it is drained
}

func (sp *spill) key(i uint64) ds.Key { return ds.RawKey(fmt.Sprintf("%s%020d", sp.prefix, i)) }

func newSpill(mesh, name string) *spill {
	return &spill{prefix: "/signalmesh/" + mesh + "/spill/" + name + "/"}
}

// clearSpill deletes whatever a previous run of the subscription left in
// its log: the cursor covers all of it (the backlog starts after it).
func (n *Node) clearSpill(sp *spill) error {
	ctx := context.WithoutCancel(n.ctx)
	res, err := n.store.Query(ctx, query.Query{Prefix: sp.prefix[:len(sp.prefix)-1], KeysOnly: true})
	if err != nil {
		return err
	}
	all, err := res.Rest()
	if err != nil {
		return err
	}
	b, err := n.store.Batch(ctx)
	if err != nil {
		return err
	}
	for _, e := range all {
		if err := b.Delete(ctx, ds.RawKey(e.Key)); err != nil {
			return err
		}
	}
	return b.Commit(ctx)
}

// toSpill appends sig to the log. The caller holds s.mu.
func (s *Subscription) toSpill(sig *signalmesh.Signal, m mark) error {
	w, err := sig.MarshalBinary()
	if err != nil {
		return err
	}
	v := make([]byte, 1, 1+len(w))
	v[0] = byte(m)
	v = append(v, w...)
	if err := s.n.store.Put(context.WithoutCancel(s.n.ctx), s.spill.key(s.spill.tail), v); err != nil {
		return err
	}
	s.spill.tail++
	s.spill.on = true
	s.n.m.spilled.Add(1)
	return nil
}

// drainSpill hands the logged signals to the handler in order, until the
// log is empty (then new signals go to memory again) or the subscription
// stops. Only run calls it.
func (s *Subscription) drainSpill() {
	ctx := context.WithoutCancel(s.n.ctx)
	for {
		s.mu.Lock()
		head, tail, closed := s.spill.head, s.spill.tail, s.closed
		if head == tail {
			s.spill.on = false
		}
		s.mu.Unlock()
		if head == tail || closed || s.n.ctx.Err() != nil {
			return
		}
		for i := head; i < tail; i++ {
			select {
			case <-s.quit:
				return
			default:
			}
			if s.n.ctx.Err() != nil && s.n.crashing() {
				return // as a kill -9 would: nothing more is handled
			}
			k := s.spill.key(i)
			v, err := s.n.store.Get(ctx, k)
			if err == nil && len(v) > 0 {
				var sig *signalmesh.Signal
				if sig, err = signalmesh.DecodeBinary(v[1:], signalmesh.Limits{}); err == nil {
					s.handle(sig, mark(v[0]))
				}
			}
			if err != nil {
				s.n.log.Error("node: read a subscription's spilled signal", "name", s.name, "err", err)
			}
			_ = s.n.store.Delete(ctx, k)
			s.mu.Lock()
			s.spill.head = i + 1
			s.mu.Unlock()
		}
	}
}
