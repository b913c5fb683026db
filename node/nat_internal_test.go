package node

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
)

// fakeConn is a connection planLink looks at: its address, direction,
// opening time and whether it is closed.
type fakeConn struct {
	network.Conn
	name   string
	addr   ma.Multiaddr
	stat   network.ConnStats
	closed bool
}

func (c *fakeConn) RemoteMultiaddr() ma.Multiaddr { return c.addr }
func (c *fakeConn) Stat() network.ConnStats       { return c.stat }
func (c *fakeConn) IsClosed() bool                { return c.closed }

// TestPlanLink: relayed connections to a peer connected directly are all
// closed; of two relayed connections and no direct one, the side with the
// lower peer id closes the newer and the other side closes none; a peer
// reached through one relayed connection keeps it, and it is the one a
// hole punch is tried on.
func TestPlanLink(t *testing.T) {
	low, high := peer.ID("\x01low"), peer.ID("\x02high")
	t0 := time.Unix(1000, 0)
	conn := func(name, addr string, dir network.Direction, opened time.Time) *fakeConn {
		return &fakeConn{name: name, addr: ma.StringCast(addr), stat: network.ConnStats{Stats: network.Stats{Direction: dir, Opened: opened}}}
	}
	direct := conn("direct", "/ip4/10.0.0.2/tcp/4001", network.DirOutbound, t0.Add(3*time.Second))
	old := conn("old", "/ip4/10.0.0.9/tcp/4001/p2p/12D3KooWGzBv5kN8R6u2i1UoeVQb3s9PNwE7AtgVQyWmBzrUQ8Ud/p2p-circuit", network.DirInbound, t0)
	young := conn("young", "/ip4/10.0.0.9/tcp/4001/p2p/12D3KooWGzBv5kN8R6u2i1UoeVQb3s9PNwE7AtgVQyWmBzrUQ8Ud/p2p-circuit", network.DirOutbound, t0.Add(time.Second))
	closedDirect := conn("closed", "/ip4/10.0.0.2/tcp/4001", network.DirOutbound, t0)
	closedDirect.closed = true
	names := func(cs []network.Conn) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.(*fakeConn).name)
		}
		return out
	}
	for _, tc := range []struct {
		what      string
		self, p   peer.ID
		conns     []network.Conn
		shut      []string
		relayLeft string
	}{
		{"direct and two relayed", high, low, []network.Conn{young, direct, old}, []string{"young", "old"}, ""},
		{"two relayed, self lower", low, high, []network.Conn{young, old}, []string{"young"}, ""},
		{"two relayed, self higher", high, low, []network.Conn{young, old}, nil, ""},
		{"one relayed and a closed direct one", low, high, []network.Conn{closedDirect, old}, nil, "old"},
		{"direct only", low, high, []network.Conn{direct}, nil, ""},
		{"none", low, high, nil, nil, ""},
	} {
		shut, relay := planLink(tc.self, tc.p, tc.conns)
		left := ""
		if relay != nil {
			left = relay.(*fakeConn).name
		}
		if got := names(shut); !slices.Equal(got, tc.shut) || left != tc.relayLeft {
			t.Errorf("%s: closes %v, leaves %q relayed; want %v, %q", tc.what, got, left, tc.shut, tc.relayLeft)
		}
	}
}

// TestPunchTracer: each hole punch's end is recorded per peer on one line,
// a direct dial that fails is not (a hole punch follows), and the record
// keeps maxPunched peers, dropping the oldest.
func TestPunchTracer(t *testing.T) {
	var nt nat
	nt.punched = map[peer.ID]punch{}
	tr := (*punchTracer)(&nt)
	p := peer.ID("p")
	for _, tc := range []struct {
		evt  any
		want string
	}{
		{&holepunch.ProtocolErrorEvt{Error: "stream reset"}, "protocol: stream reset"},
		{&holepunch.DirectDialEvt{Success: false, Error: "refused"}, "protocol: stream reset"},
		{&holepunch.EndHolePunchEvt{Success: false, Error: "all dials failed\n  * [/ip4/10.0.0.2/tcp/4001] i/o timeout"},
			"dials failed: all dials failed * [/ip4/10.0.0.2/tcp/4001] i/o timeout"},
		{&holepunch.StartHolePunchEvt{}, "dials failed: all dials failed * [/ip4/10.0.0.2/tcp/4001] i/o timeout"},
		{&holepunch.EndHolePunchEvt{Success: true}, "direct"},
	} {
		tr.Trace(&holepunch.Event{Remote: p, Evt: tc.evt})
		if got := nt.punched[p].outcome; got != tc.want {
			t.Errorf("after %T: %q, want %q", tc.evt, got, tc.want)
		}
	}
	now := time.Now()
	clear(nt.punched)
	for i := range maxPunched {
		nt.punched[peer.ID(fmt.Sprint(i))] = punch{at: now.Add(time.Duration(i-maxPunched) * time.Second), outcome: "direct"}
	}
	tr.Trace(&holepunch.Event{Remote: "new", Evt: &holepunch.EndHolePunchEvt{Success: true}})
	if _, ok := nt.punched["0"]; ok || len(nt.punched) != maxPunched || nt.punched["new"].outcome != "direct" {
		t.Errorf("%d peers recorded, the oldest kept: %v, the new one %+v", len(nt.punched), ok, nt.punched["new"])
	}
}

// TestDialingCancel: a peer's dial in flight is cancelled when the peer
// connects; a dial's end forgets only its own record.
func TestDialingCancel(t *testing.T) {
	var d dialing
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	first := d.start("p", cancel1)
	d.cancel("p")
	if ctx1.Err() == nil {
		t.Fatal("the dial in flight was not cancelled")
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	second := d.start("p", cancel2)
	d.done("p", first) // the first dial ends after the second began
	d.cancel("p")
	if ctx2.Err() == nil {
		t.Fatal("the second dial was forgotten when the first ended")
	}
	d.done("p", second)
	d.cancel("other") // nothing in flight: nothing happens
}

// TestObservedAddrsAnnouncedWithoutRelays: a node with no relays announces
// the addresses its peers observed it at (a one-to-one NAT's); a node
// with relays does not (behind a NAT, they are for hole punching only).
func TestObservedAddrsAnnouncedWithoutRelays(t *testing.T) {
	observed := ma.StringCast("/ip4/203.0.113.7/tcp/4001")
	relay := peer.AddrInfo{ID: "12D3KooWGzBv5kN8R6u2i1UoeVQb3s9PNwE7AtgVQyWmBzrUQ8Ud", Addrs: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/1")}}
	for _, tc := range []struct {
		relays []peer.AddrInfo
		want   bool
	}{{nil, true}, {[]peer.AddrInfo{relay}, false}} {
		n, err := New(context.Background(), Config{Mesh: "announce", Relays: tc.relays, Params: Params{HandOff: -1}})
		if err != nil {
			t.Fatal(err)
		}
		n.nat.mu.Lock()
		n.nat.observed = append(n.nat.observed, observed)
		n.nat.mu.Unlock()
		got := slices.ContainsFunc(n.announceAddrs(), observed.Equal)
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("with %d relays: observed address announced %v, want %v", len(tc.relays), got, tc.want)
		}
	}
}

// TestCoolsDown: losing a direct connection keeps discovery away from the
// peer for a while (a hub that trims); losing a relayed one does not (its
// relay went away, most often).
func TestCoolsDown(t *testing.T) {
	direct := ma.StringCast("/ip4/10.0.0.2/tcp/4001")
	relayed := ma.StringCast("/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWNai8xar84cd2cBsNSTbpV88T8WYnaeEYDbcATqBKeMjz/p2p-circuit")
	if !coolsDown(direct) || coolsDown(relayed) {
		t.Fatalf("coolsDown: direct %v, relayed %v; want true, false", coolsDown(direct), coolsDown(relayed))
	}
}
