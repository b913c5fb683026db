package journal

import (
	"cmp"
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
)

// ErrNotFound: no signal with that id or place.
var ErrNotFound = errors.New("journal: not found")

// ErrNoStamp: the signal carries no origin or causal stamp (it was not
// published through a mesh node, or it is Weak).
var ErrNoStamp = errors.New("journal: signal has no causal stamp")

const (
	signalsNS = "/s"
	indexNS   = "/i"
	effectsNS = "/e"
)

// SignalKey is the key of the signal with sequence seq of the peer whose
// ref is ref.
func SignalKey(ref string, seq uint64) ds.Key {
	// Built in a strings.Builder, whose String does not copy: a key is
	// made for every signal journaled, received or read.
	var b strings.Builder
	b.Grow(len(signalsNS) + len(ref) + 18)
	b.WriteString(signalsNS)
	b.WriteByte('/')
	b.WriteString(ref)
	b.WriteByte('/')
	writeHex16(&b, seq)
	return ds.RawKey(b.String())
}

// OriginPrefix is the prefix of the keys of the signals of the peer whose
// ref is ref (a query prefix).
func OriginPrefix(ref string) string { return signalsNS + "/" + ref }

// IndexKey is the key of the index entry of a signal with id at (ref, seq).
func IndexKey(id, ref string, seq uint64) ds.Key { return placeKey(indexNS, id, ref, seq) }

// EffectKey is the key of the effects index entry of a signal at (ref,
// seq) whose causeid is cause.
func EffectKey(cause, ref string, seq uint64) ds.Key { return placeKey(effectsNS, cause, ref, seq) }

// placeKey is <ns>/<id, base64url>/<ref>.<seq, 16 hex digits>.
func placeKey(ns, id, ref string, seq uint64) ds.Key {
	enc := base64.RawURLEncoding
	var b strings.Builder // as in SignalKey: one allocation
	b.Grow(len(ns) + enc.EncodedLen(len(id)) + len(ref) + 19)
	b.WriteString(ns)
	b.WriteByte('/')
	var buf [64]byte // an id of up to 48 bytes is encoded here, on the stack
	if n := enc.EncodedLen(len(id)); n <= len(buf) {
		enc.Encode(buf[:n], []byte(id))
		b.Write(buf[:n])
	} else {
		b.WriteString(enc.EncodeToString([]byte(id)))
	}
	b.WriteByte('/')
	b.WriteString(ref)
	b.WriteByte('.')
	writeHex16(&b, seq)
	return ds.RawKey(b.String())
}

// writeHex16 writes v in 16 lower-case hexadecimal digits (%016x).
func writeHex16(b *strings.Builder, v uint64) {
	const digits = "0123456789abcdef"
	for i := 60; i >= 0; i -= 4 {
		b.WriteByte(digits[v>>uint(i)&0xf])
	}
}

func indexPrefix(id string) string { return placePrefix(indexNS, id) }

func placePrefix(ns, id string) string {
	return ns + "/" + base64.RawURLEncoding.EncodeToString([]byte(id)) + "/"
}

// ParseSignalKey returns the place a signal key names; ok is false for any
// other key (index entries included).
func ParseSignalKey(k ds.Key) (ref string, seq uint64, ok bool) {
	rest, found := strings.CutPrefix(k.String(), signalsNS+"/")
	if !found {
		return "", 0, false
	}
	ref, hexSeq, found := strings.Cut(rest, "/")
	if !found || len(ref) != causal.RefLen || len(hexSeq) != 16 {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(hexSeq, 16, 64)
	return ref, seq, err == nil && seq > 0
}

// Entry is one key and value to write.
type Entry struct {
	Key   ds.Key
	Value []byte
}

// Entries returns the entries that journal s, whose binary wire form is
// wire: the signal (for the replicated store) and its index entries (for
// the index store, see IndexEntries).
func Entries(s *signalmesh.Signal, wire []byte) (signal Entry, index []Entry, err error) {
	m, err := MetaOf(s)
	if err != nil {
		return Entry{}, nil, err
	}
	return Entry{SignalKey(m.Origin, m.Seq), wire}, IndexEntries(m), nil
}

// IndexEntries are the index entries of the signal m describes: by id
// (content digest and source), and, when it names a cause, by its cause
// (the effects index, an empty value). Every writer of the index writes
// them all, so that Copies and Effects see the same signals.
func IndexEntries(m causal.Meta) []Entry {
	v := make([]byte, 8, 8+len(m.Source))
	binary.BigEndian.PutUint64(v, m.Digest)
	v = append(v, m.Source...)
	es := make([]Entry, 1, 2) // room for the effects entry
	es[0] = Entry{IndexKey(m.ID, m.Origin, m.Seq), v}
	if m.Cause != "" {
		es = append(es, EffectEntry(m))
	}
	return es
}

// EffectEntry is the effects index entry of the signal m describes, which
// names a cause: IndexEntries' second entry, alone, for a store whose id
// index predates the effects index.
func EffectEntry(m causal.Meta) Entry {
	return Entry{EffectKey(m.Cause, m.Origin, m.Seq), []byte{}}
}

// MetaOf reads what package causal needs of a journaled signal: its origin
// (the ref of its meshpeer), its stamp, cause and identity, and the digest
// of its content.
func MetaOf(s *signalmesh.Signal) (causal.Meta, error) {
	peer, _ := s.Extensions[signalmesh.ExtPeer].(string)
	text, _ := s.Extensions[signalmesh.ExtCausal].(string)
	if peer == "" || text == "" {
		return causal.Meta{}, ErrNoStamp
	}
	st, err := causal.ParseStamp(text)
	if err != nil {
		return causal.Meta{}, err
	}
	return causal.Meta{Origin: causal.PeerRef(peer), Stamp: st, Cause: s.CauseID(), CauseSource: s.CauseSource(),
		Source: s.Source, ID: s.ID, Digest: ContentDigest(s)}, nil
}

// Place returns the origin's peer ref and the sequence number of a
// journaled signal (zero when it has no stamp).
func Place(s *signalmesh.Signal) (ref string, seq uint64) {
	peer, _ := s.Extensions[signalmesh.ExtPeer].(string)
	text, _ := s.Extensions[signalmesh.ExtCausal].(string)
	if peer == "" || text == "" {
		return "", 0
	}
	st, err := causal.ParseStamp(text)
	if err != nil {
		return "", 0
	}
	return causal.PeerRef(peer), st.Seq
}

// ContentDigest is the first 8 bytes of SHA-256 over the signal's content:
// every attribute and extension but those a mesh stamps (names starting
// with "mesh") and the distributed-tracing ones (traceparent, tracestate:
// a retry is traced anew), in a canonical form. Two publications of the
// same event have the same digest wherever they were stamped and traced.
func ContentDigest(s *signalmesh.Signal) uint64 {
	bp := digestBufs.Get().(*[]byte)
	b := (*bp)[:0]
	num := func(v uint64) { b = binary.AppendUvarint(b, v) }
	str := func(v string) { num(uint64(len(v))); b = append(b, v...) }
	str(s.ID)
	str(s.Source)
	str(s.Type)
	str(s.Subject)
	if s.Time.IsZero() {
		num(0)
	} else {
		_, off := s.Time.Zone()
		num(1)
		num(uint64(s.Time.Unix()))
		num(uint64(s.Time.Nanosecond()))
		num(uint64(int64(off)))
	}
	str(s.DataContentType)
	str(s.DataSchema)
	num(uint64(len(s.Data)))
	b = append(b, s.Data...)
	var few [16]string // on the stack: a signal has a few extensions
	names := few[:0]
	for k := range s.Extensions {
		if !strings.HasPrefix(k, "mesh") && k != "traceparent" && k != "tracestate" {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	for _, k := range names {
		str(k)
		switch v := s.Extensions[k].(type) {
		case string:
			num(0)
			str(v)
		case bool:
			if v {
				num(2)
			} else {
				num(1)
			}
		case int32:
			num(3)
			num(uint64(int64(v)))
		default:
			str(fmt.Sprint(v))
		}
	}
	sum := sha256.Sum256(b)
	if cap(b) <= 64<<10 { // a huge signal's buffer is not kept
		*bp = b
		digestBufs.Put(bp)
	}
	return binary.BigEndian.Uint64(sum[:8])
}

// digestBufs holds ContentDigest's buffers: the canonical form is hashed in
// one call, with no allocation per signal.
var digestBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Journal reads signals from a datastore and finds them by id through an
// index. Writing is the caller's (batched) business: put both Entries of
// each signal, the signal into the journal's store and the index entry
// into its index.
type Journal struct {
	d, ix ds.Read
	mem   *MemIndex // the index, when it is held in memory (NewWithMemIndex): ix is nil
	lim   signalmesh.Limits
	ret   Retention        // what the views keep (SetRetention)
	now   func() time.Time // the views' clock
}

// New returns a journal over d that keeps its index in d as well.
func New(d ds.Read) *Journal { return &Journal{d: d, ix: d} }

// NewWithIndex returns a journal over d whose index is in ix.
func NewWithIndex(d, ix ds.Read) *Journal { return &Journal{d: d, ix: ix} }

// NewWithMemIndex returns a journal over d whose index is ix, in memory.
// Its writer adds each signal it journals to ix (MemIndex.Add).
func NewWithMemIndex(d ds.Read, ix *MemIndex) *Journal { return &Journal{d: d, mem: ix} }

var _ causal.Index = (*Journal)(nil)

// At returns the signal at (ref, seq).
func (j *Journal) At(ctx context.Context, ref string, seq uint64) (*signalmesh.Signal, error) {
	b, err := j.d.Get(ctx, SignalKey(ref, seq))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s:%d", ErrNotFound, ref, seq)
	}
	if err != nil {
		return nil, err
	}
	s, err := signalmesh.DecodeBinary(b, j.lim)
	if err != nil {
		return nil, fmt.Errorf("journal: entry %s:%d: %w", ref, seq, err)
	}
	return s, nil
}

// Copies returns the index entries of id: every journaled signal with that
// id, of any source, sorted by place.
func (j *Journal) Copies(ctx context.Context, id string) ([]causal.Copy, error) {
	if j.mem != nil {
		return j.mem.copies(id), nil
	}
	prefix := indexPrefix(id)
	res, err := j.ix.Query(ctx, query.Query{Prefix: strings.TrimSuffix(prefix, "/")})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var out []causal.Copy
	for r := range res.Next() {
		if r.Error != nil {
			return nil, r.Error
		}
		ref, ok := parsePlace(r.Key, prefix)
		if !ok || len(r.Value) < 8 {
			continue // another id with this prefix, or a bad entry
		}
		out = append(out, causal.Copy{Ref: ref, Digest: binary.BigEndian.Uint64(r.Value), Source: string(r.Value[8:])})
	}
	slices.SortFunc(out, func(a, b causal.Copy) int { return comparePlaces(a.Ref, b.Ref) })
	return out, nil
}

// parsePlace reads the place an index key under prefix names (the key of
// another id that shares the prefix's text, or a bad key: false).
func parsePlace(key, prefix string) (causal.Ref, bool) {
	place, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return causal.Ref{}, false
	}
	ref, hexSeq, ok := strings.Cut(place, ".")
	seq, err := strconv.ParseUint(hexSeq, 16, 64)
	if !ok || err != nil || len(ref) != causal.RefLen {
		return causal.Ref{}, false
	}
	return causal.Ref{Origin: ref, Seq: seq}, true
}

func comparePlaces(a, b causal.Ref) int {
	return cmp.Or(cmp.Compare(a.Origin, b.Origin), cmp.Compare(a.Seq, b.Seq))
}

// EffectPlaces returns the places the effects index holds for id: of the
// signals journaled whose causeid is id (and of ones whose entry is on its
// way), sorted. It reads the index entries of id's effects only.
func (j *Journal) EffectPlaces(ctx context.Context, id string) ([]causal.Ref, error) {
	if j.mem != nil {
		return j.mem.effectPlaces(id), nil
	}
	prefix := placePrefix(effectsNS, id)
	res, err := j.ix.Query(ctx, query.Query{Prefix: strings.TrimSuffix(prefix, "/"), KeysOnly: true})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	var out []causal.Ref
	for r := range res.Next() {
		if r.Error != nil {
			return nil, r.Error
		}
		if ref, ok := parsePlace(r.Key, prefix); ok {
			out = append(out, ref)
		}
	}
	slices.SortFunc(out, comparePlaces)
	return slices.Compact(out), nil
}

// Caused returns the journaled signals whose causeid is id, in place
// order, read through the effects index: what it costs follows the
// effects, not the journal. An entry whose signal is not journaled (yet),
// does not decode, is not at its place or names another cause is skipped,
// as All skips it or a filter over All would. Of a Retention it applies
// the age limits only: count and byte limits depend on every signal of
// their rule (Retention.Counts), and Effects and Trace read the whole
// journal to apply them.
func (j *Journal) Caused(ctx context.Context, id string) ([]*signalmesh.Signal, error) {
	places, err := j.EffectPlaces(ctx, id)
	if err != nil {
		return nil, err
	}
	var out []*signalmesh.Signal
	var now time.Time
	if len(j.ret) > 0 {
		now = j.now()
	}
	for _, p := range places {
		b, err := j.d.Get(ctx, SignalKey(p.Origin, p.Seq))
		if errors.Is(err, ds.ErrNotFound) {
			continue // the index entry came before the signal
		}
		if err != nil {
			return nil, err
		}
		s, err := signalmesh.DecodeBinary(b, j.lim)
		if err != nil {
			continue
		}
		if r, q := Place(s); r != p.Origin || q != p.Seq || s.CauseID() != id {
			continue
		}
		if len(j.ret) > 0 && j.ret.expired(s, now) {
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// ByID implements causal.Index (errors read as "none").
func (j *Journal) ByID(id string) []causal.Copy {
	cs, _ := j.Copies(context.Background(), id)
	return cs
}

// Get returns the signal with id (of the first source, in place order, when
// several sources used it).
func (j *Journal) Get(ctx context.Context, id string) (*signalmesh.Signal, error) {
	cs, err := j.Copies(ctx, id)
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		s, err := j.At(ctx, c.Ref.Origin, c.Ref.Seq)
		if errors.Is(err, ErrNotFound) {
			continue // the index entry arrived before the signal
		}
		return s, err
	}
	return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
}

// Origins returns, per origin ref, the highest sequence journaled, reading
// keys only.
func (j *Journal) Origins(ctx context.Context) (map[string]uint64, error) {
	res, err := j.d.Query(ctx, query.Query{Prefix: signalsNS, KeysOnly: true})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	out := map[string]uint64{}
	for r := range res.Next() {
		if r.Error != nil {
			return nil, r.Error
		}
		if ref, seq, ok := ParseSignalKey(ds.RawKey(r.Key)); ok {
			out[ref] = max(out[ref], seq)
		}
	}
	return out, nil
}

// All returns every signal, in no particular order. Entries that do not
// decode, or whose key is not their place, are skipped and counted in bad.
// With a Retention (SetRetention), the signals past it are left out.
func (j *Journal) All(ctx context.Context) (sigs []*signalmesh.Signal, bad int, err error) {
	res, err := j.d.Query(ctx, query.Query{Prefix: signalsNS})
	if err != nil {
		return nil, 0, err
	}
	defer res.Close()
	size := map[*signalmesh.Signal]int{} // stored sizes, for byte limits
	for r := range res.Next() {
		if r.Error != nil {
			return nil, bad, r.Error
		}
		ref, seq, ok := ParseSignalKey(ds.RawKey(r.Key))
		if !ok {
			continue
		}
		s, err := signalmesh.DecodeBinary(r.Value, j.lim)
		if err != nil {
			bad++
			continue
		}
		if sr, ss := Place(s); sr != ref || ss != seq {
			bad++
			continue
		}
		sigs = append(sigs, s)
		if len(j.ret) > 0 {
			size[s] = len(r.Value)
		}
	}
	sigs, _ = j.retain(sigs, size)
	return sigs, bad, nil
}

// Replay returns every signal whose type matches match (nil: all), in the
// order of Order, each identity once: a later copy of the same (source, id)
// with the same content (a retry journaled by two peers) is left out.
func (j *Journal) Replay(ctx context.Context, match func(*signalmesh.Signal) bool) ([]*signalmesh.Signal, error) {
	all, _, err := j.All(ctx)
	if err != nil {
		return nil, err
	}
	Order(all)
	if match != nil {
		kept := all[:0]
		for _, s := range all {
			if match(s) {
				kept = append(kept, s)
			}
		}
		all = kept
	}
	return Unique(all), nil // the order of Order on all survives the filter
}

// Causes follows causeid links from id back to the root cause and returns
// the chain, cause first, ending with the signal itself. A cause that is not
// in the journal (yet) ends the chain early.
func (j *Journal) Causes(ctx context.Context, id string) ([]*signalmesh.Signal, error) {
	return CausesVia(ctx, j.Get, id)
}

// CausesVia is Causes over any lookup by id that answers ErrNotFound for
// what it lacks (a journal with signals not yet journaled beside it).
func CausesVia(ctx context.Context, get func(context.Context, string) (*signalmesh.Signal, error), id string) ([]*signalmesh.Signal, error) {
	s, err := get(ctx, id)
	if err != nil {
		return nil, err
	}
	chain := []*signalmesh.Signal{s}
	seen := map[string]bool{id: true}
	for c := s.CauseID(); c != "" && !seen[c]; c = chain[0].CauseID() {
		seen[c] = true
		cs, err := get(ctx, c)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		chain = append([]*signalmesh.Signal{cs}, chain...)
	}
	return chain, nil
}

// Effects returns the signals whose cause is id, directly, in replay order,
// each identity once (as Replay). It reads them through the effects index
// (Caused); with count or byte retention rules it reads the whole journal.
func (j *Journal) Effects(ctx context.Context, id string) ([]*signalmesh.Signal, error) {
	if j.ret.Counts() {
		return j.Replay(ctx, func(s *signalmesh.Signal) bool { return s.CauseID() == id })
	}
	sigs, err := j.Caused(ctx, id)
	if err != nil {
		return nil, err
	}
	Order(sigs)
	return Unique(sigs), nil
}

// Trace returns the whole cause→effect tree around id: its causes back to
// the root (root first, ending with the signal itself, as Causes) and every
// signal that descends from it through causeid links, in replay order. It
// reads the descendants through the effects index (DescendantsVia); with
// count or byte retention rules it reads the whole journal.
func (j *Journal) Trace(ctx context.Context, id string) (causes, effects []*signalmesh.Signal, err error) {
	if causes, err = j.Causes(ctx, id); err != nil {
		return nil, nil, err
	}
	if !j.ret.Counts() {
		effects, err = DescendantsVia(ctx, j.effectsOf, id)
		return causes, effects, err
	}
	all, err := j.Replay(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	return causes, Descendants(all, id), nil
}

// DescendantsVia is Descendants over a lookup of direct effects: effects
// returns, for each id of a level of the tree, its direct effects in
// replay order (as Effects). It walks the tree breadth first, a level at
// a time, each id once: it looks up the ids of the result and id, in as
// many calls as the tree has levels, plus one. The result is in the order
// of Order.
func DescendantsVia(ctx context.Context, effects func(context.Context, []string) (map[string][]*signalmesh.Signal, error), id string) ([]*signalmesh.Signal, error) {
	var out []*signalmesh.Signal
	seen := map[string]bool{id: true}
	for level := []string{id}; len(level) > 0; {
		by, err := effects(ctx, level)
		if err != nil {
			return nil, err
		}
		var next []string
		for _, p := range level {
			for _, c := range by[p] {
				if !seen[c.ID] {
					seen[c.ID] = true
					out = append(out, c)
					next = append(next, c.ID)
				}
			}
		}
		level = next
	}
	Order(out)
	return out, nil
}

// effectsOf is Effects of each id.
func (j *Journal) effectsOf(ctx context.Context, ids []string) (map[string][]*signalmesh.Signal, error) {
	by := make(map[string][]*signalmesh.Signal, len(ids))
	for _, id := range ids {
		es, err := j.Effects(ctx, id)
		if err != nil {
			return nil, err
		}
		by[id] = es
	}
	return by, nil
}

// Descendants returns the signals of all that descend from id through
// causeid links, in the order of Order.
func Descendants(all []*signalmesh.Signal, id string) []*signalmesh.Signal {
	children := map[string][]*signalmesh.Signal{}
	for _, s := range all {
		if c := s.CauseID(); c != "" {
			children[c] = append(children[c], s)
		}
	}
	var effects []*signalmesh.Signal
	seen := map[string]bool{id: true}
	for queue := []string{id}; len(queue) > 0; queue = queue[1:] {
		for _, c := range children[queue[0]] {
			if !seen[c.ID] {
				seen[c.ID] = true
				effects = append(effects, c)
				queue = append(queue, c.ID)
			}
		}
	}
	Order(effects)
	return effects
}

// Unique keeps one copy of each identity in sigs, the first: a later copy
// of the same (source, id) and content is left out, as Replay does.
func Unique(sigs []*signalmesh.Signal) []*signalmesh.Signal {
	type ident struct {
		source, id string
		digest     uint64
	}
	seen := map[ident]bool{}
	out := sigs[:0]
	for _, s := range sigs {
		k := ident{s.Source, s.ID, ContentDigest(s)}
		if !seen[k] {
			seen[k] = true
			out = append(out, s)
		}
	}
	return out
}

// Digest is a SHA-256 over the ids of sigs, in order, in hex.
func Digest(sigs []*signalmesh.Signal) string {
	return digest(func(yield func(string) bool) {
		for _, s := range sigs {
			if !yield(s.ID) {
				return
			}
		}
	})
}

// KeyDigest returns the number of signal entries and a digest of every key
// (signals and index) in key order, without reading a value: two journals
// over the same set of signals have the same key digest. Cheaper than
// Digest of a Replay by far.
func (j *Journal) KeyDigest(ctx context.Context) (int, string, error) {
	res, err := j.d.Query(ctx, query.Query{KeysOnly: true})
	if err != nil {
		return 0, "", err
	}
	all, err := res.Rest()
	if err != nil {
		return 0, "", err
	}
	keys := make([]string, len(all))
	n := 0
	for i, e := range all {
		keys[i] = e.Key
		if strings.HasPrefix(e.Key, signalsNS+"/") {
			n++
		}
	}
	slices.Sort(keys)
	return n, digest(slices.Values(keys)), nil
}

func digest(ids iter.Seq[string]) string {
	h := sha256.New()
	for id := range ids {
		h.Write([]byte(id))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Order sorts signals for replay: a linear extension of the causal order
// (an origin's signals in sequence, also across a hole in its sequence
// numbers, each after its direct dependencies and
// after every signal whose id is its causeid) that depends only on the set
// of signals: among the signals whose predecessors are all placed, the one
// with the lowest (Lamport time, origin ref, sequence) goes first. Signals
// without a stamp go first, by id; dependencies outside the set are
// ignored, and a cycle of causeids (which no honest history has) is broken
// in the same tie order.
func Order(sigs []*signalmesh.Signal) {
	type node struct {
		s     *signalmesh.Signal
		m     causal.Meta
		ok    bool
		indeg int
		out   []int
	}
	nodes := make([]node, len(sigs))
	at := make(map[causal.Ref]int, len(sigs))
	byID := map[string][]int{}
	for i, s := range sigs {
		m, err := MetaOf(s)
		nodes[i] = node{s: s, m: m, ok: err == nil}
		if err == nil {
			at[m.Ref()] = i
		}
		byID[s.ID] = append(byID[s.ID], i)
	}
	edge := func(from, to int) {
		if from != to {
			nodes[from].out = append(nodes[from].out, to)
			nodes[to].indeg++
		}
	}
	// An origin's signals in sequence, across holes too: each after the
	// origin's previous signal in the set.
	byOrigin := map[string][]int{}
	for i := range nodes {
		if nodes[i].ok {
			byOrigin[nodes[i].m.Origin] = append(byOrigin[nodes[i].m.Origin], i)
		}
	}
	for _, idx := range byOrigin {
		slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(nodes[a].m.Seq, nodes[b].m.Seq) })
		for k := 1; k < len(idx); k++ {
			if nodes[idx[k-1]].m.Seq != nodes[idx[k]].m.Seq {
				edge(idx[k-1], idx[k])
			}
		}
	}
	for i := range nodes {
		nd := &nodes[i]
		if !nd.ok {
			continue
		}
		for _, d := range nd.m.Deps {
			if p, ok := at[d]; ok {
				edge(p, i)
			}
		}
		if nd.m.Cause != "" {
			for _, p := range byID[nd.m.Cause] {
				c := &nodes[p]
				if nd.m.CauseSource != "" && c.s.Source != nd.m.CauseSource {
					continue // another source's signal with that id
				}
				later := nd.m.CauseSource
				if later == "" {
					later = nd.s.Source
				}
				if c.s.ID == nd.s.ID || c.ok && c.m.Origin == nd.m.Origin && c.m.Seq > nd.m.Seq && c.s.Source == later {
					continue // not a dependency: the origin's own order wins (see package causal)
				}
				edge(p, i)
			}
		}
	}
	less := func(a, b int) bool {
		x, y := &nodes[a], &nodes[b]
		if x.ok != y.ok {
			return !x.ok
		}
		if !x.ok {
			return x.s.ID < y.s.ID || x.s.ID == y.s.ID && a < b
		}
		return cmp.Or(cmp.Compare(x.m.Lamport, y.m.Lamport), cmp.Compare(x.m.Origin, y.m.Origin), cmp.Compare(x.m.Seq, y.m.Seq)) < 0
	}
	h := &idxHeap{less: less}
	for i := range nodes {
		if nodes[i].indeg == 0 {
			heap.Push(h, i)
		}
	}
	out := make([]*signalmesh.Signal, 0, len(sigs))
	placed := make([]bool, len(nodes))
	for len(out) < len(nodes) {
		if h.Len() == 0 { // a cycle: take the least unplaced signal
			best := -1
			for i := range nodes {
				if !placed[i] && (best < 0 || less(i, best)) {
					best = i
				}
			}
			nodes[best].indeg = 0
			heap.Push(h, best)
		}
		i := heap.Pop(h).(int)
		if placed[i] {
			continue
		}
		placed[i] = true
		out = append(out, nodes[i].s)
		for _, j := range nodes[i].out {
			if nodes[j].indeg--; nodes[j].indeg == 0 && !placed[j] {
				heap.Push(h, j)
			}
		}
	}
	copy(sigs, out)
}

type idxHeap struct {
	v    []int
	less func(a, b int) bool
}

func (h *idxHeap) Len() int           { return len(h.v) }
func (h *idxHeap) Less(i, j int) bool { return h.less(h.v[i], h.v[j]) }
func (h *idxHeap) Swap(i, j int)      { h.v[i], h.v[j] = h.v[j], h.v[i] }
func (h *idxHeap) Push(x any)         { h.v = append(h.v, x.(int)) }
func (h *idxHeap) Pop() any {
	x := h.v[len(h.v)-1]
	h.v = h.v[:len(h.v)-1]
	return x
}

// Journaled implements causal.Index: whether an entry is at r (errors read
// as "no").
func (j *Journal) Journaled(r causal.Ref) bool {
	ok, err := j.d.Has(context.Background(), SignalKey(r.Origin, r.Seq))
	return err == nil && ok
}
