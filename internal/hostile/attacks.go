package hostile

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"time"

	ipfslite "github.com/hsanjuan/ipfs-lite"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/ipfs/go-ds-crdt/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/chaos"
	"github.com/signalmesh/signalmesh/crdt"
	"github.com/signalmesh/signalmesh/internal/seal"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

// forge sends, about every 2.5 s, from the forgers in turn, a signal in a
// victim's name at its next sequence: signed by the forger's key, unsigned,
// or framed after a signal of the forger's own.
func (a *attacker) forge(ctx context.Context) error {
	var ms []*member
	defer func() {
		for _, m := range ms {
			m.close()
		}
	}()
	for i := range forgers {
		m, err := a.start(ctx, fmt.Sprintf("forger-%d", i), nil)
		if err != nil {
			return err
		}
		ms = append(ms, m)
		if _, err := m.join(a.topic("signals")); err != nil {
			return err
		}
	}
	rng := mrand.New(mrand.NewPCG(a.cfg.Seed, 0xf06e))
	kinds := []string{chaos.AttackForgedSig, chaos.AttackUnsigned, chaos.AttackMixed}
	return every(ctx, rng, 2500*time.Millisecond, func(k int) error {
		m := ms[k%len(ms)]
		victim := a.cfg.Victims[rng.IntN(len(a.cfg.Victims))]
		t := m.topics[a.topic("signals")]
		if !m.reaches(t) {
			a.unreached(chaos.AttackForgedSig)
			return nil // its host is down or cut: next turn
		}
		kind := kinds[(k/len(ms)+k)%len(kinds)]
		forged := a.signal(fmt.Sprintf("hostile-forged-%d-%d", a.cfg.Seed, k), victim, a.next(victim))
		msg, err := a.wire(m, forged, kind != chaos.AttackUnsigned)
		if err != nil {
			return err
		}
		if kind == chaos.AttackMixed {
			own, err := a.wire(m, a.signal(fmt.Sprintf("hostile-own-%d-%d", a.cfg.Seed, k), m.id, 0), true)
			if err != nil {
				return err
			}
			msg = frame(own, msg)
		}
		if err := t.Publish(ctx, msg); err != nil {
			return err
		}
		a.sent(kind, 1)
		return nil
	})
}

// flood publishes, in frames every 200 ms over 80 % of the run, Flood
// signals of its own, signed, whose sequences skip numbers (1 never
// comes): none becomes ready before DepWait gives its predecessor up. It
// also reads the signals topic, to learn the honest origins' sequences.
func (a *attacker) flood(ctx context.Context) error {
	m, err := a.start(ctx, "flooder", nil)
	if err != nil {
		return err
	}
	defer m.close()
	t, err := m.join(a.topic("signals"))
	if err != nil {
		return err
	}
	sub, err := t.Subscribe()
	if err != nil {
		return err
	}
	read := make(chan struct{})
	defer func() { sub.Cancel(); <-read }()
	go func() { // ends when sub is cancelled or ctx ends
		defer close(read)
		for {
			msg, err := sub.Next(ctx)
			if err != nil {
				return
			}
			a.noteTops(msg.Data)
		}
	}()
	rng := mrand.New(mrand.NewPCG(a.cfg.Seed, 0xf100d))
	ticks := max(int(a.cfg.Duration*8/10/(200*time.Millisecond)), 1)
	per := max(a.cfg.Flood/ticks, 1)
	var seq uint64 = 1
	done := 0
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for done < a.cfg.Flood {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if !m.reaches(t) {
			a.unreached(chaos.AttackFlood)
			continue
		}
		batch := make([]*signalmesh.Signal, 0, per)
		for j := 0; j < per && done+j < a.cfg.Flood; j++ {
			seq += 1 + uint64(rng.IntN(2))
			batch = append(batch, a.signal(fmt.Sprintf("hostile-flood-%d-%d", a.cfg.Seed, done+j), m.id, seq))
		}
		if err := node.SignBatch(a.cfg.Mesh, m.key, batch); err != nil {
			return err
		}
		wires := make([][]byte, len(batch))
		for i, s := range batch {
			if wires[i], err = s.MarshalBinary(); err != nil {
				return err
			}
		}
		if err := t.Publish(ctx, frame(wires...)); err != nil {
			return nil
		}
		done += len(batch)
		a.sent(chaos.AttackFlood, len(batch))
	}
	return nil
}

// herald announces bogus journal heads about every 3 s, in turn: without
// a seal, sealed with a CID that cannot name a block, sealed with 16
// blocks that exist nowhere.
func (a *attacker) herald(ctx context.Context) error {
	m, err := a.start(ctx, "herald", nil)
	if err != nil {
		return err
	}
	defer m.close()
	topic := a.topic("journal")
	t, err := m.join(topic)
	if err != nil {
		return err
	}
	rng := mrand.New(mrand.NewPCG(a.cfg.Seed, 0x4ead))
	kinds := []string{chaos.AttackHeadsOpen, chaos.AttackHeadsBadCid, chaos.AttackHeadsAbsent}
	return every(ctx, rng, 3*time.Second, func(k int) error {
		kind := kinds[k%len(kinds)]
		if !m.reaches(t) {
			a.unreached(kind)
			return nil
		}
		var heads []cid.Cid
		switch kind {
		case chaos.AttackHeadsBadCid:
			heads = append(heads, randomCid(cid.Raw))
		default:
			for range 16 {
				heads = append(heads, randomCid(cid.DagProtobuf))
			}
		}
		var msg pb.CRDTBroadcast
		for _, h := range heads {
			msg.Heads = append(msg.Heads, &pb.Head{Cid: h.Bytes()})
		}
		body, err := proto.Marshal(&msg)
		if err != nil {
			return err
		}
		if kind != chaos.AttackHeadsOpen {
			if body, err = seal.Seal(m.key, topic, body); err != nil {
				return err
			}
		}
		if err := t.Publish(ctx, body); err != nil {
			return err
		}
		a.sent(kind, 1)
		return nil
	})
}

// randomCid is a CIDv1 of codec over random bytes (SHA2-256).
func randomCid(codec uint64) cid.Cid {
	h, _ := multihash.Sum(randomBytes(32), multihash.SHA2_256, -1)
	return cid.NewCidV1(codec, h)
}

// journal runs a go-ds-crdt replica of the mesh's journal (same namespace
// and topic as a node's, its announcements sealed) and, from 30 % of the
// run on, about every 10 % of it, writes a block honest replicas must
// refuse: an entry in a victim's name at its next place signed by this
// key; a signal of its own at a victim's place; another value for a
// victim's entry; a tombstone of one. The last two need the victim's
// entries synced here: they wait until they are.
func (a *attacker) journal(ctx context.Context) error {
	store := dssync.MutexWrap(ds.NewMapDatastore())
	var repl *crdt.Replica
	m, err := a.start(ctx, "journal", func(m *member) error {
		dag, err := ipfslite.New(ctx, store, nil, m.h, nil, &ipfslite.Config{ReprovideInterval: -1})
		if err != nil {
			return err
		}
		repl, err = crdt.Open(store, dag, m.ps, crdt.Params{Namespace: ds.NewKey("/mesh/" + a.cfg.Mesh + "/journal"),
			Topic: a.topic("journal"), Has: dag.HasBlock, Self: m.id, Key: m.key,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		return err
	})
	if err != nil {
		return err
	}
	defer m.close()
	defer repl.Close()
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(a.cfg.Duration * 3 / 10):
	}
	rng := mrand.New(mrand.NewPCG(a.cfg.Seed, 0x10c))
	kinds := []string{chaos.AttackJournalSig, chaos.AttackJournalKey, chaos.AttackOverwrite, chaos.AttackTombstone}
	first := rng.IntN(len(kinds))
	return every(ctx, rng, a.cfg.Duration/10, func(k int) error {
		kind := kinds[(first+k)%len(kinds)]
		victim := a.cfg.Victims[rng.IntN(len(a.cfg.Victims))]
		if len(m.ps.ListPeers(a.topic("journal"))) == 0 {
			// Nobody would hear of the block, nor fetch it from here: a
			// block made now is not an attack sent (seed 12504: its
			// bootstrap peers killed or cut, 5 blocks counted as sent
			// that no honest node ever saw).
			a.unreached(chaos.AttackJournalSig)
			return nil
		}
		before := repl.InternalStats(ctx).Heads
		if err := a.write(ctx, repl, m, kind, victim, k); err != nil {
			return nil // nothing to write yet (no entry synced)
		}
		after := repl.InternalStats(ctx).Heads
		made := false
		for _, h := range after {
			if !slices.Contains(before, h) {
				made = true
				a.mu.Lock()
				a.rep.Blocks = append(a.rep.Blocks, h.String())
				a.mu.Unlock()
			}
		}
		if made {
			a.sent(kind, 1)
		}
		return nil
	})
}

// errNothing: no entry of the victim is synced here yet.
var errNothing = fmt.Errorf("hostile: no entry to attack yet")

// write makes one journal attack of kind on victim.
func (a *attacker) write(ctx context.Context, repl *crdt.Replica, m *member, kind string, victim peer.ID, k int) error {
	ref := causal.PeerRef(victim.String())
	id := fmt.Sprintf("hostile-journal-%d-%d", a.cfg.Seed, k)
	switch kind {
	case chaos.AttackJournalSig:
		seq := max(a.next(victim), a.top(ctx, repl, ref)+1)
		v, err := a.wire(m, a.signal(id, victim, seq), true)
		if err != nil {
			return err
		}
		return repl.Put(ctx, journal.SignalKey(ref, seq), v)
	case chaos.AttackJournalKey:
		v, err := a.wire(m, a.signal(id, m.id, 1), true)
		if err != nil {
			return err
		}
		return repl.Put(ctx, journal.SignalKey(ref, a.top(ctx, repl, ref)+1000), v)
	}
	top := a.top(ctx, repl, ref)
	if top == 0 {
		return errNothing
	}
	key := journal.SignalKey(ref, top)
	if kind == chaos.AttackTombstone {
		return repl.Delete(ctx, key)
	}
	v, err := a.wire(m, a.signal(id, victim, top), true)
	if err != nil {
		return err
	}
	return repl.Put(ctx, key, v)
}

// top is the highest sequence of the origin ref in the replica.
func (a *attacker) top(ctx context.Context, repl *crdt.Replica, ref string) uint64 {
	res, err := repl.Query(ctx, query.Query{KeysOnly: true})
	if err != nil {
		return 0
	}
	defer res.Close()
	var top uint64
	for r := range res.Next() {
		if r.Error != nil {
			break
		}
		if rr, seq, ok := journal.ParseSignalKey(ds.RawKey(r.Key)); ok && rr == ref {
			top = max(top, seq)
		}
	}
	return top
}
