package crdt

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	dag "github.com/ipfs/boxo/ipld/merkledag"
	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-ds-crdt/pb"
	ipld "github.com/ipfs/go-ipld-format"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Block recipes. A replica that got a delta's entries by another path
// (a node's signals come by gossip first) has every byte of the delta's
// block but its layout. Without help it fetches the block over bitswap
// anyway: a want to every connected peer, then the block, on every
// receiver of every delta. So the first announcement of a head this
// replica wrote carries the head block's recipe: its priority, its links
// and the keys of its entries in order (as runs of consecutive keys:
// a journal batch is one origin's run of sequence numbers, so a recipe is
// a few dozen bytes whatever the block's size). A receiver that holds a
// value for every key (Params.Value) builds the block as go-ds-crdt built
// it and keeps it only if its CID is the announced one: a block is named
// by the hash of its bytes, so a recipe (or a value) that is wrong, stale
// or hostile builds another block, which is dropped, and the head is
// fetched as before. A receiver that lacks a value fetches it too.
//
// Recipes travel inside the announcement's heads, each in a field of its
// head that go-ds-crdt does not know (recipeField) and ignores: a replica
// that does not read recipes merges the announcement as before. (An
// unknown field of the announcement itself would not do: go-ds-crdt takes
// the announcement for a legacy bare CID then, and drops it.)
//
// Bounds: a recipe names at most maxRecipeKeys keys in maxRecipeRuns runs
// with prefixes of at most maxRecipePrefix bytes, and a block built from
// one is given up past maxRecipeBlock bytes (an honest block is at most
// about Params.MaxBatchDeltaSize): a hostile recipe that names held keys
// again and again costs a receiver no more than an honest one. An
// announcement carries at most maxRecipesBytes of recipes (GossipSub drops
// a message over 1 MiB).
const (
	recipeField     = 15      // field number of a recipe in a CRDTBroadcast's Head
	headsField      = 1       // CRDTBroadcast.Heads
	headCidField    = 1       // Head.Cid
	maxRecipeRuns   = 256     // runs in one recipe; more: no recipe
	maxRecipeLinks  = 64      // links of one block; more: no recipe
	maxRecipeKeys   = 1 << 16 // entries one recipe may name
	maxRecipePrefix = 1024    // bytes of a run's key prefix
	maxRecipeBlock  = 4 << 20 // bytes of keys and values a recipe may build
	maxRecipesBytes = 64 << 10
	recipesSent     = 1024 // heads remembered as announced with their recipe
)

// recipe is how to build one delta block from values held.
type recipe struct {
	c     cid.Cid
	prio  uint64
	links []cid.Cid
	runs  []keyRun
}

// keyRun is count keys prefix+%016x of first, first+1, ….
type keyRun struct {
	prefix string
	first  uint64
	count  uint64
}

var errNoRecipe = errors.New("crdt: block has no recipe")

// recipeOf reads the recipe of a block go-ds-crdt wrote: a delta with
// entries only, whose keys each end in 16 lower-case hexadecimal digits.
func recipeOf(nd ipld.Node) (*recipe, error) {
	pn, ok := nd.(*dag.ProtoNode)
	if want, got := dag.V1CidPrefix(), nd.Cid().Prefix(); !ok || got.Version != want.Version || got.Codec != want.Codec || got.MhType != want.MhType {
		return nil, errNoRecipe // not built as go-ds-crdt builds a block
	}
	var d pb.Delta
	if err := proto.Unmarshal(pn.Data(), &d); err != nil {
		return nil, errNoRecipe
	}
	if len(d.Tombstones) > 0 || len(d.Elements) == 0 || len(d.Elements) > maxRecipeKeys || len(pn.Links()) > maxRecipeLinks {
		return nil, errNoRecipe
	}
	r := &recipe{c: nd.Cid(), prio: d.Priority}
	for _, l := range pn.Links() {
		if l.Name != "" || l.Size != 0 {
			return nil, errNoRecipe
		}
		r.links = append(r.links, l.Cid)
	}
	for _, e := range d.Elements {
		if e.Id != "" {
			return nil, errNoRecipe
		}
		prefix, seq, ok := splitHexKey(e.Key)
		if !ok || len(prefix) > maxRecipePrefix {
			return nil, errNoRecipe
		}
		if n := len(r.runs); n > 0 {
			last := &r.runs[n-1]
			if last.prefix == prefix && last.first+last.count == seq {
				last.count++
				continue
			}
		}
		if len(r.runs) == maxRecipeRuns {
			return nil, errNoRecipe
		}
		r.runs = append(r.runs, keyRun{prefix, seq, 1})
	}
	return r, nil
}

// splitHexKey splits a key ending in 16 lower-case hexadecimal digits.
func splitHexKey(k string) (prefix string, v uint64, ok bool) {
	if len(k) < 16 {
		return "", 0, false
	}
	prefix = k[:len(k)-16]
	for i := len(k) - 16; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | uint64(c-'a'+10)
		default:
			return "", 0, false
		}
	}
	return prefix, v, true
}

func appendHexKey(b []byte, prefix string, v uint64) []byte {
	const digits = "0123456789abcdef"
	b = append(b, prefix...)
	for i := 60; i >= 0; i -= 4 {
		b = append(b, digits[v>>uint(i)&0xf])
	}
	return b
}

// keys is the number of keys the recipe names, or -1 past maxRecipeKeys.
func (r *recipe) keys() int {
	var n uint64
	for _, run := range r.runs {
		if run.count > maxRecipeKeys || n+run.count > maxRecipeKeys {
			return -1
		}
		n += run.count
	}
	return int(n)
}

// build builds the block from the values value holds; ok is false when
// one is missing. The caller compares the block's CID with r.c.
func (r *recipe) build(value func(key string) []byte) (nd *dag.ProtoNode, ok bool, err error) {
	if r.keys() <= 0 {
		return nil, false, errNoRecipe
	}
	d := &pb.Delta{Priority: r.prio}
	size := 0
	var kb []byte
	for _, run := range r.runs {
		for i := range run.count {
			kb = appendHexKey(kb[:0], run.prefix, run.first+i)
			v := value(string(kb))
			if v == nil {
				return nil, false, nil
			}
			if size += len(kb) + len(v); size > maxRecipeBlock {
				return nil, false, errRecipeSize
			}
			d.Elements = append(d.Elements, &pb.Element{Key: string(kb), Value: v})
		}
	}
	data, err := proto.Marshal(d)
	if err != nil {
		return nil, false, err
	}
	// As go-ds-crdt's makeNode builds a block.
	nd = dag.NodeWithData(data)
	for _, l := range r.links {
		if err := nd.AddRawLink("", &ipld.Link{Cid: l}); err != nil {
			return nil, false, err
		}
	}
	nd.SetCidBuilder(dag.V1CidPrefix())
	return nd, true, nil
}

var errRecipeSize = errors.New("crdt: recipe builds a block too large")

// Field numbers inside an encoded recipe.
const (
	rcCid   = 1
	rcPrio  = 2
	rcLink  = 3
	rcRun   = 4
	runPfx  = 1
	runFrom = 2
	runN    = 3
)

// encode is the recipe's wire form (the value of a Head's recipeField).
func (r *recipe) encode() []byte {
	var body []byte
	body = protowire.AppendTag(body, rcCid, protowire.BytesType)
	body = protowire.AppendBytes(body, r.c.Bytes())
	body = protowire.AppendTag(body, rcPrio, protowire.VarintType)
	body = protowire.AppendVarint(body, r.prio)
	for _, l := range r.links {
		body = protowire.AppendTag(body, rcLink, protowire.BytesType)
		body = protowire.AppendBytes(body, l.Bytes())
	}
	for _, run := range r.runs {
		var rb []byte
		rb = protowire.AppendTag(rb, runPfx, protowire.BytesType)
		rb = protowire.AppendString(rb, run.prefix)
		rb = protowire.AppendTag(rb, runFrom, protowire.VarintType)
		rb = protowire.AppendVarint(rb, run.first)
		rb = protowire.AppendTag(rb, runN, protowire.VarintType)
		rb = protowire.AppendVarint(rb, run.count)
		body = protowire.AppendTag(body, rcRun, protowire.BytesType)
		body = protowire.AppendBytes(body, rb)
	}
	return body
}

// appendHead appends a CRDTBroadcast Heads entry: c, with recipe (its
// encoded form) when not nil.
func appendHead(b []byte, c cid.Cid, recipe []byte) []byte {
	var h []byte
	h = protowire.AppendTag(h, headCidField, protowire.BytesType)
	h = protowire.AppendBytes(h, c.Bytes())
	if recipe != nil {
		h = protowire.AppendTag(h, recipeField, protowire.BytesType)
		h = protowire.AppendBytes(h, recipe)
	}
	b = protowire.AppendTag(b, headsField, protowire.BytesType)
	return protowire.AppendBytes(b, h)
}

var errRecipe = errors.New("crdt: malformed recipe")

// recipesIn reads the recipes an encoded CRDTBroadcast's heads carry. A
// malformed recipe is skipped (its head is fetched); the error says one
// was.
func recipesIn(data []byte) (map[cid.Cid]*recipe, error) {
	var out map[cid.Cid]*recipe
	var bad error
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return out, errRecipe
		}
		data = data[n:]
		if num != headsField || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, data); n < 0 {
				return out, errRecipe
			}
			data = data[n:]
			continue
		}
		head, n := protowire.ConsumeBytes(data)
		if n < 0 {
			return out, errRecipe
		}
		data = data[n:]
		r, err := headRecipe(head)
		if err != nil {
			bad = err
		}
		if r != nil {
			if out == nil {
				out = map[cid.Cid]*recipe{}
			}
			out[r.c] = r
		}
	}
	return out, bad
}

// headRecipe reads the recipe of an encoded Head (nil: none), which must
// name the head's CID.
func headRecipe(b []byte) (*recipe, error) {
	var c []byte
	var body []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errRecipe
		}
		b = b[n:]
		if (num == headCidField || num == recipeField) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, errRecipe
			}
			b = b[n:]
			if num == headCidField {
				c = v
			} else {
				body = v
			}
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return nil, errRecipe
		}
		b = b[n:]
	}
	if body == nil {
		return nil, nil
	}
	r, err := parseRecipe(body)
	if err != nil {
		return nil, err
	}
	if hc, err := cid.Cast(c); err != nil || !hc.Equals(r.c) {
		return nil, errRecipe
	}
	return r, nil
}

func parseRecipe(b []byte) (*recipe, error) {
	r := &recipe{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errRecipe
		}
		b = b[n:]
		switch {
		case (num == rcCid || num == rcLink) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, errRecipe
			}
			b = b[n:]
			c, err := cid.Cast(v)
			if err != nil {
				return nil, errRecipe
			}
			if num == rcCid {
				r.c = c
			} else if len(r.links) == maxRecipeLinks {
				return nil, errRecipe
			} else {
				r.links = append(r.links, c)
			}
		case num == rcPrio && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, errRecipe
			}
			b, r.prio = b[n:], v
		case num == rcRun && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || len(r.runs) == maxRecipeRuns {
				return nil, errRecipe
			}
			b = b[n:]
			run, err := parseRun(v)
			if err != nil {
				return nil, err
			}
			r.runs = append(r.runs, run)
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, errRecipe
			}
			b = b[n:]
		}
	}
	if !r.c.Defined() || len(r.runs) == 0 || r.keys() <= 0 {
		return nil, errRecipe
	}
	return r, nil
}

func parseRun(b []byte) (keyRun, error) {
	var run keyRun
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return run, errRecipe
		}
		b = b[n:]
		switch {
		case num == runPfx && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || len(v) > maxRecipePrefix {
				return run, errRecipe
			}
			b, run.prefix = b[n:], string(v)
		case (num == runFrom || num == runN) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return run, errRecipe
			}
			b = b[n:]
			if num == runFrom {
				run.first = v
			} else {
				run.count = v
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return run, errRecipe
			}
			b = b[n:]
		}
	}
	if run.count == 0 || run.first+run.count < run.first {
		return run, errRecipe
	}
	return run, nil
}

// recipeWriter adds the recipes of heads announced for the first time to
// this replica's announcements.
type recipeWriter struct {
	dag ipld.NodeGetter
	has func(context.Context, cid.Cid) (bool, error)

	mu   sync.Mutex
	sent map[cid.Cid]bool
	ring []cid.Cid // the order sent was filled in, to forget the oldest
	next int
}

func newRecipeWriter(d ipld.NodeGetter, has func(context.Context, cid.Cid) (bool, error)) *recipeWriter {
	return &recipeWriter{dag: d, has: has, sent: map[cid.Cid]bool{}, ring: make([]cid.Cid, recipesSent)}
}

// first reports whether c was not announced before, and remembers it.
func (w *recipeWriter) first(c cid.Cid) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sent[c] {
		return false
	}
	if old := w.ring[w.next]; old.Defined() {
		delete(w.sent, old)
	}
	w.ring[w.next] = c
	w.next = (w.next + 1) % len(w.ring)
	w.sent[c] = true
	return true
}

// attach returns data (an encoded CRDTBroadcast) with the recipes of its
// heads that are local and announced for the first time, within
// maxRecipesBytes; data itself when it has none.
func (w *recipeWriter) attach(ctx context.Context, data []byte) []byte {
	var b pb.CRDTBroadcast
	if err := proto.Unmarshal(data, &b); err != nil || len(b.ProtoReflect().GetUnknown()) > 0 {
		return data
	}
	heads := make([]cid.Cid, 0, len(b.Heads))
	recipes := make([][]byte, len(b.Heads))
	budget, any := maxRecipesBytes, false
	for i, h := range b.Heads {
		c, err := cid.Cast(h.Cid)
		if err != nil || len(h.ProtoReflect().GetUnknown()) > 0 {
			return data // not as go-ds-crdt writes it: left alone
		}
		heads = append(heads, c)
		if !w.first(c) {
			continue
		}
		if ok, err := w.has(ctx, c); err != nil || !ok {
			continue // never fetch here: only what is local
		}
		nd, err := w.dag.Get(ctx, c)
		if err != nil {
			continue
		}
		if r, err := recipeOf(nd); err == nil {
			if enc := r.encode(); len(enc) <= budget {
				recipes[i], budget, any = enc, budget-len(enc), true
			}
		}
	}
	if !any {
		return data
	}
	out := make([]byte, 0, len(data)+maxRecipesBytes-budget+8*len(heads))
	for i, c := range heads {
		out = appendHead(out, c, recipes[i])
	}
	return out
}

// RecipeStats count announced heads by how their block came.
type RecipeStats struct {
	Rebuilt   int64 // built from a recipe and values held
	Missing   int64 // a recipe came, a value was not held: fetched
	Mismatch  int64 // built from a recipe, another CID: dropped, fetched
	Fetched   int64 // fetched from peers (with or without a recipe)
	Malformed int64 // announcements with a recipe that could not be read
}

type recipeCounts struct {
	rebuilt, missing, mismatch, fetched, malformed atomic.Int64
}

func (c *recipeCounts) stats() RecipeStats {
	return RecipeStats{c.rebuilt.Load(), c.missing.Load(), c.mismatch.Load(), c.fetched.Load(), c.malformed.Load()}
}
