package node

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/signalmesh/signalmesh/causal"
)

// A signal the core released without something it waited for (its cause
// after CauseWait, a dependency or its origin's previous signals after
// DepWait) is recorded here, so that the replay of the journal at the next
// start does not wait for the same things again (causal.Core.Decide): a
// node restarted after such give-ups would otherwise hold its whole
// catch-up for CauseWait or DepWait, once per give-up behind one another.

func (n *Node) decidedPrefix() string { return "/signalmesh/" + n.cfg.Mesh + "/decided/" }

func (n *Node) decidedKey(r causal.Ref) ds.Key {
	return ds.RawKey(fmt.Sprintf("%s%s/%016x", n.decidedPrefix(), r.Origin, r.Seq))
}

// saveDecision records d for r. No sync: a decision lost in a crash is
// only a wait repeated.
func (n *Node) saveDecision(r causal.Ref, d causal.Decision) {
	v := []byte{0}
	if d.Cause {
		v[0] |= 1
	}
	if d.Deps {
		v[0] |= 2
	}
	v = binary.AppendUvarint(v, d.GapFrom)
	if err := n.store.Put(context.WithoutCancel(n.ctx), n.decidedKey(r), v); err != nil {
		n.log.Error("node: record a give-up", "ref", r.String(), "err", err)
	}
}

// readDecisions hands the recorded decisions to the core; an entry that
// does not parse is skipped (it only costs a wait). The records of those
// the core does not keep (about signals delivered before, or below the
// floor of an origin that left) are deleted: they decide nothing.
func (n *Node) readDecisions(ctx context.Context) error {
	res, err := n.store.Query(ctx, query.Query{Prefix: n.decidedPrefix()})
	if err != nil {
		return err
	}
	var moot []ds.Key
	for e := range res.Next() {
		if e.Error != nil {
			res.Close()
			return e.Error
		}
		r, d, ok := parseDecision(strings.TrimPrefix(e.Key, n.decidedPrefix()), e.Value)
		if !ok {
			n.m.reject("decision_entry")
			continue
		}
		if !n.core.Decide(r, d) {
			moot = append(moot, ds.RawKey(e.Key))
		}
	}
	if err := res.Close(); err != nil {
		return err
	}
	return n.deleteKeys(ctx, moot)
}

func parseDecision(key string, v []byte) (causal.Ref, causal.Decision, bool) {
	origin, hexSeq, ok := strings.Cut(key, "/")
	seq, err := strconv.ParseUint(hexSeq, 16, 64)
	if !ok || err != nil || seq == 0 || len(origin) != causal.RefLen || len(v) < 2 {
		return causal.Ref{}, causal.Decision{}, false
	}
	from, k := binary.Uvarint(v[1:])
	if k <= 0 || k != len(v)-1 || from >= seq {
		return causal.Ref{}, causal.Decision{}, false
	}
	return causal.Ref{Origin: origin, Seq: seq}, causal.Decision{Cause: v[0]&1 != 0, Deps: v[0]&2 != 0, GapFrom: from}, true
}
