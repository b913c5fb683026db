package node_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/causal"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
	"github.com/signalmesh/signalmesh/vclock"
)

// groupLease is the lease of the consumer group tests: failover in about a
// second.
const groupLease = time.Second

func groupCluster(t *testing.T, n int, mut func(i int, c *node.Config)) []*peerNode {
	return cluster(t, n, func(i int, c *node.Config) {
		c.Params.Lease = groupLease
		if mut != nil {
			mut(i, c)
		}
	})
}

// groupLog records which member handled which signal, in order.
type groupLog struct {
	mu        sync.Mutex
	by        map[string][]int    // signal id -> members that handled it
	bySubject map[string][]string // subject -> ids in the order handled
	subjectBy map[string]map[int]bool
	total     int
}

func newGroupLog() *groupLog {
	return &groupLog{by: map[string][]int{}, bySubject: map[string][]string{}, subjectBy: map[string]map[int]bool{}}
}

func (g *groupLog) handler(member int) node.Handler {
	return func(_ context.Context, s *signalmesh.Signal) error {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.by[s.ID] = append(g.by[s.ID], member)
		g.bySubject[s.Subject] = append(g.bySubject[s.Subject], s.ID)
		if g.subjectBy[s.Subject] == nil {
			g.subjectBy[s.Subject] = map[int]bool{}
		}
		g.subjectBy[s.Subject][member] = true
		g.total++
		return nil
	}
}

// counts: signals of want handled at least once, more than once, and
// handlings by member.
func (g *groupLog) counts(want []*signalmesh.Signal) (handled, dups int, per map[int]int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	per = map[int]int{}
	for _, s := range want {
		ms := g.by[s.ID]
		if len(ms) > 0 {
			handled++
		}
		dups += max(len(ms)-1, 0)
		for _, m := range ms {
			per[m]++
		}
	}
	return handled, dups, per
}

// leaveLease gives the clean-leave tests a 5 s lease: a leave hands off
// by its final mark, whatever the lease; with groupLease's 1 s (4 s
// without a renewal while connected), a renewal held up on a starved
// machine can make a peer drop a live member and take its share over:
// the lease's documented way, not the leave's (the likely cause of 22
// duplicates in one of 12 runs beside a fault-harness batch, with the
// leave acknowledged).
func leaveLease(_ int, c *node.Config) { c.Params.Lease = 5 * time.Second }

// joinFulfilment makes a member of group "fulfilment" (order.**, Hash) on
// each node, recording in a new log, and waits until every node sees them.
func joinFulfilment(t *testing.T, nodes []*peerNode) (*groupLog, []*node.Subscription) {
	t.Helper()
	log := newGroupLog()
	subs := make([]*node.Subscription, len(nodes))
	for i, n := range nodes {
		var err error
		if subs[i], err = n.Subscribe("order.**", log.handler(i), node.WithGroup("fulfilment")); err != nil {
			t.Fatal(err)
		}
	}
	awaitGroup(t, nodes, "fulfilment", len(nodes))
	return log, subs
}

// awaitGroup waits until every node sees the members of group live.
func awaitGroup(t *testing.T, nodes []*peerNode, group string, members int) {
	t.Helper()
	eventually(t, 20*time.Second, fmt.Sprintf("%d members of %s everywhere", members, group), func() bool {
		for _, n := range nodes {
			st, err := n.Status(context.Background())
			if err != nil || len(st.Groups[group]) != members {
				return false
			}
		}
		return true
	})
}

// awaitMarks waits until each member's progress mark covers total signals:
// each has judged every signal, so nothing more will be handled.
func awaitMarks(t *testing.T, members []*peerNode, total uint64) {
	t.Helper()
	eventually(t, 60*time.Second, fmt.Sprintf("members' marks at %d", total), func() bool {
		for _, n := range members {
			subs, _ := n.Subscriptions(context.Background())
			ok := false
			for _, s := range subs {
				if s.Peer == n.ID().String() && s.Group != "" && s.Mark.Sum() >= total {
					ok = true
				}
			}
			if !ok {
				return false
			}
		}
		return true
	})
}

// publishSpread publishes count signals of type typ, a third from each
// node in turn, in batches of 100; subject k%subjects of its publisher.
// It returns them and, per subject, its ids in publish order.
func publishSpread(t *testing.T, pubs []*peerNode, typ string, count, subjects int) ([]*signalmesh.Signal, map[string][]string) {
	t.Helper()
	ctx := context.Background()
	var all []*signalmesh.Signal
	order := map[string][]string{}
	for k := 0; k < count; k += 100 {
		p := (k / 100) % len(pubs)
		batch := make([]*signalmesh.Signal, 0, 100)
		for i := k; i < min(k+100, count); i++ {
			subj := fmt.Sprintf("p%d-s%d", p, i%subjects)
			s := mustSignal(t, typ, signalmesh.WithSubject(subj))
			batch = append(batch, s)
			order[subj] = append(order[subj], s.ID)
		}
		if err := pubs[p].Publish(ctx, batch...); err != nil {
			t.Fatal(err)
		}
		all = append(all, batch...)
	}
	return all, order
}

// Three members of a Hash group on three peers share 10,000 signals: each
// is handled once in all, every signal of one subject by one member, in
// the order published.
func TestGroupHashSharesWorkExactlyOnce(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 3, nil)
	log := newGroupLog()
	for i, n := range nodes {
		if _, err := n.Subscribe("order.**", log.handler(i), node.WithGroup("fulfilment"), node.WithStrategy(node.Hash)); err != nil {
			t.Fatal(err)
		}
	}
	awaitGroup(t, nodes, "fulfilment", 3)
	const total = 10000
	sigs, order := publishSpread(t, nodes, "order.created", total, 50)
	eventually(t, 60*time.Second, "every signal handled", func() bool { h, _, _ := log.counts(sigs); return h == total })
	awaitMarks(t, nodes, total)
	handled, dups, per := log.counts(sigs)
	t.Logf("handled %d, duplicates %d, per member %v", handled, dups, per)
	for _, n := range nodes {
		st, _ := n.Status(context.Background())
		t.Logf("%s: taken over %d, renewals %d (%d bytes), rejected %v", n.ID(), st.TakenOver, st.LeaseRenewals, st.LeaseBytes, st.Rejected)
	}
	if handled != total || dups != 0 {
		t.Fatalf("handled %d of %d, %d duplicates", handled, total, dups)
	}
	for m, c := range per {
		if c < total/6 {
			t.Errorf("member %d handled %d of %d: the hash spreads poorly", m, c, total)
		}
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	for subj, ids := range order {
		if len(log.subjectBy[subj]) != 1 {
			t.Errorf("subject %s handled by members %v", subj, log.subjectBy[subj])
		}
		if !slices.Equal(log.bySubject[subj], ids) {
			t.Errorf("subject %s handled out of publish order", subj)
		}
	}
	for _, n := range nodes {
		if st, _ := n.Status(context.Background()); st.Rejected["registry_entry"] != 0 || st.TakenOver != 0 {
			t.Errorf("%s: registry rejects %d, taken over %d", n.ID(), st.Rejected["registry_entry"], st.TakenOver)
		}
	}
}

// Balanced and LocalFirst share the work too, each signal once; LocalFirst
// keeps each signal on the member of the peer that published it.
func TestGroupBalancedAndLocalFirst(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 3, func(i int, c *node.Config) { c.Region = []string{"eu", "eu", "us"}[i] })
	bal, local := newGroupLog(), newGroupLog()
	for i, n := range nodes {
		if _, err := n.Subscribe("order.**", bal.handler(i), node.WithGroup("audit"), node.WithStrategy(node.Balanced)); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Subscribe("order.**", local.handler(i), node.WithGroup("ship"), node.WithStrategy(node.LocalFirst)); err != nil {
			t.Fatal(err)
		}
	}
	awaitGroup(t, nodes, "audit", 3)
	awaitGroup(t, nodes, "ship", 3)
	const total = 3000
	sigs, _ := publishSpread(t, nodes, "order.created", total, 10)
	for name, lg := range map[string]*groupLog{"balanced": bal, "local-first": local} {
		eventually(t, 60*time.Second, name+": every signal handled", func() bool { h, _, _ := lg.counts(sigs); return h == total })
	}
	awaitMarks(t, nodes, total)
	for name, lg := range map[string]*groupLog{"balanced": bal, "local-first": local} {
		handled, dups, per := lg.counts(sigs)
		t.Logf("%s: handled %d, duplicates %d, per member %v", name, handled, dups, per)
		if handled != total || dups != 0 {
			t.Errorf("%s: handled %d of %d, %d duplicates", name, handled, total, dups)
		}
	}
	// publishSpread publishes batch k on node k%3: LocalFirst handles it there.
	local.mu.Lock()
	defer local.mu.Unlock()
	for i, s := range sigs {
		if want := (i / 100) % 3; !slices.Equal(local.by[s.ID], []int{want}) {
			t.Fatalf("signal %d published on node %d handled by %v", i, want, local.by[s.ID])
		}
	}
}

// A member that leaves cleanly mid-stream hands its share over with no
// signal lost and none handled twice.
func TestGroupCleanLeaveHandsOff(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 3, leaveLease)
	log, subs := joinFulfilment(t, nodes)
	const half = 3000
	first, _ := publishSpread(t, nodes[:2], "order.created", half, 50)
	eventually(t, 30*time.Second, "the leaving member handles", func() bool { _, _, per := log.counts(first); return per[2] > 0 })
	if err := subs[2].Close(); err != nil { // its queue may hold signals it has not handled
		t.Fatal(err)
	}
	second, _ := publishSpread(t, nodes[:2], "order.created", half, 50)
	all := append(first, second...)
	eventually(t, 60*time.Second, "every signal handled", func() bool { h, _, _ := log.counts(all); return h == len(all) })
	awaitGroup(t, nodes, "fulfilment", 2)
	awaitMarks(t, nodes[:2], uint64(len(all)))
	handled, dups, per := log.counts(all)
	t.Logf("handled %d, duplicates %d, per member %v, taken over %d+%d", handled, dups, per, subs[0].Taken(), subs[1].Taken())
	if handled != len(all) || dups != 0 {
		t.Fatalf("handled %d of %d, %d duplicates", handled, len(all), dups)
	}
}

// A member that leaves cleanly leaves its final mark in the set for
// several leases, so that a replica whose copy of the set lags (a loaded
// machine) still reads it before a peer deletes the entry; then it is
// deleted. With the entry deleted after one lease, such a replica took
// the share over from an older mark and handled again what the member had
// handled (TestGroupCleanLeaveHandsOff: 16 duplicates in one CI run).
func TestGroupLeftEntryOutlivesALaggingRead(t *testing.T) {
	checkLeaks(t)
	const lease = 300 * time.Millisecond
	nodes := cluster(t, 2, func(i int, c *node.Config) { c.Params.Lease = lease })
	_, subs := joinFulfilment(t, nodes)
	key := subs[1].SetKey()
	if err := subs[1].Close(); err != nil {
		t.Fatal(err)
	}
	awaitGroup(t, nodes[:1], "fulfilment", 1)
	left := time.Now()
	// Three leases on, past the one lease a left entry used to stay: both
	// replicas still hold it (its owner's and the other's registrar both
	// read the set every lease/8 meanwhile).
	time.Sleep(3 * lease)
	for i, n := range nodes {
		if has, err := n.RegistryHas(context.Background(), key); err != nil || !has {
			t.Fatalf("node %d: the left entry is gone %v after the leave (err %v)", i, time.Since(left).Round(time.Millisecond), err)
		}
	}
	eventually(t, 30*time.Second, "the left entry deleted everywhere", func() bool {
		for _, n := range nodes {
			if has, err := n.RegistryHas(context.Background(), key); err != nil || has {
				return false
			}
		}
		return true
	})
	t.Logf("the left entry was deleted everywhere %v after the leave (lease %v)", time.Since(left).Round(time.Millisecond), lease)
}

// A member whose node dies mid-stream (no hand-off, no final mark): after
// its lease its share is handled by the others, none lost; the duplicates
// (what it handled after its last renewal) are counted by the survivors.
func TestGroupMemberDeathFailsOver(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 3, nil)
	log, subs := joinFulfilment(t, nodes)
	const third = 2000
	first, _ := publishSpread(t, nodes[:2], "order.created", third, 50)
	// The victim's progress reaches the others: it handled its share of
	// the first third, and its renewals say so.
	eventually(t, 30*time.Second, "the victim's mark at the first third, seen by the others", func() bool {
		subs, _ := nodes[0].Subscriptions(context.Background())
		for _, s := range subs {
			if s.Peer == nodes[2].ID().String() && s.Mark.Sum() >= third {
				return true
			}
		}
		return false
	})
	second, _ := publishSpread(t, nodes[:2], "order.created", third, 50)
	_, _, before := log.counts(first)
	eventually(t, 30*time.Second, "the victim handles some of the second third", func() bool { _, _, per := log.counts(second); return per[2] > 0 })
	died := time.Now()
	if err := nodes[2].CloseAsCrash(); err != nil {
		t.Fatal(err)
	}
	last, _ := publishSpread(t, nodes[:2], "order.created", third, 50)
	all := append(append(first, second...), last...)
	eventually(t, 60*time.Second, "every signal handled", func() bool { h, _, _ := log.counts(all); return h == len(all) })
	failover := time.Since(died)
	awaitMarks(t, nodes[:2], uint64(len(all)))
	handled, dups, per := log.counts(all)
	taken := subs[0].Taken() + subs[1].Taken()
	t.Logf("handled %d, duplicates %d, taken over %d, per member %v (the victim %d before its last known mark), all handled %v after the death",
		handled, dups, taken, per, before[2], failover.Round(time.Millisecond))
	if handled != len(all) {
		t.Fatalf("handled %d of %d", handled, len(all))
	}
	if int64(dups) > taken {
		t.Fatalf("%d duplicates, more than the %d signals taken over", dups, taken)
	}
	if dups > per[2]-before[2] {
		t.Fatalf("%d duplicates: more than the victim handled after its mark (%d)", dups, per[2]-before[2])
	}
}

// Members and their events: up when a peer's entry is live, suspected
// when it is live and unreachable, down when its lease runs out.
func TestMembersAndEvents(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 3, func(i int, c *node.Config) { c.Region = fmt.Sprint("r", i) })
	events, stop := nodes[0].WatchMembers(64)
	defer stop()
	// A peer whose entry was live before the watch began had its up event
	// before it (a CI run under -race saw only [suspected down]).
	var got []node.MemberEventKind
	for _, m := range nodes[0].Members() {
		if m.Peer == nodes[2].ID() {
			got = append(got, node.MemberUp)
		}
	}
	eventually(t, 20*time.Second, "two members", func() bool {
		ms := nodes[0].Members()
		return len(ms) == 2 && ms[0].Connected && ms[1].Connected
	})
	victim := nodes[2].ID()
	nodes[0].gater.Block(victim)
	_ = nodes[0].Disconnect(victim)
	nodes[1].gater.Block(victim)
	_ = nodes[1].Disconnect(victim)
	want := []node.MemberEventKind{node.MemberUp, node.MemberSuspected, node.MemberDown}
	timeout := time.After(30 * time.Second)
	for len(got) < len(want) {
		select {
		case ev := <-events:
			if ev.Peer == victim {
				if len(got) > 0 && got[len(got)-1] == ev.Kind {
					continue
				}
				got = append(got, ev.Kind)
				if ev.Region != "r2" {
					t.Errorf("event %v with region %q", ev.Kind, ev.Region)
				}
			}
		case <-timeout:
			t.Fatalf("events for the cut peer: %v, want %v", got, want)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events for the cut peer: %v, want %v", got, want)
	}
	if ms := nodes[0].Members(); len(ms) != 1 || ms[0].Peer != nodes[1].ID() {
		t.Fatalf("members after the cut: %+v", ms)
	}
}

// CanRoute and Routes answer for the whole mesh; WithLocal subscriptions
// stay out of the set.
func TestRoutesAcrossTheMesh(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 2, nil)
	noop := func(context.Context, *signalmesh.Signal) error { return nil }
	if _, err := nodes[1].Subscribe("payment.*", noop, node.WithGroup("payments")); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[1].Subscribe("audit.**", noop); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[1].Subscribe("**", noop, node.WithLocal()); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[1].Subscribe("x", noop, node.WithGroup("g"), node.WithLocal()); err == nil {
		t.Fatal("a local group member was accepted")
	}
	eventually(t, 20*time.Second, "node 0 routes payments and audits", func() bool {
		return nodes[0].CanRoute("payment.captured") && nodes[0].CanRoute("audit.x.y")
	})
	r := nodes[0].Routes("payment.captured")
	if len(r) != 1 || r[0].Group != "payments" || r[0].Strategy != "hash:subject" || len(r[0].Members) != 1 {
		t.Fatalf("routes %+v", r)
	}
	if nodes[0].CanRoute("user.created") {
		t.Fatal("user.created routes somewhere: the local subscription leaked")
	}
}

// Malformed entries in the subscription set, as a hostile member could
// write them, are refused and counted, deleted everywhere, and change
// nothing: the group goes on handling each signal once.
func TestRegistryRefusesMalformedEntries(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 3, nil)
	log := newGroupLog()
	for i, n := range nodes[:2] {
		if _, err := n.Subscribe("order.**", log.handler(i), node.WithGroup("g")); err != nil {
			t.Fatal(err)
		}
	}
	awaitGroup(t, nodes, "g", 2)
	ctx := context.Background()
	bad := nodes[2].ID().String()
	victim := nodes[0].ID().String()
	hostile := map[string]string{
		"/sub/" + bad + "/x":                            `{"peer":"` + bad + `","id":"x","pattern":"order..**","lease":1000000000}`,               // bad pattern
		"/sub/" + bad + "/y":                            `{"peer":"` + bad + `","id":"y","pattern":"**","group":"g","strategy":"nope","lease":1}`, // bad strategy
		"/sub/" + victim + "/z":                         `{"peer":"` + bad + `","id":"z","pattern":"**","lease":1000000000}`,                      // another's key
		"/sub/" + bad + "/w":                            `not json`,
		"/sub/" + bad + "/v":                            `{"peer":"` + bad + `","id":"v","pattern":"**","lease":100000000000000}`, // a lease of a day
		"/peer/not-a-peer-id":                           `{"peer":"not-a-peer-id","lease":1000000000}`,
		"/elsewhere/" + bad:                             `{}`,
		"/sub/" + bad + "/" + "big":                     `{"peer":"` + bad + `","id":"big","pattern":"**","lease":1000000000,"name":"` + strings.Repeat("x", 300<<10) + `"}`, // over 256 KiB
		"/sub/" + bad + "/g2":                           `{"peer":"` + bad + `","id":"g2","pattern":"**","group":"a/b","lease":1000000000}`,
		"/sub/" + bad + "/" + strings.Repeat("l", 1025): `{"peer":"` + bad + `","id":"` + strings.Repeat("l", 1025) + `","pattern":"**","lease":1000000000}`, // an id too long
		"/sub/" + bad + "/mark-x":                       `{"peer":"` + bad + `","id":"mark-x","pattern":"**","mark":{"x":"y"},"lease":1000000000}`,
		"/sub/" + bad + "/no-lease-x":                   `{"peer":"` + bad + `","id":"no-lease-x","pattern":"**"}`,
	}
	for k, v := range hostile {
		if err := nodes[2].RegistryPut(ctx, ds.NewKey(k), []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	refused := func() string {
		var out []string
		sum := int64(0)
		for _, n := range nodes {
			st, _ := n.Status(ctx)
			sum += st.Rejected["registry_entry"]
			for k := range hostile {
				if ok, _ := n.RegistryHas(ctx, ds.NewKey(k)); ok {
					out = append(out, fmt.Sprintf("%s holds %s", n.ID(), k))
				}
			}
		}
		if sum < int64(len(hostile)) { // a peer that reads an entry only once another deleted it never sees it
			out = append(out, fmt.Sprintf("refused %d of %d", sum, len(hostile)))
		}
		return strings.Join(out, "; ")
	}
	deadline := time.Now().Add(20 * time.Second)
	for left := refused(); left != ""; left = refused() {
		if time.Now().After(deadline) {
			t.Fatalf("malformed entries: %s", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
	sigs, _ := publishSpread(t, nodes, "order.created", 600, 10)
	eventually(t, 30*time.Second, "every signal handled", func() bool { h, _, _ := log.counts(sigs); return h == len(sigs) })
	awaitMarks(t, nodes[:2], uint64(len(sigs)))
	if handled, dups, _ := log.counts(sigs); handled != len(sigs) || dups != 0 {
		t.Fatalf("handled %d of %d, %d duplicates", handled, len(sigs), dups)
	}
	if st, _ := nodes[0].Status(ctx); len(st.Groups["g"]) != 2 || len(nodes[0].Routes("x")) != 0 {
		t.Fatalf("groups %v, routes of x %+v", st.Groups, nodes[0].Routes("x"))
	}
}

// A partition that splits a group: both sides handle what they get, and
// after the heal every signal has been handled (duplicates are the price
// of availability: a side that lost the other takes its share over), and
// counted.
func TestGroupPartitionBothSidesHandle(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 4, nil)
	log := newGroupLog()
	for i, n := range nodes {
		if _, err := n.Subscribe("order.**", log.handler(i), node.WithGroup("g")); err != nil {
			t.Fatal(err)
		}
	}
	awaitGroup(t, nodes, "g", 4)
	before, _ := publishSpread(t, nodes, "order.created", 400, 10)
	eventually(t, 30*time.Second, "the signals before the cut handled", func() bool { h, _, _ := log.counts(before); return h == len(before) })
	cut(nodes[:2], nodes[2:])
	a, _ := publishSpread(t, nodes[:2], "order.created", 1000, 10)
	b, _ := publishSpread(t, nodes[2:], "order.created", 1000, 10)
	eventually(t, 30*time.Second, "each side handles its own signals", func() bool {
		ha, _, _ := log.counts(a)
		hb, _, _ := log.counts(b)
		return ha == len(a) && hb == len(b)
	})
	heal(t, nodes)
	awaitGroup(t, nodes, "g", 4)
	all := append(append(before, a...), b...)
	awaitMarks(t, nodes, uint64(len(all)))
	handled, dups, per := log.counts(all)
	taken := int64(0)
	for _, n := range nodes {
		st, _ := n.Status(context.Background())
		taken += st.TakenOver
	}
	t.Logf("handled %d of %d, duplicates %d (counted at most %d), per member %v", handled, len(all), dups, taken, per)
	if handled != len(all) {
		t.Fatalf("handled %d of %d", handled, len(all))
	}
	if int64(dups) > taken {
		t.Fatalf("%d duplicates, more than the %d signals counted as handled for departed members", dups, taken)
	}
}

// A node that closes cleanly mid-stream takes its member out of the group
// first, with its final mark: the others hand its share over with no
// signal lost and none handled twice.
func TestGroupNodeCloseHandsOff(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 3, leaveLease)
	log := newGroupLog()
	for i, n := range nodes {
		if _, err := n.Subscribe("order.**", log.handler(i), node.WithGroup("fulfilment")); err != nil {
			t.Fatal(err)
		}
	}
	awaitGroup(t, nodes, "fulfilment", 3)
	const half = 3000
	first, _ := publishSpread(t, nodes[:2], "order.created", half, 50)
	eventually(t, 30*time.Second, "the leaving member handles", func() bool { _, _, per := log.counts(first); return per[2] > 0 })
	if err := nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	second, _ := publishSpread(t, nodes[:2], "order.created", half, 50)
	all := append(first, second...)
	eventually(t, 60*time.Second, "every signal handled", func() bool { h, _, _ := log.counts(all); return h == len(all) })
	awaitGroup(t, nodes[:2], "fulfilment", 2)
	awaitMarks(t, nodes[:2], uint64(len(all)))
	handled, dups, per := log.counts(all)
	t.Logf("handled %d, duplicates %d, per member %v", handled, dups, per)
	if handled != len(all) || dups != 0 {
		t.Fatalf("handled %d of %d, %d duplicates", handled, len(all), dups)
	}
}

// A member that joins mid-stream takes its share of what its node
// delivers from then on: nothing is lost; the duplicates of the join
// (signals handled before the others heard of it) are logged.
func TestGroupJoinMidStream(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 3, nil)
	log := newGroupLog()
	for i, n := range nodes[:2] {
		if _, err := n.Subscribe("order.**", log.handler(i), node.WithGroup("g")); err != nil {
			t.Fatal(err)
		}
	}
	awaitGroup(t, nodes, "g", 2)
	first, _ := publishSpread(t, nodes[:2], "order.created", 2000, 50)
	if _, err := nodes[2].Subscribe("order.**", log.handler(2), node.WithGroup("g")); err != nil {
		t.Fatal(err)
	}
	second, _ := publishSpread(t, nodes[:2], "order.created", 2000, 50)
	all := append(first, second...)
	eventually(t, 60*time.Second, "every signal handled", func() bool { h, _, _ := log.counts(all); return h == len(all) })
	awaitGroup(t, nodes, "g", 3)
	awaitMarks(t, nodes[:2], uint64(len(all)))
	handled, dups, per := log.counts(all)
	t.Logf("handled %d of %d, duplicates %d, per member %v", handled, len(all), dups, per)
	if handled != len(all) {
		t.Fatalf("handled %d of %d", handled, len(all))
	}
	if per[2] == 0 {
		t.Fatal("the new member took no share")
	}
}

// A group member stuck in its handler until the node's context ends does
// not hold Close up past Params.HandOff: the member leaves by its lease.
func TestNodeCloseWithBusyGroupMember(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 2, func(_ int, c *node.Config) { c.Params.HandOff = 200 * time.Millisecond })
	entered := make(chan struct{}, 1)
	busy := func(ctx context.Context, _ *signalmesh.Signal) error {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return ctx.Err()
	}
	if _, err := nodes[0].Subscribe("order.**", busy, node.WithGroup("g"), node.WithStrategy(node.LocalFirst)); err != nil {
		t.Fatal(err)
	}
	if err := nodes[0].Publish(context.Background(), mustSignal(t, "order.created")); err != nil {
		t.Fatal(err)
	}
	<-entered
	start := time.Now()
	if err := nodes[0].Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Close took %v with a busy member", d)
	}
}

// Two copies of one event (one (source, id), one content) published on
// two peers cut off from each other, as a client's retry on another peer
// does when it does not know the first try's outcome, are two signals to
// the group, each with its LocalFirst owner. A member that got the other
// member's copy first passes that over and then gets its own copy as a
// duplicate of it (causal.Release.Dup): if it only moved its cursor past
// that one, and the other member got the copies the other way round, no
// member would handle the event (fault-harness seed 12072: the owner of
// each copy had delivered the other copy first). Each member hands over
// the copy that is its own, unless it handled the event already.
func TestGroupCopiesOfOneEventHandled(t *testing.T) {
	checkLeaks(t)
	// P1 and N1 in region r1, P2 and N2 in r2; members on N1 and N2 only:
	// a copy published on P1 is N1's, one published on P2 is N2's. The
	// lease outlasts the cut: each member stays live in the other's view,
	// so no takeover hands a copy over.
	nodes := groupCluster(t, 4, func(i int, c *node.Config) {
		c.Region = []string{"r1", "r1", "r2", "r2"}[i]
		c.Params.Lease = 10 * time.Second
	})
	p1, n1, p2, n2 := nodes[0], nodes[1], nodes[2], nodes[3]
	log := newGroupLog()
	var subs []*node.Subscription
	for i, n := range []*peerNode{n1, n2} {
		sub, err := n.Subscribe("order.**", log.handler(i), node.WithGroup("ship"), node.WithStrategy(node.LocalFirst))
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	// What each node delivered (the first copy only: the other is a
	// duplicate); these also put P1's and P2's regions in the set.
	recs := make([]*recorder, len(nodes))
	for i, n := range nodes {
		recs[i] = newRecorder()
		if _, err := n.Subscribe("order.**", recs[i].handle); err != nil {
			t.Fatal(err)
		}
	}
	awaitGroup(t, nodes, "ship", 2)
	ctx := context.Background()
	ev := mustSignal(t, "order.created", signalmesh.WithSubject("o-1"))

	// Each member's node delivers first the copy that is the other's.
	cut([]*peerNode{p1, n2}, []*peerNode{p2, n1})
	if err := p1.Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "N2 delivers P1's copy", func() bool { return recs[3].count() == 1 })
	if err := p2.Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "N1 delivers P2's copy", func() bool { return recs[1].count() == 1 })
	for i, r := range []*recorder{recs[1], recs[3]} {
		got := r.snapshot()[0].Extensions[signalmesh.ExtPeer]
		if want := []*peerNode{p2, p1}[i].ID().String(); got != want {
			t.Fatalf("member %d's node delivered first the copy of %v, want %s's", i, got, want)
		}
	}

	// After the heal each gets its own copy, a duplicate.
	heal(t, nodes)
	awaitMarks(t, []*peerNode{n1, n2}, 2) // each has judged both copies
	handled, dups, per := log.counts([]*signalmesh.Signal{ev})
	t.Logf("handled %d, duplicates %d, per member %v", handled, dups, per)
	if handled != 1 {
		t.Fatal("no member of the group handled the event")
	}
	for m, c := range per {
		if c > 1 {
			t.Errorf("member %d handled the event %d times", m, c)
		}
	}
	// A second copy handed over is counted: Taken bounds the duplicates.
	if taken := subs[0].Taken() + subs[1].Taken(); int64(dups) > taken {
		t.Errorf("%d duplicates, %d counted in Taken", dups, taken)
	}
}

// A member that starts after its cursor holds two copies of one event in
// its backlog (a retry published on two peers): the copy the cursor
// covers was judged, the other is judged too, as live (see
// TestGroupCopiesOfOneEventHandled). With LocalFirst the copy published
// on the member's own node is its share: the backlog used to keep one
// copy per event and drop any copy of an event the cursor covered, so a
// member whose cursor covered the other copy (passed over as another's)
// never handled its own.
func TestGroupBacklogJudgesEachCopy(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 2, func(i int, c *node.Config) {
		c.Region = []string{"r1", "r2"}[i]
		c.Params.Lease = 10 * time.Second
	})
	a, b := nodes[0], nodes[1]
	recs := make([]*recorder, 2)
	for i, n := range nodes {
		recs[i] = newRecorder()
		if _, err := n.Subscribe("order.**", recs[i].handle); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	ev := mustSignal(t, "order.created", signalmesh.WithSubject("o-1"))
	cut([]*peerNode{a}, []*peerNode{b})
	for _, n := range nodes { // a copy on each side
		if err := n.Publish(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	heal(t, nodes)
	// Each delivers the other's copy (a duplicate) before a later signal
	// of the other's origin: a probe from each, delivered on the other.
	for i, n := range nodes {
		probe := mustSignal(t, "order.probe")
		if err := n.Publish(ctx, probe); err != nil {
			t.Fatal(err)
		}
		other := recs[1-i]
		eventuallyNodes(t, nodes, 20*time.Second, fmt.Sprintf("node %d's probe delivered on node %d", i, 1-i), func() bool {
			return slices.ContainsFunc(other.snapshot(), func(s *signalmesh.Signal) bool { return s.ID == probe.ID })
		})
	}
	// B's copy, as A's plain subscription saw it on B: its place.
	var bCopy *signalmesh.Signal
	for _, s := range recs[1].snapshot() {
		if s.ID == ev.ID {
			bCopy = s
		}
	}
	origin, seq := journal.Place(bCopy)
	if origin != causal.PeerRef(b.ID().String()) {
		t.Fatalf("node 1 recorded first a copy from %s", origin)
	}
	// A member on A whose cursor covers B's copy: it judged that copy (not
	// its share: LocalFirst gives it to B's side, had B a member) and
	// starts after it. A's own copy is its share.
	log := newGroupLog()
	if _, err := a.Subscribe("order.created", log.handler(0), node.WithGroup("ship"), node.WithStrategy(node.LocalFirst),
		node.WithStart(node.StartAfter(vclock.Clock{}.Set(b.ID().String(), seq)))); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the member on A handles its own copy", func() bool {
		h, _, _ := log.counts([]*signalmesh.Signal{ev})
		return h == 1
	})
	if _, dups, _ := log.counts([]*signalmesh.Signal{ev}); dups != 0 {
		t.Fatalf("handled the event %d times more", dups)
	}
}

// Each member's node delivers its own copy first (the plain
// retry across a cut): both members handle the event, and the second
// handling is counted in Taken, which bounds the duplicates (a review
// found it uncounted: duplicates 1, Taken 0).
func TestGroupCopiesOwnFirstCounted(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 4, func(i int, c *node.Config) {
		c.Region = []string{"r1", "r1", "r2", "r2"}[i]
		c.Params.Lease = 10 * time.Second
	})
	p1, n1, p2, n2 := nodes[0], nodes[1], nodes[2], nodes[3]
	log := newGroupLog()
	var subs []*node.Subscription
	for i, n := range []*peerNode{n1, n2} {
		sub, err := n.Subscribe("order.**", log.handler(i), node.WithGroup("ship"), node.WithStrategy(node.LocalFirst))
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	recs := make([]*recorder, len(nodes))
	for i, n := range nodes {
		recs[i] = newRecorder()
		if _, err := n.Subscribe("order.**", recs[i].handle); err != nil {
			t.Fatal(err)
		}
	}
	awaitGroup(t, nodes, "ship", 2)
	ctx := context.Background()
	ev := mustSignal(t, "order.created", signalmesh.WithSubject("o-1"))
	cut([]*peerNode{p1, n1}, []*peerNode{p2, n2}) // each member's side holds its own copy's publisher
	if err := p1.Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	if err := p2.Publish(ctx, ev); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "both members' nodes deliver", func() bool { return recs[1].count() == 1 && recs[3].count() == 1 })
	heal(t, nodes)
	awaitMarks(t, []*peerNode{n1, n2}, 2)
	handled, dups, per := log.counts([]*signalmesh.Signal{ev})
	taken := subs[0].Taken() + subs[1].Taken()
	t.Logf("handled %d, duplicates %d, per member %v, taken %d", handled, dups, per, taken)
	if int64(dups) > taken {
		t.Errorf("%d duplicates, %d counted in Taken", dups, taken)
	}
}

// A member that leaves cleanly and comes back (its subscription closed and
// made again, the node up all along; or its process restarted) resumes
// from its final mark: its node delivered, meanwhile, signals that the
// other members handled as theirs (the member was gone). Those are not
// its to handle again. Before the members told each other what they took
// over, the returning member handled its share of all of them a second
// time (fault-harness seed 12643).
func TestGroupMemberReturnsAfterLeave(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 3, nil)
	log, subs := joinFulfilment(t, nodes)
	first, _ := publishSpread(t, nodes, "order.created", 600, 50)
	eventually(t, 30*time.Second, "the first part handled", func() bool { h, _, _ := log.counts(first); return h == len(first) })
	if err := subs[2].Close(); err != nil {
		t.Fatal(err)
	}
	awaitGroup(t, nodes[:2], "fulfilment", 2)
	away, _ := publishSpread(t, nodes, "order.created", 600, 50)
	eventually(t, 30*time.Second, "what was published while it was away handled", func() bool { h, _, _ := log.counts(away); return h == len(away) })
	awaitMarks(t, nodes[:2], uint64(len(first)+len(away)))
	// The others announce what they took over with their renewals (every
	// lease/3): it comes back once its node has them (within a renewal,
	// it may handle again what they took in the last one, counted there).
	eventually(t, 10*time.Second, "the others' renewals since the takeover on its node", func() bool {
		subs, _ := nodes[2].Subscriptions(context.Background())
		k := 0
		for _, s := range subs {
			if s.Group != "" && s.Peer != nodes[2].ID().String() && s.Mark.Sum() >= uint64(len(first)+len(away)) {
				k++
			}
		}
		return k == 2
	})
	var err error
	if subs[2], err = nodes[2].Subscribe("order.**", log.handler(2), node.WithGroup("fulfilment")); err != nil {
		t.Fatal(err)
	}
	awaitGroup(t, nodes, "fulfilment", 3)
	back, _ := publishSpread(t, nodes, "order.created", 600, 50)
	all := append(append(append([]*signalmesh.Signal(nil), first...), away...), back...)
	eventually(t, 30*time.Second, "every signal handled", func() bool { h, _, _ := log.counts(all); return h == len(all) })
	awaitMarks(t, nodes, uint64(len(all)))
	_, awayDups, _ := log.counts(away)
	handled, dups, per := log.counts(all)
	_, _, backPer := log.counts(back)
	t.Logf("handled %d, duplicates %d (%d of what was published while it was away), per member %v; after its return %v; taken over %d+%d", handled, dups, awayDups, per, backPer, subs[0].Taken(), subs[1].Taken())
	if handled != len(all) || dups != 0 {
		t.Fatalf("handled %d of %d, %d duplicates", handled, len(all), dups)
	}
	if backPer[2] == 0 {
		t.Fatal("the returning member handled nothing published after its return")
	}
}

// Node.Close returns once every connected peer with members in the group
// has received its members' leaves (their final marks): with the host
// closed right after the leave was gossiped, a peer that had not received
// it took the share over from the last renewal's mark and handled again
// what the member had handled since (TestGroupNodeCloseHandsOff: 18
// duplicates in one of 8 runs on a loaded machine).
func TestGroupNodeCloseAwaitsTheLeave(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 3, nil)
	_, subs := joinFulfilment(t, nodes)
	key := subs[2].SetKey()
	if err := nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes[:2] {
		if !n.HeardLeft(key) {
			t.Errorf("node %d had not received the leave when Close returned", i)
		}
	}
}

// A member that comes back passes over only the signals another member
// says it handled for it, place by place: a member that judged some of
// them later, with the returning one already in its view, passed those
// over as the returning member's, which must handle them. (Announced as
// the highest sequence per origin, they were skipped by both: 110 of 600
// lost, found by a review.)
func TestGroupReturnWithALaggingMemberLosesNothing(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 3, nil)
	log := newGroupLog()
	var stall atomic.Bool
	gate := make(chan struct{})
	lagging := func(ctx context.Context, s *signalmesh.Signal) error {
		if stall.Load() {
			select {
			case <-gate:
			case <-ctx.Done():
			}
		}
		return log.handler(1)(ctx, s)
	}
	subs := make([]*node.Subscription, 3)
	for i, h := range []node.Handler{log.handler(0), lagging, log.handler(2)} {
		var err error
		if subs[i], err = nodes[i].Subscribe("order.**", h, node.WithGroup("fulfilment")); err != nil {
			t.Fatal(err)
		}
	}
	awaitGroup(t, nodes, "fulfilment", 3)
	first, _ := publishSpread(t, nodes, "order.created", 300, 50)
	eventually(t, 30*time.Second, "the first part handled", func() bool { h, _, _ := log.counts(first); return h == len(first) })
	if err := subs[2].Close(); err != nil {
		t.Fatal(err)
	}
	awaitGroup(t, nodes[:2], "fulfilment", 2)
	stall.Store(true) // member 1 judges the rest later, by the view it has then
	away, _ := publishSpread(t, nodes, "order.created", 600, 50)
	total := uint64(len(first) + len(away))
	eventually(t, 30*time.Second, "member 0's takeovers announced to node 2", func() bool {
		subs, _ := nodes[2].Subscriptions(context.Background())
		for _, s := range subs {
			if s.Group != "" && s.Peer == nodes[0].ID().String() && s.Mark.Sum() >= total && len(s.Took) > 0 {
				return true
			}
		}
		return false
	})
	var err error
	if subs[2], err = nodes[2].Subscribe("order.**", log.handler(2), node.WithGroup("fulfilment")); err != nil {
		t.Fatal(err)
	}
	awaitGroup(t, nodes, "fulfilment", 3)
	awaitMarks(t, nodes[2:], total)
	close(gate)
	awaitMarks(t, nodes, total)
	handled, dups, per := log.counts(away)
	st, _ := nodes[2].Status(context.Background())
	t.Logf("handled %d of %d, duplicates %d, per member %v; passed back %d", handled, len(away), dups, per, st.PassedBack)
	if handled != len(away) {
		t.Fatalf("%d of %d handled by no member", len(away)-handled, len(away))
	}
}

// A member that leaves ahead of another (it judged signals the other has
// not yet reached) handled its share of them: the lagging member, judging
// them after the leave by the new view, passes over those the departed
// member's final mark covers and that were its share, rather than handling
// them again.
func TestGroupLeaveAheadOfALaggingMember(t *testing.T) {
	checkLeaks(t)
	nodes := groupCluster(t, 3, leaveLease)
	log := newGroupLog()
	gate := make(chan struct{})
	lagging := func(ctx context.Context, s *signalmesh.Signal) error {
		select {
		case <-gate:
		case <-ctx.Done():
		}
		return log.handler(1)(ctx, s)
	}
	for i, h := range []node.Handler{log.handler(0), lagging, log.handler(2)} {
		if _, err := nodes[i].Subscribe("order.**", h, node.WithGroup("fulfilment")); err != nil {
			t.Fatal(err)
		}
	}
	awaitGroup(t, nodes, "fulfilment", 3)
	first, _ := publishSpread(t, nodes[:2], "order.created", 600, 50)
	// Members 0 and 2 have judged every signal; member 1 is held in its
	// handler at its first one.
	awaitMarks(t, []*peerNode{nodes[0], nodes[2]}, uint64(len(first)))
	if err := nodes[2].Close(); err != nil {
		t.Fatal(err)
	}
	awaitGroup(t, nodes[:2], "fulfilment", 2) // node 1's member judges the rest without member 2
	close(gate)
	second, _ := publishSpread(t, nodes[:2], "order.created", 600, 50)
	all := append(first, second...)
	eventually(t, 30*time.Second, "every signal handled", func() bool { h, _, _ := log.counts(all); return h == len(all) })
	awaitMarks(t, nodes[:2], uint64(len(all)))
	handled, dups, per := log.counts(all)
	t.Logf("handled %d, duplicates %d, per member %v", handled, dups, per)
	if handled != len(all) || dups != 0 {
		t.Fatalf("handled %d of %d, %d duplicates", handled, len(all), dups)
	}
}
