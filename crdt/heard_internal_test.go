package crdt

import (
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-ds-crdt/pb"
	"google.golang.org/protobuf/proto"
)

func headsMsg(t *testing.T, cs ...cid.Cid) []byte {
	t.Helper()
	var b pb.CRDTBroadcast
	for _, c := range cs {
		b.Heads = append(b.Heads, &pb.Head{Cid: c.Bytes()})
	}
	data, err := proto.Marshal(&b)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// A join announcement is left out only when every head was announced
// after the joins: heads announced before, or only some of them, do not
// silence it.
func TestHeardSilencesOnlyHeadsAnnouncedSince(t *testing.T) {
	a, b := block(t, &pb.Delta{Priority: 1}).Cid(), block(t, &pb.Delta{Priority: 2}).Cid()
	h := newHeard()
	h.note(headsMsg(t, a))
	since := time.Now()
	h.at[a] = since.Add(-time.Second) // announced a second before the joins
	if h.all([]cid.Cid{a}, since) {
		t.Fatal("a head announced before the joins silenced the announcement")
	}
	h.note(headsMsg(t, a))
	if !h.all([]cid.Cid{a}, since) {
		t.Fatal("a head announced after the joins did not")
	}
	if h.all([]cid.Cid{a, b}, since) {
		t.Fatal("a head nobody announced was silenced")
	}
	if h.all(nil, since) {
		t.Fatal("no heads: nothing to announce, but nothing silenced either")
	}
	h.note([]byte{0xff, 0xff}) // not an announcement: ignored
}
