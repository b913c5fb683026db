package crdt

import (
	"context"

	"fmt"
	mdtest "github.com/ipfs/boxo/ipld/merkledag/test"
	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pubsub_pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-ds-crdt/pb"
)

// A hostile recipe naming the same held keys again and again (256 runs of
// the same 256 keys: 65,536 entries, within maxRecipeKeys) must not make
// the receiver build a block 256 times the size of what it holds (with 1
// KiB values 64 MiB per announced head, with the 16 KiB values node's
// vetted cache keeps 1 GiB): an honest delta is at most about
// MaxBatchDeltaSize (1 MiB), and the build gives up past maxRecipeBlock.
func TestHostileRecipeBuildIsBounded(t *testing.T) {
	const keys, val = 256, 1 << 10
	values := map[string][]byte{}
	for i := range uint64(keys) {
		values[string(appendHexKey(nil, "/s/x/", i))] = make([]byte, val)
	}
	r := &recipe{prio: 1}
	for range maxRecipeRuns {
		r.runs = append(r.runs, keyRun{"/s/x/", 0, keys})
	}
	if r.keys() != maxRecipeKeys {
		t.Fatalf("keys %d", r.keys())
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	start := time.Now()
	nd, ok, err := r.build(func(k string) []byte { return values[k] })
	if nd != nil {
		_ = nd.Cid() // as the prefetcher does: encode and hash
	}
	took := time.Since(start)
	runtime.ReadMemStats(&m1)
	built := 0
	if nd != nil {
		built = len(nd.Data())
	}
	alloc := m1.TotalAlloc - m0.TotalAlloc
	t.Logf("ok %v err %v: block data %d bytes, allocated %d MiB and took %v to build and hash it", ok, err, built, alloc>>20, took)
	if alloc > 8<<20 {
		t.Fatalf("a recipe of %d repeated keys from %d KiB held cost %d MiB to build (block of %d bytes); want a bound near MaxBatchDeltaSize",
			r.keys(), keys*val>>10, alloc>>20, built)
	}
}

// The writer writes no recipe that readers refuse as malformed (a key
// prefix over the maxRecipePrefix bytes parseRun takes): honest
// announcements would be counted as Rejected["block_recipe"] on every
// receiver.
func TestWriterAndReaderAgreeOnPrefix(t *testing.T) {
	prefix := "/s/" + strings.Repeat("p", 1100) + "/"
	d := &pb.Delta{Priority: 1}
	for i := range uint64(3) {
		d.Elements = append(d.Elements, &pb.Element{Key: string(appendHexKey(nil, prefix, i)), Value: []byte(fmt.Sprint(i))})
	}
	nd := block(t, d)
	r, err := recipeOf(nd)
	if err != nil {
		return // not written: fine
	}
	if _, err := recipesIn(appendHead(nil, r.c, r.encode())); err != nil {
		t.Fatalf("recipeOf wrote a recipe (prefix %d bytes) that recipesIn refuses: %v", len(prefix), err)
	}
}

// A recipe of 65,536 keys whose first value is missing costs the receiver
// no allocation in proportion to its keys.
func TestRecipeMissingFirstValueIsCheap(t *testing.T) {
	r := &recipe{prio: 1, runs: []keyRun{{"/s/x/", 0, maxRecipeKeys}}}
	allocs := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			r.build(func(string) []byte { return nil })
		}
	})
	t.Logf("%s", allocs.MemString())
	if allocs.AllocedBytesPerOp() > 64<<10 {
		t.Fatalf("a recipe that fails at its first key allocated %d bytes", allocs.AllocedBytesPerOp())
	}
}

// the first announcement of a head carries its recipe, a
// re-announcement (rebroadcast, Announce) does not; a head not local gets
// none; the guard's validator still accepts the announcement.
func TestRecipeOnlyOnFirstAnnouncement(t *testing.T) {
	ctx := context.Background()
	dserv := mdtest.Mock()
	nd := block(t, &pb.Delta{Priority: 1, Elements: []*pb.Element{{Key: "/s/x/0000000000000001", Value: []byte("a")}}})
	if err := dserv.Add(ctx, nd); err != nil {
		t.Fatal(err)
	}
	w := newRecipeWriter(dserv, func(ctx context.Context, c cid.Cid) (bool, error) {
		_, err := dserv.Get(ctx, c)
		return err == nil, nil
	})
	other := block(t, &pb.Delta{Priority: 9, Elements: []*pb.Element{{Key: "/s/y/0000000000000001", Value: []byte("b")}}})
	msg, _ := proto.Marshal(&pb.CRDTBroadcast{Heads: []*pb.Head{{Cid: nd.Cid().Bytes()}, {Cid: other.Cid().Bytes()}}})
	first := w.attach(ctx, msg)
	rs, err := recipesIn(first)
	if err != nil || len(rs) != 1 || rs[nd.Cid()] == nil {
		t.Fatalf("first: %d recipes, %v", len(rs), err)
	}
	if again := w.attach(ctx, msg); len(again) != len(msg) {
		t.Fatalf("re-announcement carries %d more bytes", len(again)-len(msg))
	}
	g := &headsGuard{buckets: map[peer.ID]*bucket{}, now: time.Now}
	if res := g.validate(ctx, "", &pubsub.Message{Message: &pubsub_pb.Message{Data: first, From: []byte("x")}}); res != pubsub.ValidationAccept {
		t.Fatalf("guard: %v", res)
	}
}
