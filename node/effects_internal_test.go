package node

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
)

// places names signals by id and place, in their order.
func places(sigs []*signalmesh.Signal) []string {
	out := make([]string, len(sigs))
	for i, s := range sigs {
		ref, seq := journal.Place(s)
		out[i] = fmt.Sprintf("%s@%s:%d", s.Type, ref, seq)
	}
	return out
}

// checkEffects compares Effects and Trace with what they answered before
// the effects index (a filter of readable, Descendants over it) for the
// ids, and returns Effects and Trace of the first.
func checkEffects(t *testing.T, n *Node, ids ...string) (effects, tree []string) {
	t.Helper()
	ctx := context.Background()
	all, err := n.readable(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		var want []*signalmesh.Signal
		for _, s := range all {
			if s.CauseID() == id {
				want = append(want, s)
			}
		}
		got, err := n.Effects(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := places(got), places(want); !slices.Equal(g, w) {
			t.Fatalf("Effects = %v, want %v", g, w)
		}
		_, desc, err := n.Trace(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := places(desc), places(journal.Descendants(all, id)); !slices.Equal(g, w) {
			t.Fatalf("Trace = %v, want %v", g, w)
		}
		if i == 0 {
			effects, tree = places(got), places(desc)
		}
	}
	return effects, tree
}

// types lists the types of what places names.
func types(ps []string) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i], _, _ = strings.Cut(p, "@")
	}
	slices.Sort(out)
	return out
}

// tree publishes a root, a chain of three below it and a fan-out of three
// beside the chain, in two batches, and returns the root.
func publishTree(t *testing.T, n *Node, prefix string, root *signalmesh.Signal) *signalmesh.Signal {
	t.Helper()
	ctx := context.Background()
	mk := func(typ string, cause *signalmesh.Signal) *signalmesh.Signal {
		var opts []signalmesh.Option
		if cause != nil {
			opts = append(opts, signalmesh.WithCause(cause))
		}
		s, err := signalmesh.New(prefix+typ, "/test", nil, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if root == nil {
		root = mk("root", nil)
		if err := n.Publish(ctx, root); err != nil {
			t.Fatal(err)
		}
	}
	a := mk("chain1", root)
	b := mk("chain2", a)
	c := mk("chain3", b)
	if err := n.Publish(ctx, a, b, c); err != nil {
		t.Fatal(err)
	}
	if err := n.Publish(ctx, mk("fan1", root), mk("fan2", root), mk("fan3", root)); err != nil {
		t.Fatal(err)
	}
	return root
}

func awaitRead(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Effects and Trace, read through the effects index, answer what they
// answered when they filtered the whole journal: for a chain and a
// fan-out journaled, and, after a reopen with the journal held back, for
// more of both delivered and not journaled yet, below a journaled cause
// and below an unjournaled one.
func TestEffectsAndTraceAsBefore(t *testing.T) {
	ctx := context.Background()
	store := dssync.MutexWrap(ds.NewMapDatastore())
	cfg := Config{Mesh: "effects", Datastore: store, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.DiscardHandler)}
	n, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	root := publishTree(t, n, "j.", nil)
	awaitRead(t, "the journal holds the tree", func() bool { c, _, err := n.JournalDigest(ctx); return err == nil && c == 7 })
	effects, tree := checkEffects(t, n, root.ID)
	if want := []string{"j.chain1", "j.fan1", "j.fan2", "j.fan3"}; !slices.Equal(types(effects), want) {
		t.Fatalf("Effects(root) = %v, want %v", effects, want)
	}
	if len(tree) != 6 {
		t.Fatalf("Trace(root) = %v, want 6 descendants", tree)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	cfg.Params.JournalDelay = time.Hour // nothing more reaches the journal while the test reads
	cfg.Params.JournalBatch = 1 << 20
	if n, err = New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	publishTree(t, n, "f.", root)
	awaitRead(t, "the node delivered the new tree", func() bool {
		es, err := n.Effects(ctx, root.ID)
		return err == nil && len(es) == 8
	})
	if c, _, _ := n.JournalDigest(ctx); c != 7 {
		t.Fatalf("the journal holds %d signals, want the first 7 only", c)
	}
	effects, tree = checkEffects(t, n, root.ID)
	if len(effects) != 8 || len(tree) != 12 {
		t.Fatalf("Effects(root) = %v, Trace(root) = %v: want 8 and 12", effects, tree)
	}
	// The chain below an unjournaled cause, and a journaled leaf.
	all, err := n.readable(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range all {
		ids = append(ids, s.ID)
	}
	checkEffects(t, n, ids...)
}

// countingStore counts the journal's signal entries read from a node's
// store (by Get or Query: go-ds-crdt keeps them under its namespace, k/).
type countingStore struct {
	ds.Batching
	prefix string
	reads  atomic.Int64
}

func (c *countingStore) signal(k string) bool {
	return strings.HasPrefix(k, c.prefix) && strings.Contains(k[len(c.prefix):], "/k/s/")
}

func (c *countingStore) Get(ctx context.Context, k ds.Key) ([]byte, error) {
	if c.signal(k.String()) {
		c.reads.Add(1)
	}
	return c.Batching.Get(ctx, k)
}

func (c *countingStore) Query(ctx context.Context, q query.Query) (query.Results, error) {
	res, err := c.Batching.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	return query.ResultsFromIterator(q, query.Iterator{
		Next: func() (query.Result, bool) {
			r, ok := res.NextSync()
			if ok && r.Error == nil && c.signal(r.Key) {
				c.reads.Add(1)
			}
			return r, ok
		},
		Close: res.Close,
	}), nil
}

// Effects and Trace read the signals of their result, not the journal:
// with 2,000 other signals journaled, a tree of 6 costs tens of reads
// (before the effects index, every call read every signal).
func TestEffectsReadNotTheWholeJournal(t *testing.T) {
	ctx := context.Background()
	const mesh = "effects-reads"
	counter := &countingStore{prefix: "/mesh/" + mesh + "/journal/"}
	testWrapStore = func(s ds.Batching) ds.Batching { counter.Batching = s; return counter }
	defer func() { testWrapStore = nil }()
	n, err := New(ctx, Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	const others = 2000
	for i := 0; i < others; i += 500 {
		batch := make([]*signalmesh.Signal, 500)
		for k := range batch {
			if batch[k], err = signalmesh.New("other", "/test", nil, signalmesh.WithCauseID(fmt.Sprint("elsewhere-", (i+k)%20))); err != nil {
				t.Fatal(err)
			}
		}
		if err := n.Publish(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	root := publishTree(t, n, "t.", nil)
	awaitRead(t, "the journal holds everything", func() bool {
		c, _, err := n.JournalDigest(ctx)
		return err == nil && c == others+7
	})
	if all, err := n.readable(ctx); err != nil || len(all) != others+7 {
		t.Fatalf("readable: %d signals, %v", len(all), err)
	}
	if counter.reads.Load() < others {
		t.Fatalf("reading the whole journal counted %d reads: the counter misses the journal's entries", counter.reads.Load())
	}
	counter.reads.Store(0)
	effects, err := n.Effects(ctx, root.ID)
	if err != nil || len(effects) != 4 {
		t.Fatalf("Effects = %d, %v; want 4", len(effects), err)
	}
	if r := counter.reads.Load(); r > 50 {
		t.Fatalf("Effects of 4 read %d journal entries of %d", r, others+7)
	}
	counter.reads.Store(0)
	if _, tree, err := n.Trace(ctx, root.ID); err != nil || len(tree) != 6 {
		t.Fatalf("Trace = %d, %v; want 6", len(tree), err)
	}
	if r := counter.reads.Load(); r > 100 {
		t.Fatalf("Trace of 6 read %d journal entries of %d", r, others+7)
	}
}

// A store whose index has no effects entries (written before them: here
// they and the version mark are deleted) gets them at the next start,
// after a clean stop by one pass over the journal, after a crash by the
// start's pulls; Effects and Trace then find the whole tree.
func TestIndexEffectsOfAnOldStore(t *testing.T) {
	ctx := context.Background()
	store := dssync.MutexWrap(ds.NewMapDatastore())
	const mesh = "effects-old"
	cfg := Config{Mesh: mesh, Datastore: store, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: slog.New(slog.DiscardHandler)}
	n, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	root := publishTree(t, n, "o.", nil)
	awaitRead(t, "the journal holds the tree", func() bool { c, _, err := n.JournalDigest(ctx); return err == nil && c == 7 })
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	effectKeys := func() int {
		res, err := store.Query(ctx, query.Query{Prefix: "/signalmesh/" + mesh + "/index/e", KeysOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		all, err := res.Rest()
		if err != nil {
			t.Fatal(err)
		}
		return len(all)
	}
	makeOld := func(crashed bool) {
		t.Helper()
		res, err := store.Query(ctx, query.Query{Prefix: "/signalmesh/" + mesh + "/index/e", KeysOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		all, err := res.Rest()
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 6 {
			t.Fatalf("the index holds %d effects entries, want 6", len(all))
		}
		keys := []string{"/signalmesh/" + mesh + "/index-version"}
		if crashed {
			keys = append(keys, "/signalmesh/"+mesh+"/index-complete")
		}
		for _, e := range all {
			keys = append(keys, e.Key)
		}
		for _, k := range keys {
			if err := store.Delete(ctx, ds.NewKey(k)); err != nil {
				t.Fatal(err)
			}
		}
		if effectKeys() != 0 {
			t.Fatal("effects entries left")
		}
	}
	for _, crashed := range []bool{false, true} {
		makeOld(crashed)
		if n, err = New(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		if got := effectKeys(); got != 6 {
			t.Fatalf("crashed %v: the start wrote %d effects entries, want 6", crashed, got)
		}
		if v, err := store.Get(ctx, ds.NewKey("/signalmesh/"+mesh+"/index-version")); err != nil || string(v) != indexVersion {
			t.Fatalf("crashed %v: index version %q, %v", crashed, v, err)
		}
		effects, tree := checkEffects(t, n, root.ID)
		if len(effects) != 4 || len(tree) != 6 {
			t.Fatalf("crashed %v: Effects(root) = %v, Trace(root) = %v: want 4 and 6", crashed, effects, tree)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// The fresh set's index by cause answers what a filter over readable("")
// answers, through adds (the ring coming round, entries added again),
// forgets, takes and the settled ring's evictions, and holds no cause
// that nothing names.
func TestFreshCausedIsAFilterOfReadable(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	f := newFreshSet(64, 0)
	f.settledRing = f.settledRing[:48] // evictions come sooner
	f.past = func(s *signalmesh.Signal) bool { return s.Type == "past" }
	causes := []string{"c0", "c1", "c2", "c3"}
	var sigs []*signalmesh.Signal
	at := func(i int) causal.Ref { return causal.Ref{Origin: fmt.Sprint("o", i%3), Seq: uint64(i)} }
	for step := range 5000 {
		switch k := r.IntN(10); {
		case k < 5 || len(sigs) == 0:
			typ := "fresh"
			if r.IntN(8) == 0 {
				typ = "past"
			}
			var opts []signalmesh.Option
			if c := r.IntN(len(causes) + 1); c < len(causes) {
				opts = append(opts, signalmesh.WithCauseID(causes[c]))
			}
			s, err := signalmesh.New(typ, "/t", nil, opts...)
			if err != nil {
				t.Fatal(err)
			}
			sigs = append(sigs, s)
			f.add(at(len(sigs)-1), s, time.Now())
		case k < 7:
			i := r.IntN(len(sigs))
			f.add(at(i), sigs[i], time.Now()) // added again (or again after it left)
		case k < 9:
			f.forget(at(r.IntN(len(sigs))))
		default:
			f.take(time.Time{}, "o0", r.IntN(5))
		}
		all := map[string]bool{}
		for _, c := range causes {
			all[c] = true
		}
		got := f.caused(all)
		for _, c := range causes {
			var want []string
			for _, s := range f.readable("") {
				if s.CauseID() == c {
					want = append(want, s.ID)
				}
			}
			var g []string
			for _, s := range got[c] {
				g = append(g, s.ID)
			}
			slices.Sort(g)
			slices.Sort(want)
			if !slices.Equal(g, want) {
				t.Fatalf("step %d: caused(%s) = %v, want %v", step, c, g, want)
			}
		}
		for c, refs := range f.byCause {
			for ref := range refs {
				_, inSigs := f.sigs[ref]
				_, inSettled := f.settled[ref]
				if !inSigs && !inSettled {
					t.Fatalf("step %d: %s indexed under %s, held by neither", step, ref, c)
				}
			}
		}
	}
}
