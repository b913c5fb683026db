package node

import (
	"bufio"
	"io"

	ds "github.com/ipfs/go-datastore"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// PeerRefOf is the causal origin ref of a peer (review tests).
func PeerRefOf(id peer.ID) string { return causal.PeerRef(id.String()) }

// ServeForgedSnapshot makes n serve snapshots as writeSnapshot does (its
// real journal entries and merged blocks, every entry genuine), with the
// reopen state passed through forge first: what a hostile member serves.
func ServeForgedSnapshot(n *Node, forge func(core *causal.State, tops map[string]uint64, seen []uint64)) {
	n.host.SetStreamHandler(n.snapshotProto(), func(s network.Stream) {
		defer s.Close()
		ctx := n.ctx
		var req [1]byte
		if _, err := io.ReadFull(s, req[:]); err != nil {
			_ = s.Reset()
			return
		}
		var blocks []string
		_ = n.repl.MergedBlocks(ctx, func(k string) error { blocks = append(blocks, k); return nil })
		var st reopenState
		if err := n.do(ctx, func() { st = reopenState{core: n.core.State(), tops: n.tops.all(), seen: n.seen.snapshot()} }); err != nil {
			_ = s.Reset()
			return
		}
		if st.core.Delivered == nil {
			st.core.Delivered = map[string]uint64{}
		}
		forge(&st.core, st.tops, st.seen)
		b, err := encodeState(st)
		if err != nil {
			_ = s.Reset()
			return
		}
		w := &snapWriter{w: bufio.NewWriter(s)}
		_ = w.header(b)
		_ = n.repl.Values(ctx, func(k string, v []byte, p uint64) error {
			if _, _, ok := journal.ParseSignalKey(ds.RawKey(k)); !ok {
				return nil
			}
			return w.value(k, p, v)
		})
		for _, k := range blocks {
			_ = w.block(k)
		}
		_ = w.end()
	})
}
