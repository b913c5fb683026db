package node

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/router"
	"github.com/signalmesh/signalmesh/vclock"
)

// Status is a snapshot of a node.
type Status struct {
	Peer  string
	Peers int
	// Mesh is the number of peers in this node's GossipSub mesh of the
	// signals topic (GossipSub grafts below D_lo and trims at D_hi: 3 to 7
	// peers at the default Params.GossipDegree 4, when it has enough).
	Mesh int
	// Subscribed is the number of peers GossipSub knows to subscribe to
	// the signals topic: what the node publishes goes to them.
	Subscribed int
	// Relinked counts the connected peers this node connected to again
	// because GossipSub or bitswap had stopped sending to them: an
	// outbound GossipSub stream that stayed closed, a peer that stayed
	// outside the signals topic while connected, a journal head it
	// announced that did not come (see Offline in the package doc).
	Relinked int64
	// Truncated counts the signals past Config.Retention that
	// subscriptions' backlogs passed over, each backlog's count told to
	// its handler in a truncation notice (TypeTruncated).
	Truncated int64
	// Links are the connected peers, each direct or relayed, with its
	// GossipSub score.
	Links []Link
	// Graylisted counts the peers whose GossipSub score is below
	// the graylist threshold (-80): their messages are ignored unread
	// until the score recovers (see peer scoring in the package doc).
	Graylisted int
	Journaled  int64 // journal entries this replica has seen arrive (local and remote)
	Heads      int   // DAG heads of the journal CRDT
	// BlocksRebuilt counts announced journal heads whose block this
	// replica built from the signals gossip had brought (the block's
	// recipe came with its announcement); BlocksFetched those it fetched
	// from peers. Blocks below a head that go-ds-crdt fetches on its walk
	// are not counted.
	BlocksRebuilt, BlocksFetched int64
	// Pruned and PrunedBlocks count the journal entries and blocks this
	// node deleted from its store past retention (Params.Prune);
	// SnapshotsServed the snapshot joins it answered.
	Pruned, PrunedBlocks, SnapshotsServed int64
	Clock                                 vclock.Clock // what this node delivered: per origin peer id, the highest sequence
	Buffered                              int          // signals waiting for a dependency
	Unjournaled                           int          // delivered signals whose journal entry has not arrived here yet (adopted after Params.Adopt)
	Spilled                               int64        // signals slow named subscriptions kept in their log on the store
	Evicted                               int64        // waiting signals dropped from the full causal buffer for earlier ones they needed (read again from the journal)
	Missing                               []vclock.Gap // sequence ranges they wait for, per origin peer id (its causal.PeerRef when unknown)
	// MissingCauses are the causeids that waiting signals wait for.
	MissingCauses []string
	// Origins is the number of origins the causal core holds state of;
	// Forgotten counts the origins that left and were forgotten (their
	// floors kept on the store; see Origins that left in the package
	// doc). Clock leaves out the ones forgotten.
	Origins   int
	Forgotten int64
	// Conflicts counts signals delivered with a (source, id) that another
	// signal with other content had (published on two cut-off peers).
	Conflicts int64
	Published int64
	Delivered int64 // handler calls that succeeded
	Deduped   int64
	RPCsIn    int64 // GossipSub RPCs received and sent (all of the node's topics)
	RPCsOut   int64
	// GossipLeft counts the message ids named by gossip (IHAVE) on the
	// signals topic that this node left out because their sender had been
	// connected to it for less than GossipSub's gossip window (3 s) while
	// this node had a mesh on the topic (unless this node had restarted on
	// its journal and met the sender as it came back): mostly frames
	// published before the two were connected, which the journal brings
	// (see inspectRPC).
	// Ids GossipSub would not have asked for anyway (seen already, over
	// its limits) are counted too.
	GossipLeft int64
	// TakenOver counts signals this node's consumer group members
	// handled for members that departed (Subscription.Taken): the bound
	// of the duplicates failovers and partitions caused here.
	TakenOver int64
	// PassedBack counts signals this node's returning group members
	// passed over because another member had handled them for them while
	// they were away (see the package doc, Consumer groups).
	PassedBack int64
	// LeaseRenewals are this node's renewals of its entries in the
	// subscription set (every Params.Lease/3); LeaseGossipBytes the bytes
	// of the entries they gossiped, LeaseBytes those written to the set's
	// CRDT (an unchanged entry every 10 leases, a delta each time).
	LeaseRenewals, LeaseGossipBytes, LeaseBytes int64
	// JoinsUnanswered counts joins of the peers and the leases topics
	// (one each for a peer that joins both) left to the next round: the
	// peer's own announcement or fresh lease message had reached this
	// node within 1.5 Params.Discover or Params.Lease/2 (see pace.go).
	JoinsUnanswered int64
	// Groups are this node's consumer group members' groups with the
	// live members of each, at the registry's last read.
	Groups   map[string][]string
	Dropped  map[string]int64 // by reason
	Rejected map[string]int64 // by reason
}

// Status reports the node's state.
func (n *Node) Status(ctx context.Context) (Status, error) {
	st := Status{Peer: n.self.String(), Peers: len(n.Peers()), Mesh: n.m.meshSize(), Links: n.Links(), Journaled: n.m.journaled.Load(),
		Published: n.m.published.Load(), Delivered: n.m.delivered.Load(), Deduped: n.m.deduped.Load(),
		RPCsIn: n.m.rpcsIn.Load(), RPCsOut: n.m.rpcsOut.Load(), GossipLeft: n.m.ihaveLeft.Load(), Conflicts: n.m.conflicts.Load(), Spilled: n.m.spilled.Load(),
		TakenOver: n.m.takenOver.Load(), PassedBack: n.m.passedBack.Load(), LeaseRenewals: n.m.leaseRenewals.Load(), LeaseGossipBytes: n.m.leaseGossip.Load(), LeaseBytes: n.m.leaseBytes.Load(), JoinsUnanswered: n.m.joinsUnanswered.Load(), Groups: n.groups()}
	st.Subscribed, st.Relinked, st.Truncated = len(n.topic.ListPeers()), n.m.relinked.Load(), n.m.truncated.Load()
	st.Dropped, st.Rejected = n.m.snapshot()
	if m := n.scores.Load(); m != nil {
		for _, sc := range *m {
			if sc < scoreGraylist {
				st.Graylisted++
			}
		}
	}
	rs := n.repl.Recipes()
	st.BlocksRebuilt, st.BlocksFetched = rs.Rebuilt, rs.Fetched
	st.Pruned, st.PrunedBlocks, st.SnapshotsServed = n.m.pruned.Load(), n.m.prunedBlocks.Load(), n.m.snapshotsServed.Load()
	if rs.Mismatch+rs.Malformed > 0 {
		if st.Rejected == nil {
			st.Rejected = map[string]int64{}
		}
		st.Rejected["block_recipe"] = rs.Mismatch + rs.Malformed
	}
	if failed, dropped := n.repl.HeadFetches(); failed+dropped > 0 {
		if st.Dropped == nil {
			st.Dropped = map[string]int64{}
		}
		st.Dropped["head_fetch_failed"], st.Dropped["head_fetch_dropped"] = failed, dropped
	}
	err := n.do(ctx, func() {
		for o, seq := range n.core.Delivered() {
			st.Clock = st.Clock.Set(n.originName(o), seq)
		}
		st.Buffered = n.core.Len()
		st.Origins, st.Forgotten = n.core.Origins(), n.m.forgotten.Load()
		st.Unjournaled = len(n.fresh.sigs)
		st.Evicted = n.core.Evicted()
		gaps, causes := n.core.Missing()
		for _, g := range gaps {
			st.Missing = append(st.Missing, vclock.Gap{Origin: n.originName(g.Origin), From: g.From, To: g.To})
		}
		st.MissingCauses = causes
	})
	if err != nil {
		return st, err
	}
	st.Heads = n.repl.Heads(ctx)
	return st, nil
}

// Arrived counts the journal entries this node has seen arrive, local and
// remote, since it started (Status.Journaled): an atomic read, cheap to
// poll, and a lower bound on the journal's size (JournalDigest counts it).
func (n *Node) Arrived() int64 { return n.m.journaled.Load() }

// Get returns a signal by id (journal.ErrNotFound if absent): from the
// journal, or, for a signal this node delivered whose journal entry has not
// landed yet, from the delivered signals. When several sources used the id,
// the first in replay order.
func (n *Node) Get(ctx context.Context, id string) (*signalmesh.Signal, error) {
	s, err := n.jr.Get(ctx, id)
	if !errors.Is(err, journal.ErrNotFound) {
		return s, err
	}
	var fresh []*signalmesh.Signal
	if derr := n.do(ctx, func() { fresh = n.fresh.readable(id) }); derr != nil || len(fresh) == 0 {
		if s, err2 := n.jr.Get(ctx, id); err2 == nil { // it landed meanwhile
			return s, nil
		}
		return nil, err
	}
	journal.Order(fresh)
	return fresh[0], nil
}

// readable is the journal (in replay order, each identity once) with the
// signals this node delivered that are not journaled yet.
func (n *Node) readable(ctx context.Context) ([]*signalmesh.Signal, error) {
	var fresh []*signalmesh.Signal
	if err := n.do(ctx, func() { fresh = n.fresh.readable("") }); err != nil {
		return nil, err
	}
	all, _, err := n.jr.All(ctx)
	if err != nil {
		return nil, err
	}
	places := make(map[causal.Ref]bool, len(all))
	for _, s := range all {
		r, q := journal.Place(s)
		places[causal.Ref{Origin: r, Seq: q}] = true
	}
	for _, s := range fresh {
		if r, q := journal.Place(s); !places[causal.Ref{Origin: r, Seq: q}] {
			all = append(all, s)
		}
	}
	journal.Order(all)
	return journal.Unique(all), nil
}

// Replay yields every journaled signal whose type matches pattern, in the
// journal's causal replay order, which is the same on every replica that
// holds the same signals. Where it passed over signals past
// Config.Retention it yields a *TruncatedError (and no signal) first, and
// goes on: a caller that stops at it stops where history was cut. It reads the journal as it goes (one signal per
// origin at a time): its memory follows the number of origins, not the
// journal's length.
func (n *Node) Replay(ctx context.Context, pattern string) iter.Seq2[*signalmesh.Signal, error] {
	return func(yield func(*signalmesh.Signal, error) bool) {
		for st, err := range n.ReplayAfter(ctx, pattern, nil) {
			if st.Truncated > 0 && !yield(nil, &TruncatedError{Left: st.Truncated}) {
				return
			}
			if (st.Signal != nil || err != nil) && !yield(st.Signal, err) {
				return
			}
		}
	}
}

// ReplayStep is one signal of ReplayAfter and how far the replay went.
type ReplayStep struct {
	// Signal is the next signal; nil on a last step that only reports
	// Truncated.
	Signal *signalmesh.Signal
	// Truncated counts the signals matching the pattern that the replay
	// passed over since the previous step because they are past
	// Config.Retention: they left the journal's view.
	Truncated int
	cursor    journal.Cursor // the replay's own, live
}

// Cursor returns (a copy of) the cursor just past the step's signal: a
// later ReplayAfter from it goes on with the next signal. Called after the
// replay went on, it is the cursor where the replay is now: of the last
// step, once the replay ended, where it ended (past every signal).
func (s ReplayStep) Cursor() journal.Cursor { return maps.Clone(s.cursor) }

// ReplayAfter is Replay from a cursor (nil: from the start), each signal
// with the cursor just past it, for a replay in pages (the daemon's
// /v1/replay with cursor and limit). Signals journaled since the cursor
// was taken that sort before it (late ones, of another origin) are not
// replayed from it.
func (n *Node) ReplayAfter(ctx context.Context, pattern string, after journal.Cursor) iter.Seq2[ReplayStep, error] {
	return func(yield func(ReplayStep, error) bool) {
		if err := router.Validate(pattern); err != nil {
			yield(ReplayStep{}, err)
			return
		}
		stopped := false
		match := func(s *signalmesh.Signal) bool { return router.Matches(pattern, s.Type) }
		err := n.jr.Stream(ctx, n.tops.all(), after, journal.StreamOptions{Match: match}, func(st journal.StreamStep) bool {
			stopped = !yield(ReplayStep{Signal: st.Signal, Truncated: st.Truncated, cursor: st.Cursor}, nil)
			return !stopped
		})
		if err != nil && !stopped {
			yield(ReplayStep{}, err)
		}
	}
}

// Causes returns the chain of causes of a signal, root cause first, ending
// with the signal itself. Like Get, it sees the signals this node delivered
// before their journal entries land.
func (n *Node) Causes(ctx context.Context, id string) ([]*signalmesh.Signal, error) {
	return journal.CausesVia(ctx, n.Get, id)
}

// Effects returns the signals directly caused by id, in replay order. Like
// Get, it sees the signals this node delivered before their journal
// entries land. It reads them through the journal's effects index: its
// cost follows the effects, not the journal (but with count or byte rules
// in Config.Retention, which it applies, it reads the whole journal).
func (n *Node) Effects(ctx context.Context, id string) ([]*signalmesh.Signal, error) {
	if !n.cfg.Retention.Counts() {
		by, err := n.effectsOf(ctx, []string{id})
		if err != nil {
			return nil, err
		}
		return by[id], nil
	}
	all, err := n.readable(ctx)
	if err != nil {
		return nil, err
	}
	var out []*signalmesh.Signal
	for _, s := range all {
		if s.CauseID() == id {
			out = append(out, s)
		}
	}
	return out, nil
}

// Trace returns the cause→effect tree around a signal: its causes back to
// the root (root first, ending with the signal) and all its descendants,
// in replay order. It walks the descendants breadth first, a level at a
// time, through the journal's effects index, as Effects: its cost follows
// the tree, not the journal (but see Effects for count or byte retention
// rules).
func (n *Node) Trace(ctx context.Context, id string) (causes, effects []*signalmesh.Signal, err error) {
	if causes, err = n.Causes(ctx, id); err != nil {
		return nil, nil, err
	}
	if !n.cfg.Retention.Counts() {
		if effects, err = journal.DescendantsVia(ctx, n.effectsOf, id); err != nil {
			return nil, nil, err
		}
		return causes, effects, nil
	}
	all, err := n.readable(ctx)
	if err != nil {
		return nil, nil, err
	}
	return causes, journal.Descendants(all, id), nil
}

// JournalDigest returns the number of journal entries and a digest of their
// keys (which name the signals' ids), read without decoding a signal: two
// replicas with the same journal have the same digest.
func (n *Node) JournalDigest(ctx context.Context) (int, string, error) {
	return n.jr.KeyDigest(ctx)
}

// originName is the peer id of the origin with this ref, or the ref when
// no signal of it arrived yet. Only the loop calls it.
func (n *Node) originName(ref string) string {
	if id := n.origins[ref]; id != "" {
		return id
	}
	return ref
}

// TruncatedError is what Replay yields where it passed over signals that
// left the journal's view (Config.Retention): Left of them matched its
// pattern. The replay goes on after it.
type TruncatedError struct{ Left int }

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("node: %d signals before this point are past retention", e.Left)
}
