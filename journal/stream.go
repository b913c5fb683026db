package journal

import (
	"cmp"
	"container/heap"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"maps"
	"slices"
	"time"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
)

// Cursor is how far a streamed replay went: per origin ref, the highest
// sequence it has passed (an origin's signals come in sequence, so this
// is all a replay needs to go on from where it stopped). Its size follows
// the number of origins, not the journal's length.
type Cursor map[string]uint64

// String encodes the cursor as an opaque token (base64url, no padding);
// an empty cursor is "".
func (c Cursor) String() string {
	if len(c) == 0 {
		return ""
	}
	b := []byte{cursorVersion}
	for _, o := range slices.Sorted(maps.Keys(c)) {
		b = binary.AppendUvarint(b, uint64(len(o)))
		b = append(b, o...)
		b = binary.AppendUvarint(b, c[o])
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

const (
	cursorVersion    = 1
	maxCursorOrigins = 1 << 16
)

// ErrCursor: a token that is not a Cursor's String.
var ErrCursor = errors.New("journal: bad cursor")

// ParseCursor decodes what Cursor.String wrote ("" is the empty cursor).
func ParseCursor(s string) (Cursor, error) {
	c := Cursor{}
	if s == "" {
		return c, nil
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) == 0 || b[0] != cursorVersion {
		return nil, ErrCursor
	}
	b = b[1:]
	if len(b) == 0 {
		return nil, ErrCursor // String writes "" for the empty cursor
	}
	prev := ""
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n != causal.RefLen || uint64(len(b)-k) < n || len(c) >= maxCursorOrigins {
			return nil, ErrCursor
		}
		o := string(b[k : k+int(n)])
		b = b[k+int(n):]
		seq, k := binary.Uvarint(b)
		if k <= 0 || seq == 0 || (len(c) > 0 && o <= prev) {
			return nil, ErrCursor
		}
		b = b[k:]
		c[o], prev = seq, o
	}
	return c, nil
}

// maxHoleProbe is how many missing sequences Stream reads past, one at a
// time, before it lists the origin's keys to find the next one.
const maxHoleProbe = 64

// StreamOptions say what Stream yields.
type StreamOptions struct {
	// Match keeps the signals it accepts (nil: all).
	Match func(*signalmesh.Signal) bool
	// Copies yields every copy of an identity (a retry journaled at two
	// places), not only the first, each later one with StreamStep.Copy
	// set: for a caller that judges copies itself.
	Copies bool
	// ResumeCopies yields a signal whose identity has a copy at or before
	// the cursor the stream starts from (with Copy set under Copies),
	// where by default that copy counts as passed: for a caller that
	// knows what it handled before (a named subscription's handled set),
	// where a copy there may have been past retention, never handled.
	ResumeCopies bool
	// Extra are signals streamed as if journaled, each at its place,
	// where the journal holds none (a node's delivered signals whose
	// journal entries have not arrived): in the order, as causes, copies
	// and dependencies alike. tops must reach their places.
	Extra []*signalmesh.Signal
}

// StreamStep is one step of Stream.
type StreamStep struct {
	// Signal is the next signal; nil on a last step that only reports
	// Truncated.
	Signal *signalmesh.Signal
	// Cursor is the stream's own cursor, just past Signal: valid during
	// the call, copy it to keep it.
	Cursor Cursor
	// Truncated counts the signals Match accepts that the stream passed
	// over since the previous step because they are past the journal's
	// Retention (SetRetention): the replay says where it lost history.
	Truncated int
	// Copy reports (with StreamOptions.Copies) that another copy of the
	// signal's identity (source, id, content) was yielded before it, or
	// lies at or before the cursor the stream started from.
	Copy bool
}

// Stream calls yield with every journaled signal that o.Match accepts,
// in the order of Replay (Order, each identity once), after the cursor
// after (nil: from the start), until yield returns false. It reads one
// signal per origin at a time and asks the index for causes and copies:
// its memory follows the number of origins, not the journal's length,
// where Replay reads every signal first. tops names the origins and each
// one's highest sequence to read (Origins lists the journaled ones; a node
// keeps them): a place above its origin's top is outside the stream, not
// yielded, and no signal waits for it (as Order ignores dependencies
// outside its set). With a Retention that has count or byte rules it
// first reads what it will stream once, to count (time, not memory): from
// the start, the journal up to tops; resumed from a cursor, only what lies
// after it (what a rule keeps is its newest signals).
//
// The order is Replay's for every history an honest mesh writes. It
// differs only where Order breaks a cycle of causeids (which no honest
// history has): Stream then takes the least waiting origin's next signal,
// never a signal ahead of its origin's earlier ones.
func (j *Journal) Stream(ctx context.Context, tops map[string]uint64, after Cursor, o StreamOptions, yield func(StreamStep) bool) error {
	st := &stream{j: j, ctx: ctx, tops: tops, cur: maps.Clone(after), heads: map[string]*streamHead{}, waiting: map[string][]*streamHead{}}
	st.addExtra(o.Extra)
	if st.cur == nil {
		st.cur = Cursor{}
	}
	st.start = maps.Clone(st.cur)
	st.passed = make([]uint64, streamFilterWords)
	st.opts = o
	err := st.run(yield)
	if err != nil {
		// The cursor goes back to where the last step left it: what was
		// picked or passed over since is read again by a stream resumed
		// from it (nothing skipped, no truncation left uncounted).
		for o, seq := range st.undo {
			if seq == 0 {
				delete(st.cur, o)
			} else {
				st.cur[o] = seq
			}
		}
	}
	return err
}

// setCur moves origin o's cursor to seq, remembering where the last step
// left it.
func (st *stream) setCur(o string, seq uint64) {
	if _, ok := st.undo[o]; !ok {
		st.undo[o] = st.cur[o]
	}
	st.cur[o] = seq
}

func (st *stream) run(yield func(StreamStep) bool) error {
	ctx, o := st.ctx, st.opts
	st.undo = map[string]uint64{}
	ret, err := st.retention()
	if err != nil {
		return err
	}
	for o := range st.tops {
		if err := st.load(o); err != nil {
			return err
		}
	}
	truncated := 0
	for len(st.heads) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		h := st.pick()
		origin := h.m.Origin
		st.setCur(origin, h.m.Seq)
		delete(st.heads, origin)
		if err := st.wake(origin); err != nil {
			return err
		}
		gone := ret.left(h.s, h.size) // counted for every signal of its rule
		keep := o.Match == nil || o.Match(h.s)
		if keep && gone {
			truncated++
			keep = false
		}
		dup := false
		if keep {
			var err error
			if dup, err = st.copied(h); err != nil {
				return err
			}
			keep = !dup || o.Copies
		}
		if keep {
			if !yield(StreamStep{Signal: h.s, Cursor: st.cur, Truncated: truncated, Copy: dup}) {
				return nil
			}
			truncated = 0
			clear(st.undo)
		}
		if err := st.load(origin); err != nil {
			return err
		}
	}
	if truncated > 0 {
		yield(StreamStep{Cursor: st.cur, Truncated: truncated})
	}
	return nil
}

// streamRetention applies a Retention along a stream: by age at the
// stream's start, and by count and bytes from the totals a first pass
// counted.
type streamRetention struct {
	r       Retention
	now     time.Time
	lim     *limits // nil: no count or byte rule
	enabled bool
}

func (st *stream) retention() (*streamRetention, error) {
	j := st.j
	if len(j.ret) == 0 {
		return &streamRetention{}, nil
	}
	sr := &streamRetention{r: j.ret, now: j.now(), enabled: true}
	if !j.ret.counts() {
		return sr, nil
	}
	sr.lim = newLimits(j.ret)
	if len(st.cur) > 0 {
		// Resumed: only what lies after the cursor decides (what a rule
		// keeps is its newest; what is at or before the cursor was
		// passed), so count that alone: the tail, not the history.
		for o, top := range st.tops {
			if err := st.eachAfter(o, top, func(s *signalmesh.Signal, size int) {
				if !j.ret.expired(s, sr.now) {
					sr.lim.count(s, size)
				}
			}); err != nil {
				return nil, err
			}
		}
		return sr, nil
	}
	journaled := map[causal.Ref]bool{} // of the extra signals' places only
	res, err := j.d.Query(st.ctx, query.Query{Prefix: signalsNS})
	if err != nil {
		return nil, err
	}
	defer res.Close()
	for r := range res.Next() {
		if r.Error != nil {
			return nil, r.Error
		}
		ref, seq, ok := ParseSignalKey(ds.RawKey(r.Key))
		if !ok || seq > st.tops[ref] {
			continue // outside the stream
		}
		if r := (causal.Ref{Origin: ref, Seq: seq}); st.extra[r] != nil {
			journaled[r] = true
		}
		s, err := signalmesh.DecodeBinary(r.Value, j.lim)
		if err != nil || j.ret.expired(s, sr.now) {
			continue
		}
		if m, err := MetaOf(s); err != nil || m.Origin != ref || m.Seq != seq {
			continue // not at its place: the stream passes it over
		}
		sr.lim.count(s, len(r.Value))
	}
	for r, e := range st.extra { // streamed as if journaled: counted so
		if !journaled[r] && r.Seq <= st.tops[r.Origin] && !j.ret.expired(e.s, sr.now) {
			sr.lim.count(e.s, e.size)
		}
	}
	return sr, nil
}

// eachAfter calls fn with each signal of origin o after the stream's
// cursor up to top, journaled or extra, in sequence (an entry that does
// not decode, or is not at its place, is passed over, as the stream
// does).
func (st *stream) eachAfter(o string, top uint64, fn func(*signalmesh.Signal, int)) error {
	misses := 0
	for seq := st.cur[o] + 1; seq <= top; seq++ {
		if err := st.ctx.Err(); err != nil {
			return err
		}
		raw, err := st.j.d.Get(st.ctx, SignalKey(o, seq))
		if errors.Is(err, ds.ErrNotFound) {
			if e := st.extra[causal.Ref{Origin: o, Seq: seq}]; e != nil {
				misses = 0
				fn(e.s, e.size)
				continue
			}
			if misses++; misses > maxHoleProbe {
				next, err := st.nextKey(o, seq+1)
				if err != nil || next == 0 {
					return err
				}
				seq, misses = next-1, 0
			}
			continue
		}
		if err != nil {
			return err
		}
		misses = 0
		s, err := signalmesh.DecodeBinary(raw, st.j.lim)
		if err != nil {
			continue
		}
		if m, err := MetaOf(s); err == nil && m.Origin == o && m.Seq == seq {
			fn(s, len(raw))
		}
	}
	return nil
}

// left reports whether s, the stream's next signal (size bytes stored),
// is past retention.
func (sr *streamRetention) left(s *signalmesh.Signal, size int) bool {
	if !sr.enabled {
		return false
	}
	if sr.r.expired(s, sr.now) {
		return true
	}
	return sr.lim != nil && sr.lim.pass(s, size)
}

type stream struct {
	j       *Journal
	ctx     context.Context
	tops    map[string]uint64
	cur     Cursor
	heads   map[string]*streamHead   // origin -> its next signal
	ready   headHeap                 // the heads that wait for nothing
	waiting map[string][]*streamHead // origin -> the heads waiting for one of its places
	start   Cursor                   // where it started
	undo    map[string]uint64        // where the last step left the origins moved since (0: none)
	opts    StreamOptions
	passed  []uint64 // a Bloom filter of the identities it yielded

	extra     map[causal.Ref]*streamHead // StreamOptions.Extra by place
	extraByID map[string][]causal.Copy   // and as copies of their ids
}

// addExtra files the signals streamed as if journaled (a signal without a
// place is left out: it has none to be streamed at).
func (st *stream) addExtra(sigs []*signalmesh.Signal) {
	for _, s := range sigs {
		m, err := MetaOf(s)
		if err != nil || m.Seq == 0 {
			continue
		}
		if st.extra == nil {
			st.extra, st.extraByID = map[causal.Ref]*streamHead{}, map[string][]causal.Copy{}
		}
		if _, ok := st.extra[m.Ref()]; ok {
			continue
		}
		size := 0 // its stored form's: for the count and byte rules only
		if st.j.ret.counts() {
			if w, err := s.MarshalBinary(); err == nil {
				size = len(w)
			}
		}
		st.extra[m.Ref()] = &streamHead{s: s, m: m, size: size}
		st.extraByID[s.ID] = append(st.extraByID[s.ID], causal.Copy{Ref: m.Ref(), Digest: m.Digest, Source: s.Source})
	}
}

// extraAt returns a new head for the extra signal at r, or nil.
func (st *stream) extraAt(r causal.Ref) *streamHead {
	e := st.extra[r]
	if e == nil {
		return nil
	}
	h := *e
	return &h
}

// copies lists the places of id's copies: the index's and the extra
// signals'.
func (st *stream) copies(id string) ([]causal.Copy, error) {
	out, err := st.j.Copies(st.ctx, id)
	if err != nil || len(st.extraByID[id]) == 0 {
		return out, err
	}
	for _, c := range st.extraByID[id] {
		if !slices.ContainsFunc(out, func(o causal.Copy) bool { return o.Ref == c.Ref }) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b causal.Copy) int { return comparePlaces(a.Ref, b.Ref) })
	return out, nil
}

// streamFilterWords sizes a stream's filter of identities yielded (1 MiB:
// about 2 % false "maybe" at a million signals, each costing one index
// lookup).
const streamFilterWords = 1 << 17

// mark adds an identity to the filter and reports whether it may have
// been there already (always true without a filter).
func (st *stream) mark(h *streamHead) bool {
	if st.passed == nil {
		return true
	}
	x := fnv(h.s.Source, h.s.ID, h.m.Digest)
	h1, h2 := x&0xffffffff, x>>32|1
	n := uint64(len(st.passed) * 64)
	all := true
	for i := uint64(0); i < 4; i++ {
		p := (h1 + i*h2) % n
		if st.passed[p/64]&(1<<(p%64)) == 0 {
			all = false
			st.passed[p/64] |= 1 << (p % 64)
		}
	}
	return all
}

func fnv(source, id string, digest uint64) uint64 {
	h := uint64(14695981039346656037)
	for _, s := range [2]string{source, id} {
		for i := 0; i < len(s); i++ {
			h ^= uint64(s[i])
			h *= 1099511628211
		}
		h ^= 0xff
		h *= 1099511628211
	}
	h ^= digest
	h *= 1099511628211
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

type streamHead struct {
	s      *signalmesh.Signal
	m      causal.Meta
	size   int        // its stored form's
	waitOn causal.Ref // the place it waits for; zero: ready
}

// load reads origin o's next signal after the cursor into heads (none
// when the origin has no more).
func (st *stream) load(o string) error {
	before := st.cur[o]
	err := st.loadNext(o)
	if err == nil && st.cur[o] != before {
		err = st.wake(o) // it passed bad entries: what waited for them goes on
	}
	return err
}

func (st *stream) loadNext(o string) error {
	for seq := st.cur[o] + 1; seq <= st.tops[o]; {
		if err := st.ctx.Err(); err != nil {
			return err
		}
		raw, err := st.j.d.Get(st.ctx, SignalKey(o, seq))
		if errors.Is(err, ds.ErrNotFound) {
			if h := st.extraAt(causal.Ref{Origin: o, Seq: seq}); h != nil {
				st.heads[o] = h
				return st.classify(h)
			}
			if seq-st.cur[o] > maxHoleProbe {
				next, err := st.nextKey(o, seq)
				if err != nil || next == 0 {
					return err
				}
				seq = next
				continue
			}
			seq++
			continue
		}
		if err != nil {
			return err
		}
		s, err := signalmesh.DecodeBinary(raw, st.j.lim)
		m, merr := causal.Meta{}, err
		if err == nil {
			m, merr = MetaOf(s)
		}
		if merr != nil || m.Origin != o || m.Seq != seq {
			st.setCur(o, seq) // a bad entry: passed over, as All skips it
			seq++
			continue
		}
		h := &streamHead{s: s, m: m, size: len(raw)}
		st.heads[o] = h
		return st.classify(h)
	}
	return nil
}

// nextKey lists origin o's keys for the least sequence at or above from
// (0: none).
func (st *stream) nextKey(o string, from uint64) (uint64, error) {
	res, err := st.j.d.Query(st.ctx, query.Query{Prefix: signalsNS + "/" + o, KeysOnly: true})
	if err != nil {
		return 0, err
	}
	defer res.Close()
	var best uint64
	for r := range res.Next() {
		if r.Error != nil {
			return 0, r.Error
		}
		if err := st.ctx.Err(); err != nil {
			return 0, err
		}
		if ref, seq, ok := ParseSignalKey(ds.RawKey(r.Key)); ok && ref == o && seq >= from && (best == 0 || seq < best) {
			best = seq
		}
	}
	for r := range st.extra {
		if r.Origin == o && r.Seq >= from && (best == 0 || r.Seq < best) {
			best = r.Seq
		}
	}
	return best, nil
}

// classify files a new head, or one whose awaited place was passed, as
// ready or as waiting for the place it waits on now.
func (st *stream) classify(h *streamHead) error {
	w, err := st.waitsOn(h)
	if err != nil {
		return err
	}
	h.waitOn = w
	if w == (causal.Ref{}) {
		heap.Push(&st.ready, h)
		return nil
	}
	st.waiting[w.Origin] = append(st.waiting[w.Origin], h)
	return nil
}

// wake files again the heads that waited for a place of origin o the
// stream has now passed.
func (st *stream) wake(o string) error {
	ws := st.waiting[o]
	if len(ws) == 0 {
		return nil
	}
	var still, woken []*streamHead
	for _, h := range ws {
		if h.waitOn.Seq <= st.cur[o] {
			woken = append(woken, h)
		} else {
			still = append(still, h)
		}
	}
	if len(still) == 0 {
		delete(st.waiting, o)
	} else {
		st.waiting[o] = still
	}
	for _, h := range woken {
		if err := st.classify(h); err != nil {
			return err
		}
	}
	return nil
}

// pick takes the ready head with the least (Lamport time, origin,
// sequence), or, when none is ready (a cycle), the least waiting head.
func (st *stream) pick() *streamHead {
	if st.ready.Len() > 0 {
		return heap.Pop(&st.ready).(*streamHead)
	}
	var least *streamHead
	for _, ws := range st.waiting {
		for _, h := range ws {
			if least == nil || headLess(h, least) {
				least = h
			}
		}
	}
	o := least.waitOn.Origin
	st.waiting[o] = slices.DeleteFunc(st.waiting[o], func(h *streamHead) bool { return h == least })
	if len(st.waiting[o]) == 0 {
		delete(st.waiting, o)
	}
	return least
}

// headHeap orders ready heads, least (Lamport time, origin, sequence) on
// top.
type headHeap []*streamHead

func (h headHeap) Len() int           { return len(h) }
func (h headHeap) Less(i, j int) bool { return headLess(h[i], h[j]) }
func (h headHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *headHeap) Push(x any)        { *h = append(*h, x.(*streamHead)) }
func (h *headHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func headLess(a, b *streamHead) bool {
	return cmp.Or(cmp.Compare(a.m.Lamport, b.m.Lamport), cmp.Compare(a.m.Origin, b.m.Origin), cmp.Compare(a.m.Seq, b.m.Seq)) < 0
}

// waitsOn returns a journaled place that h's signal comes after in Order
// and the stream has not passed: a direct dependency, or a copy of its
// cause (Order's edges); zero when there is none.
func (st *stream) waitsOn(h *streamHead) (causal.Ref, error) {
	m := &h.m
	for _, d := range m.Deps {
		if d.Seq > st.cur[d.Origin] && d.Seq <= st.tops[d.Origin] {
			ok, err := st.holds(d)
			if err != nil {
				return causal.Ref{}, err
			}
			if ok {
				return d, nil
			}
		}
	}
	if m.Cause == "" || m.Cause == m.ID {
		return causal.Ref{}, nil
	}
	copies, err := st.copies(m.Cause)
	if err != nil {
		return causal.Ref{}, err
	}
	later := m.CauseSource
	if later == "" {
		later = m.Source
	}
	for _, c := range copies {
		if m.CauseSource != "" && c.Source != m.CauseSource {
			continue // another source's signal with that id
		}
		if c.Ref.Origin == m.Origin && c.Ref.Seq > m.Seq && c.Source == later {
			continue // not a dependency: the origin's own order wins
		}
		if c.Ref.Seq > st.cur[c.Ref.Origin] && c.Ref.Seq <= st.tops[c.Ref.Origin] {
			ok, err := st.holds(c.Ref)
			if err != nil {
				return causal.Ref{}, err
			}
			if ok { // an index entry ahead of its signal is no edge: Order sees signals only
				return c.Ref, nil
			}
		}
	}
	return causal.Ref{}, nil
}

// copied reports whether another copy of h's identity (same source, id
// and content) was passed already: Replay keeps the first copy only. The
// index is asked only when the filter of identities passed cannot say no.
func (st *stream) copied(h *streamHead) (bool, error) {
	maybe := st.mark(h) // its identity may have been yielded already
	if !maybe && (len(st.start) == 0 || st.opts.ResumeCopies) {
		return false, nil
	}
	copies, err := st.copies(h.s.ID)
	if err != nil {
		return false, err
	}
	for _, c := range copies {
		// A copy at or before where the stream started is passed; one
		// the stream passed itself counts only if it was yielded (not
		// one past retention, or one Match left out), as far as the
		// filter of identities yielded knows.
		bound := st.start[c.Ref.Origin]
		if st.opts.ResumeCopies {
			bound = 0
		}
		if maybe {
			bound = max(bound, st.cur[c.Ref.Origin])
		}
		if c.Ref != h.m.Ref() && c.Source == h.s.Source && c.Digest == h.m.Digest && c.Ref.Seq <= bound {
			ok, err := st.holds(c.Ref)
			if err != nil || ok {
				return ok, err
			}
		}
	}
	return false, nil
}

// holds reports whether the journal holds a signal at r: an entry that
// decodes and is at its place (a bad entry is no signal, as All skips it).
func (st *stream) holds(r causal.Ref) (bool, error) {
	raw, err := st.j.d.Get(st.ctx, SignalKey(r.Origin, r.Seq))
	if errors.Is(err, ds.ErrNotFound) {
		return st.extra[r] != nil, nil
	}
	if err != nil {
		return false, err
	}
	s, err := signalmesh.DecodeBinary(raw, st.j.lim)
	if err != nil {
		return false, nil
	}
	ref, seq := Place(s)
	return ref == r.Origin && seq == r.Seq, nil
}
