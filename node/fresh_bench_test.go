package node

import (
	"strconv"
	"testing"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
)

// BenchmarkFreshSettle: signals released from the journal kept for reads
// (settle), each evicting the one settled settledSize signals before.
func BenchmarkFreshSettle(b *testing.B) {
	const n = 1 << 16
	sigs := make([]*signalmesh.Signal, n)
	for i := range sigs {
		s, err := signalmesh.New("bench.settled", "/bench", nil,
			signalmesh.WithExtension(signalmesh.ExtPeer, "12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz"),
			signalmesh.WithExtension(signalmesh.ExtCausal, "AgNhYmMBA2RlZgI"))
		if err != nil {
			b.Fatal(err)
		}
		sigs[i] = s
	}
	origin := causal.PeerRef("12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz")
	refs := make([]causal.Ref, n)
	for i := range refs {
		refs[i] = causal.Ref{Origin: origin + strconv.Itoa(i%8), Seq: uint64(i + 1)}
	}
	f := newFreshSet(1024, 0)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i%n == 0 {
			f = newFreshSet(1024, 0)
		}
		f.settle(refs[i%n], sigs[i%n])
		i++
	}
}
