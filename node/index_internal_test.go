package node

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"testing"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/namespace"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// An index entry the put hook queued is found by id at once (the core
// asks whether a cause is journaled, Journal.Get reads it), before and
// after its batch is written, and once.
func TestQueuedIndexEntriesAreRead(t *testing.T) {
	store := ds.NewMapDatastore()
	n := &Node{ctx: context.Background(), log: slog.New(slog.DiscardHandler),
		store: store, indexPrefix: "/index", index: namespace.Wrap(store, ds.NewKey("/index"))}
	jr := journal.NewWithIndex(store, idxView{n})
	m := causal.Meta{Origin: causal.PeerRef("peer"), Stamp: causal.Stamp{Seq: 7}, Source: "/a", ID: "42", Digest: 9}
	n.indexLater(m)
	n.indexLater(causal.Meta{Origin: m.Origin, Stamp: causal.Stamp{Seq: 8}, Source: "/b", ID: "43", Digest: 1})
	want := []causal.Copy{{Ref: m.Ref(), Source: "/a", Digest: 9}}
	if got := jr.ByID("42"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("queued: ByID = %v, want %v", got, want)
	}
	n.flushIndex()
	if got := jr.ByID("42"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("written: ByID = %v, want %v", got, want)
	}
	if len(n.idxShown) != 0 || len(n.idxPending) != 0 {
		t.Fatalf("after the write %d ids still shown, %d queued", len(n.idxShown), len(n.idxPending))
	}
	if got := journal.NewWithIndex(store, n.index).ByID("43"); len(got) != 1 {
		t.Fatalf("the store's index holds %v for 43, want one entry", got)
	}
}

// Batches written at once (the put hooks' and the loop's flushIndex): an
// entry stays in the queued view until its own batch is committed, whether
// a later batch is committed first or not, and leaves it then, also when
// the same entry was queued again in between (one directory, one cause's
// effects, spread over both batches).
func TestQueuedIndexOverlappingBatches(t *testing.T) {
	store := &commitHookStore{Batching: ds.NewMapDatastore()}
	n := &Node{ctx: context.Background(), log: slog.New(slog.DiscardHandler),
		store: store, indexPrefix: "/index", index: namespace.Wrap(store, ds.NewKey("/index"))}
	jr := journal.NewWithIndex(store.Batching, idxView{n})
	ctx := context.Background()
	meta := func(seq uint64) causal.Meta {
		return causal.Meta{Origin: causal.PeerRef("peer"), Stamp: causal.Stamp{Seq: seq}, Source: "/a",
			ID: fmt.Sprint("id", seq), Cause: "c", Digest: seq}
	}
	effects := func(want int, when string) {
		t.Helper()
		got, err := jr.EffectPlaces(ctx, "c")
		if err != nil || len(got) != want {
			t.Fatalf("%s: %d effects of c (%v), want %d", when, len(got), err, want)
		}
		for seq := 1; seq <= want; seq++ {
			if cs := jr.ByID(fmt.Sprint("id", seq)); len(cs) != 1 {
				t.Fatalf("%s: id%d has %d copies, want 1", when, seq, len(cs))
			}
		}
	}
	for seq := range uint64(3) {
		n.indexLater(meta(seq + 1))
	}
	commits := 0
	store.onCommit = func() {
		if commits++; commits > 1 {
			return // the later batch's own commit
		}
		// While the first batch is written: two more, and the first
		// signal's entries again; a later batch is taken and written.
		n.indexLater(meta(4))
		n.indexLater(meta(5))
		n.indexLater(meta(1))
		effects(5, "first batch being written, second queued")
		n.flushIndex()
		effects(5, "first batch being written, second written")
	}
	n.flushIndex()
	if commits != 2 {
		t.Fatalf("%d batches committed, want 2", commits)
	}
	effects(5, "both written")
	if len(n.idxShown) != 0 || len(n.idxPending) != 0 {
		t.Fatalf("after both batches %d directories still shown (%v), %d queued", len(n.idxShown), n.idxShown, len(n.idxPending))
	}
}

// checkEntry's (or the gossip validator's) decoded signal is handed to the
// put hook only for the same key and value, once, and at most maxVetted
// are kept.
func TestVettedEntries(t *testing.T) {
	var v vetted
	s := &signalmesh.Signal{ID: "1"}
	v.put("/k", []byte("value"), s, nil)
	if _, _, ok := v.take("/k", []byte("other")); ok {
		t.Fatal("taken for another value")
	}
	v.put("/k", []byte("value"), s, nil)
	if got, m, ok := v.take("/k", []byte("value")); !ok || got != s || m != nil {
		t.Fatal("not taken for its key and value")
	}
	if _, _, ok := v.take("/k", []byte("value")); ok {
		t.Fatal("taken twice")
	}
	for i := range 3 * maxVetted {
		v.put(fmt.Sprint("/k", i), []byte("v"), s, nil)
		if i%2 == 1 { // taken: its place in the order must not cost a newer one
			v.take(fmt.Sprint("/k", i), []byte("v"))
		}
	}
	if len(v.m) > maxVetted || len(v.fifo)-v.head > 2*maxVetted+1 {
		t.Fatalf("%d kept (%d in the order), bound %d", len(v.m), len(v.fifo)-v.head, maxVetted)
	}
	v.put("/again", []byte("v"), s, nil)
	v.take("/again", []byte("v"))
	v.put("/again", []byte("v"), s, nil) // vetted again: the newest, whatever its old place
	for i := range maxVetted - 1 {
		v.put(fmt.Sprint("/n", i), []byte("v"), s, nil)
	}
	if _, _, ok := v.take("/again", []byte("v")); !ok {
		t.Fatal("an entry vetted again was evicted before older ones")
	}
	if _, _, ok := v.take(fmt.Sprint("/k", 3*maxVetted-2), []byte("v")); ok {
		t.Fatal("the oldest were kept past the bound")
	}
	big := make([]byte, maxVettedValue)
	for i := range 2 * maxVettedBytes / maxVettedValue {
		v.put(fmt.Sprint("/big", i), big, s, nil)
	}
	if v.bytes > maxVettedBytes {
		t.Fatalf("%d bytes kept, bound %d", v.bytes, maxVettedBytes)
	}
	v.put("/huge", make([]byte, maxVettedValue+1), s, nil)
	if _, _, ok := v.take("/huge", make([]byte, maxVettedValue+1)); ok {
		t.Fatal("a value over maxVettedValue was kept")
	}
	// What the gossip validator read: checkEntry finds the same bytes (and
	// not others) and leaves them; the put hook takes the signal and meta.
	m := &causal.Meta{Origin: causal.PeerRef("p"), Stamp: causal.Stamp{Seq: 3}, ID: "1"}
	v.put("/gossip", []byte("wire"), s, m)
	if v.has("/gossip", []byte("other")) || !v.has("/gossip", []byte("wire")) || !v.has("/gossip", []byte("wire")) {
		t.Fatal("has: wrong answer for the same or other bytes, or it forgot the entry")
	}
	if got, gm, ok := v.take("/gossip", []byte("wire")); !ok || got != s || gm != m {
		t.Fatalf("take after has: %v %v %v", got, gm, ok)
	}
}

// TestVettedHoldsConcurrentDeltas: go-ds-crdt's workers (5) each vet a
// whole delta (1 MiB: 5,242 entries of 200 bytes) before they merge it.
// Every entry vetted so must still be there for the put hook, or it is
// decoded and verified a second time (with 4,096 entries kept, most of a
// heal's were).
func TestVettedHoldsConcurrentDeltas(t *testing.T) {
	const workers, delta, size = 5, 1 << 20, 200
	per := delta / size
	var v vetted
	s := &signalmesh.Signal{ID: "1"}
	value := make([]byte, size)
	for i := range per { // the workers vet their deltas side by side
		for w := range workers {
			v.put(fmt.Sprintf("/w%d/%d", w, i), value, s, nil)
		}
	}
	missed := 0
	for w := range workers {
		for i := range per {
			if _, _, ok := v.take(fmt.Sprintf("/w%d/%d", w, i), value); !ok {
				missed++
			}
		}
	}
	if missed > 0 {
		t.Fatalf("%d of %d vetted entries gone before their merge", missed, workers*per)
	}
}

// TestVettedMemoryWithinItsBound: what the vetted entries keep in memory
// stays near maxVettedBytes whatever the entries' shapes. A peer (any
// member can sign its own signals) sends deltas of valid entries that are
// refused for a last bad one, so every entry stays until evicted; counted
// as its value's length and 512 bytes, signals of 32 extensions kept 4.2
// KiB each (137 MB at 32,768 entries, against a bound of 32 MiB), and
// values of 16 KiB twice their length (the decoded signal's copy).
func TestVettedMemoryWithinItsBound(t *testing.T) {
	peerID := "12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGhIjKlMn"
	for _, c := range []struct {
		name            string
		exts, data, dep int
	}{
		{"typical", 1, 150, 2},
		{"32 extensions", 30, 0, 0},
		{"16 KiB", 30, 16000, 0},
		{"48 dependencies", 0, 0, 48},
	} {
		t.Run(c.name, func(t *testing.T) {
			entry := func(i int) (string, []byte, *signalmesh.Signal, *causal.Meta) {
				st := causal.Stamp{Seq: uint64(i + 1), Lamport: uint64(i + 1)}
				for d := range c.dep {
					st.Deps = append(st.Deps, causal.Ref{Origin: causal.PeerRef(fmt.Sprint("dep", d)), Seq: uint64(i + 1)})
				}
				opts := []signalmesh.Option{signalmesh.WithExtension(signalmesh.ExtPeer, peerID),
					signalmesh.WithExtension(signalmesh.ExtCausal, st.Format())}
				for e := range c.exts {
					opts = append(opts, signalmesh.WithExtension(fmt.Sprint("x", e), "v"))
				}
				s, err := signalmesh.New("t", "/s", make([]byte, c.data), opts...)
				if err != nil {
					t.Fatal(err)
				}
				w, err := s.MarshalBinary()
				if err != nil {
					t.Fatal(err)
				}
				if s, err = signalmesh.DecodeBinary(w, signalmesh.Limits{}); err != nil {
					t.Fatal(err)
				}
				m, err := journal.MetaOf(s)
				if err != nil {
					t.Fatal(err)
				}
				return journal.SignalKey(m.Origin, m.Seq).String(), w, s, &m
			}
			_, w, _, _ := entry(0)
			if len(w) > maxVettedValue {
				t.Fatalf("a value of %d bytes is not kept", len(w))
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var v vetted
			for i := range min(2*maxVetted, 3*maxVettedBytes/len(w)) {
				k, w, s, m := entry(i)
				v.put(k, w, s, m) // the gossip validator's entries: with their meta
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			kept := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("values of %d bytes: %d entries kept, %d bytes (%d each)", len(w), len(v.m), kept, kept/int64(len(v.m)))
			if bound := int64(maxVettedBytes + maxVettedBytes/8); kept > bound {
				t.Errorf("%d entries of %d bytes keep %d MiB, bound %d MiB", len(v.m), len(w), kept>>20, maxVettedBytes>>20)
			}
			runtime.KeepAlive(&v)
		})
	}
}

// commitHookStore runs onCommit when a batch of it is committed, before
// the batch is written.
type commitHookStore struct {
	ds.Batching
	onCommit func()
}

func (s *commitHookStore) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := s.Batching.Batch(ctx)
	return hookBatch{b, s}, err
}

type hookBatch struct {
	ds.Batch
	s *commitHookStore
}

func (b hookBatch) Commit(ctx context.Context) error {
	if f := b.s.onCommit; f != nil {
		f()
	}
	return b.Batch.Commit(ctx)
}
