package journal_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/journal"
)

// Review of dbef812: a MemIndex holds what IndexEntries would write (an
// id, a cause, a place, a digest and a source: a few hundred bytes), not
// the signals it indexes. A node adds the Meta of a signal decoded from its
// journal entry (putHook: DecodeBinary, then MetaOf), whose ID and Cause
// are substrings of the decoded signal's text (wire.go: wireReader.str);
// kept as map keys, they keep that text, for the life of the node. Here
// 200 signals without data, each with 32 KiB of extensions, are decoded
// from their wire form, added, and dropped; then each again, at another
// place (a map assignment to an existing string key stores the new key).
func TestReviewMemIndexDoesNotRetainDecodedSignals(t *testing.T) {
	const n, exts = 200, 16
	big := strings.Repeat("v", 2000)
	wires := make([][]byte, n)
	for i := range wires {
		opts := []signalmesh.Option{signalmesh.WithID(fmt.Sprint("id-", i)), signalmesh.WithCauseID(fmt.Sprint("cause-", i)),
			signalmesh.WithExtension(signalmesh.ExtPeer, "12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz"),
			signalmesh.WithExtension(signalmesh.ExtCausal, fmt.Sprintf("%d/%d/", i+1, i+1))}
		for k := range exts {
			opts = append(opts, signalmesh.WithExtension(fmt.Sprintf("xext%02d", k), big))
		}
		s, err := signalmesh.New("order.noted", "/shop/eu-1", nil, opts...)
		if err != nil {
			t.Fatal(err)
		}
		if wires[i], err = s.MarshalBinary(); err != nil {
			t.Fatal(err)
		}
	}
	mem := journal.NewMemIndex()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for pass := range 2 { // the second adds each id and cause again, at another place
		for _, w := range wires {
			s, err := signalmesh.DecodeBinary(w, signalmesh.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			m, err := journal.MetaOf(s)
			if err != nil {
				t.Fatal(err)
			}
			m.Seq += uint64(pass * n)
			mem.Add(m)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n // per id
	runtime.KeepAlive(mem)
	runtime.KeepAlive(wires)
	if mem.Len() != 2*n {
		t.Fatalf("Len = %d, want %d", mem.Len(), 2*n)
	}
	t.Logf("the index grew by %d bytes per signal of %d bytes", per, len(wires[0]))
	if per > 2048 {
		t.Fatalf("the index holds %d bytes per signal indexed (a signal is %d bytes): it keeps the decoded signals' text", per, len(wires[0]))
	}
}
