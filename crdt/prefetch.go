package crdt

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipfs/go-ds-crdt/pb"
	ipld "github.com/ipfs/go-ipld-format"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
)

// Head fetching. go-ds-crdt walks the heads of a broadcast one after the
// other, each until its whole branch is fetched: a head whose block only a
// departed peer had holds up every head announced after it, for a fetch
// timeout per block. So the prefetcher sits between the topic and
// go-ds-crdt: it hands go-ds-crdt a head only once the head's block is in
// the local blockstore (at once when it already is), fetching at most
// prefetchWorkers blocks at a time, each for at most prefetchTimeout. A
// head that cannot be fetched is tried again after 5 s and 30 s, then
// given up (counted; a live peer that holds it announces it again).
//
// Heads wait in one queue per announcer, and the workers take from the
// announcers in turn, at most perPeerFetches of one announcer at a time: a
// peer whose heads nobody can serve (a departed ephemeral node, a hostile
// one) ties up at most that many workers, and a live peer's heads do not
// wait behind its heads. A head announced again while it waits goes to
// the front of its queue (it is still a head there), or of the new
// announcer's when its own announcer's slots are all taken and the new
// one has a slot free: a block is fetched from whoever has it (moveUp).
// Past perPeerQueued the oldest of the announcer's heads waiting for a
// retry is given up for a new one: once replicas prune, a node back from a pause
// hears heads the announcer no longer has (fault harness seed 2008: 64
// such filled a peer's share, and its current head was dropped at every
// announcement, behind minutes of failing fetches).
const (
	prefetchWorkers = 8
	prefetchTimeout = 10 * time.Second
	prefetchQueue   = 1024 // heads waiting for a worker; past it they are dropped (counted)
	perPeerQueued   = 64   // heads of one announcer queued, in flight or waiting to retry; past it the oldest waiting for a retry is given up (counted), else the new one
	perPeerFetches  = 2    // heads of one announcer fetched at a time
	// ownFetches are this replica's own wants (holes, the blocks a walk
	// did not get) fetched at a time: once replicas prune, a hole may be
	// a block nobody holds any more, and its fetches, tried again while
	// the store is dirty, must leave workers to the announced heads (all 8
	// taken by 13 such holes, a node back from a pause fetched no head for
	// minutes: the fault harness's seed 1910).
	ownFetches = prefetchWorkers / 2
)

var prefetchRetries = []time.Duration{5 * time.Second, 30 * time.Second}

type prefetcher struct {
	dag       ipld.NodeGetter
	has       func(context.Context, cid.Cid) (bool, error)
	check     *checker // nil: every head goes to go-ds-crdt
	log       *slog.Logger
	slow      func(peer.ID, bool) // told of an announcer whose head is slow to come, and when it came (nil: nobody)
	slowAfter time.Duration
	value     func(key string) []byte                // values held for recipes (nil: recipes are not read)
	relay     func(cid.Cid, peer.ID)                 // told of a head from a stream whose block came, and the stream's peer (nil: nobody)
	heard     func(peer.ID, []cid.Cid)               // told of the heads of each announcement on the topic, and its announcer (nil: nobody)
	add       func(context.Context, ipld.Node) error // keeps a block built from a recipe
	counts    recipeCounts
	out       chan []byte   // heads ready for go-ds-crdt, one per message
	wake      chan struct{} // a head was queued or a fetch ended (one token)

	mu       sync.Mutex
	inflight map[cid.Cid]bool    // queued, being fetched or waiting for a retry
	queues   map[peer.ID][]fetch // heads waiting for a worker, by announcer
	turn     []peer.ID           // announcers with queued heads, in turn order
	queued   int                 // heads in queues
	held     map[peer.ID]int     // inflight heads by announcer
	active   map[peer.ID]int     // heads being fetched, by announcer
	later    []retry             // heads to try again (at most prefetchQueue)

	failed  atomic.Int64 // heads given up
	dropped atomic.Int64 // heads dropped because too many waited
}

type fetch struct {
	c      cid.Cid
	from   peer.ID // the announcer ("" for this replica's own wants)
	tries  int
	recipe *recipe // how to build the block from values held (nil: none came)
	direct bool    // announced on a stream: relayed on the topic once local (see direct.go)
}

type retry struct {
	f  fetch
	at time.Time
}

func newPrefetcher(dag ipld.NodeGetter, has func(context.Context, cid.Cid) (bool, error), check *checker, log *slog.Logger) *prefetcher {
	return &prefetcher{dag: dag, has: has, check: check, log: log, out: make(chan []byte), wake: make(chan struct{}, 1),
		inflight: map[cid.Cid]bool{}, queues: map[peer.ID][]fetch{}, held: map[peer.ID]int{}, active: map[peer.ID]int{}}
}

// start runs the reader and the workers until ctx ends; wg tracks them.
func (p *prefetcher) start(ctx context.Context, wg *sync.WaitGroup, sub *pubsub.Subscription) {
	wg.Add(2 + prefetchWorkers)
	go p.read(ctx, wg, sub)
	go p.retry(ctx, wg)
	for range prefetchWorkers {
		go p.work(ctx, wg)
	}
}

func (p *prefetcher) read(ctx context.Context, wg *sync.WaitGroup, sub *pubsub.Subscription) {
	defer wg.Done()
	for {
		msg, err := sub.Next(ctx)
		if err != nil {
			return
		}
		if !p.heads(ctx, announced(msg), false) {
			return
		}
	}
}

// readDirect takes the announcements that came on streams (see direct.go)
// until ctx ends.
func (p *prefetcher) readDirect(ctx context.Context, wg *sync.WaitGroup, in <-chan announcement) {
	defer wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-in:
			if !p.heads(ctx, a, true) {
				return
			}
		}
	}
}

// heads hands go-ds-crdt the heads of a that are local and queues the
// others to fetch; direct: a came on a stream. False once ctx ends.
func (p *prefetcher) heads(ctx context.Context, a announcement, direct bool) bool {
	var b pb.CRDTBroadcast
	if err := proto.Unmarshal(a.data, &b); err != nil {
		p.log.Debug("crdt: undecodable head announcement", "from", a.from, "err", err)
		return true
	}
	var recipes map[cid.Cid]*recipe
	if p.value != nil && !direct {
		var err error
		if recipes, err = recipesIn(a.data); err != nil {
			p.counts.malformed.Add(1)
		}
	}
	heads := make([]cid.Cid, 0, len(b.Heads))
	for _, h := range b.Heads {
		if c, err := cid.Cast(h.Cid); err == nil {
			heads = append(heads, c)
		}
	}
	if p.heard != nil && !direct {
		p.heard(a.from, heads)
	}
	for _, c := range heads {
		if ok, err := p.has(ctx, c); err == nil && ok {
			if p.refused(ctx, c, nil) {
				continue
			}
			if !p.forward(ctx, c) {
				return false
			}
			continue
		}
		p.enqueue(fetch{c: c, from: a.from, recipe: recipes[c], direct: direct})
	}
	return true
}

func (p *prefetcher) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// enqueue queues an announced head to fetch, unless it is queued or in
// flight.
func (p *prefetcher) enqueue(f fetch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inflight[f.c] {
		// Announced again: someone has it now (a cut healed, say), and it
		// is still the announcer's head. If it waits for a retry, the
		// retry is due at once; if it is queued, it goes first.
		for i := range p.later {
			if p.later[i].f.c == f.c {
				p.later[i].at = time.Time{}
				p.later[i].f = p.handOver(p.later[i].f, f)
			}
		}
		p.moveUp(f)
		return
	}
	if f.from != "" && p.held[f.from] >= perPeerQueued && !p.evictOldest(f.from) || p.queued >= prefetchQueue {
		p.dropped.Add(1)
		return
	}
	p.inflight[f.c] = true
	p.held[f.from]++
	p.push(f)
}

// moveUp puts a queued head that f announces again at the front of a
// queue: of f's announcer when moves says so (its own announcer's slots
// are all taken, perhaps by fetches nobody serves, each up to a fetch
// timeout, and f's has one free), else of the queue it is in. It moves
// only toward a free slot: the last to announce a head may be the one
// whose fetches nobody serves (after a heal every peer announces the same
// heads), and a peer that announces every head it hears must not pull
// other peers' heads behind its own. A recipe the head lacked is taken
// from f. p.mu held.
func (p *prefetcher) moveUp(f fetch) {
	for _, a := range p.turn {
		q := p.queues[a]
		i := slices.IndexFunc(q, func(g fetch) bool { return g.c == f.c })
		if i < 0 {
			continue
		}
		g := q[i]
		if g.recipe == nil {
			g.recipe = f.recipe
		}
		if !p.moves(a, f) {
			copy(q[1:i+1], q[:i])
			q[0] = g
			return
		}
		if len(q) == 1 {
			delete(p.queues, a)
			p.turn = slices.DeleteFunc(p.turn, func(b peer.ID) bool { return b == a })
		} else {
			p.queues[a] = slices.Delete(q, i, i+1)
		}
		p.transfer(a, f.from)
		g.from = f.from
		if len(p.queues[f.from]) == 0 {
			p.turn = append(p.turn, f.from)
		}
		p.queues[f.from] = append([]fetch{g}, p.queues[f.from]...)
		p.signal()
		return
	}
}

// handOver returns g, a head waiting for a retry that f announces again,
// as it is to be queued: under f's announcer when moveUp would move it
// there (g's announcer has every slot taken, f's has one free), with the
// count held moved along; else as it was. A recipe g lacked is taken from
// f. p.mu held.
func (p *prefetcher) handOver(g, f fetch) fetch {
	if g.recipe == nil {
		g.recipe = f.recipe
	}
	if p.moves(g.from, f) {
		p.transfer(g.from, f.from)
		g.from = f.from
	}
	return g
}

// moves reports whether a head of announcer a that f announces again goes
// to f's announcer: a has every fetch slot taken, f's announcer (a peer)
// has one free and holds fewer than perPeerQueued. p.mu held.
func (p *prefetcher) moves(a peer.ID, f fetch) bool {
	return a != f.from && f.from != "" && p.held[f.from] < perPeerQueued &&
		p.active[a] >= fetchSlots(a) && p.active[f.from] < perPeerFetches
}

// transfer moves one held head from announcer a to b. p.mu held.
func (p *prefetcher) transfer(a, b peer.ID) {
	if p.held[a]--; p.held[a] <= 0 {
		delete(p.held, a)
	}
	p.held[b]++
}

// fetchSlots is how many heads of announcer a are fetched at a time.
func fetchSlots(a peer.ID) int {
	if a == "" {
		return ownFetches
	}
	return perPeerFetches
}

// push appends f to its announcer's queue; p.mu held.
func (p *prefetcher) push(f fetch) {
	if len(p.queues[f.from]) == 0 {
		p.turn = append(p.turn, f.from)
	}
	p.queues[f.from] = append(p.queues[f.from], f)
	p.queued++
	p.signal()
}

// evictOldest makes room for a new head of an announcer that holds
// perPeerQueued: it gives up the oldest of its heads waiting for a retry
// (each failed once already), and reports whether there was one. A head
// an announcer no longer has (pruned, once replicas prune: a node back
// from a pause hears the heads announced meanwhile) fails three times in
// about a minute; the announcer's current heads must not be dropped for
// 64 such. p.mu held.
func (p *prefetcher) evictOldest(from peer.ID) bool {
	for i, r := range p.later {
		if r.f.from == from {
			p.later = append(p.later[:i:i], p.later[i+1:]...)
			p.forget(r.f)
			p.dropped.Add(1)
			return true
		}
	}
	return false
}

// requeue queues again a head that waited for a retry.
func (p *prefetcher) requeue(f fetch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.queued >= prefetchQueue {
		p.forget(f)
		p.dropped.Add(1)
		return
	}
	p.push(f)
}

// next takes the next head to fetch: from the first announcer in turn that
// has fewer than perPeerFetches in flight (ownFetches for this replica's
// own wants), which then goes last.
func (p *prefetcher) next() (fetch, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, a := range p.turn {
		if p.active[a] >= fetchSlots(a) {
			continue
		}
		q := p.queues[a]
		f := q[0]
		p.queued--
		p.active[a]++
		p.turn = append(p.turn[:i:i], p.turn[i+1:]...)
		if len(q) == 1 {
			delete(p.queues, a)
		} else {
			p.queues[a] = q[1:]
			p.turn = append(p.turn, a)
		}
		if p.queued > 0 {
			p.signal() // another worker may take the next
		}
		return f, true
	}
	return fetch{}, false
}

// forget ends a head's stay (fetched, given up or dropped); p.mu held.
func (p *prefetcher) forget(f fetch) {
	if !p.inflight[f.c] {
		return
	}
	delete(p.inflight, f.c)
	if p.held[f.from]--; p.held[f.from] <= 0 {
		delete(p.held, f.from)
	}
}

// end records that a fetch of f ended; done also forgets f.
func (p *prefetcher) end(f fetch, done bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.active[f.from]--; p.active[f.from] <= 0 {
		delete(p.active, f.from)
	}
	if done {
		p.forget(f)
	}
	p.signal() // its announcer may have more
}

func (p *prefetcher) work(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		f, ok := p.next()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
			}
			continue
		}
		if f.recipe != nil {
			if nd := p.build(ctx, f); nd != nil {
				if !p.arrived(ctx, f, nd) {
					return
				}
				continue
			}
		}
		fctx, cancel := context.WithTimeout(ctx, prefetchTimeout)
		var slow *slowTimer
		if p.slow != nil && f.from != "" {
			slow = p.startSlow(f.from)
		}
		nd, err := p.dag.Get(fctx, f.c)
		if slow != nil {
			slow.stop(err == nil)
		}
		cancel()
		if err == nil {
			p.counts.fetched.Add(1)
			if !p.arrived(ctx, f, nd) {
				return
			}
			continue
		}
		if ctx.Err() != nil {
			p.end(f, true)
			return
		}
		if f.tries >= len(prefetchRetries) {
			p.end(f, true)
			p.failed.Add(1)
			p.log.Debug("crdt: gave up fetching a head", "cid", f.c, "err", err)
			continue
		}
		p.mu.Lock()
		if len(p.later) < prefetchQueue {
			p.later = append(p.later, retry{fetch{c: f.c, from: f.from, tries: f.tries + 1, direct: f.direct}, time.Now().Add(prefetchRetries[f.tries])})
			p.mu.Unlock()
			p.end(f, false)
		} else {
			p.mu.Unlock()
			p.end(f, true)
			p.dropped.Add(1)
		}
	}
}

// arrived hands go-ds-crdt the head f whose block nd came (fetched or
// built), unless the checks refuse it; false once ctx ends.
func (p *prefetcher) arrived(ctx context.Context, f fetch, nd ipld.Node) bool {
	p.end(f, true)
	if p.refused(ctx, f.c, nd) {
		return true
	}
	if f.direct && p.relay != nil {
		p.relay(f.c, f.from)
	}
	return p.forward(ctx, f.c)
}

// build builds f's block from its recipe and the values held, and keeps
// it when it is the announced block; nil when it is not (counted), or a
// value is missing: then the block is fetched.
func (p *prefetcher) build(ctx context.Context, f fetch) ipld.Node {
	nd, ok, err := f.recipe.build(p.value)
	switch {
	case err != nil:
		p.counts.malformed.Add(1)
		return nil
	case !ok:
		p.counts.missing.Add(1)
		return nil
	case !nd.Cid().Equals(f.c):
		p.counts.mismatch.Add(1)
		return nil
	}
	if err := p.add(ctx, nd); err != nil {
		return nil
	}
	p.counts.rebuilt.Add(1)
	return nd
}

// slowTimer tells p.slow of an announcer whose fetch is slow, and then
// (only then) whether the block came after all.
type slowTimer struct {
	p     *prefetcher
	from  peer.ID
	t     *time.Timer
	mu    sync.Mutex
	fired bool
	done  bool
}

func (p *prefetcher) startSlow(from peer.ID) *slowTimer {
	s := &slowTimer{p: p, from: from}
	s.t = time.AfterFunc(p.slowAfter, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.done {
			s.fired = true
			p.slow(from, true)
		}
	})
	return s
}

// stop ends the timer; came says whether the block arrived.
func (s *slowTimer) stop(came bool) {
	s.t.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done = true
	if s.fired && came {
		s.p.slow(s.from, false)
	}
}

// retry queues again, once a second, the heads whose time has come.
func (p *prefetcher) retry(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			p.mu.Lock()
			var due []fetch
			kept := p.later[:0]
			for _, r := range p.later {
				if !r.at.After(now) {
					due = append(due, r.f)
				} else {
					kept = append(kept, r)
				}
			}
			p.later = kept
			p.mu.Unlock()
			for _, f := range due {
				p.requeue(f)
			}
		}
	}
}

// refused vets a head whose block is local (nd, or read from the
// blockstore when nil): a refused head never reaches go-ds-crdt.
func (p *prefetcher) refused(ctx context.Context, c cid.Cid, nd ipld.Node) bool {
	if p.check == nil {
		return false
	}
	if nd == nil {
		var err error
		if nd, err = p.dag.Get(ctx, c); err != nil {
			return false // go-ds-crdt will fetch it, through the check
		}
	}
	return p.check.vet(ctx, nd) != nil
}

// forward hands go-ds-crdt one head; false once ctx ends.
func (p *prefetcher) forward(ctx context.Context, c cid.Cid) bool {
	b, err := proto.Marshal(&pb.CRDTBroadcast{Heads: []*pb.Head{{Cid: c.Bytes()}}})
	if err != nil {
		return true
	}
	select {
	case p.out <- b:
		return true
	case <-ctx.Done():
		return false
	}
}

// wantHole asks for a block that a merged block links and go-ds-crdt never
// merged (see recover): handed over at once when it is local, else fetched
// like an announced head. False once ctx ends.
func (p *prefetcher) wantHole(ctx context.Context, c cid.Cid) bool {
	if ok, err := p.has(ctx, c); err == nil && ok {
		if p.refused(ctx, c, nil) {
			return true
		}
		return p.forward(ctx, c)
	}
	p.enqueue(fetch{c: c})
	return true
}

// refusedHole reports whether a local block is refused by the checker.
func (p *prefetcher) refusedHole(ctx context.Context, c cid.Cid) bool {
	if p.check == nil {
		return false
	}
	if ok, err := p.has(ctx, c); err != nil || !ok {
		return false
	}
	return p.refused(ctx, c, nil)
}
