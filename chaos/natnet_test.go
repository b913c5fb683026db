package chaos

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/signalmesh/signalmesh/internal/netns"
)

// Every node is placed once: the public ones first, the edges behind two
// port-preserving routers and, from four edges, one behind a symmetric
// router.
func TestLayoutNAT(t *testing.T) {
	for n := 3; n <= 9; n++ {
		l := layoutNAT(n)
		wantPub := 1
		if n >= 7 {
			wantPub = 2
		}
		if len(l.public) != wantPub || !slices.Equal(l.public, []int{0, 1}[:wantPub]) {
			t.Fatalf("%d nodes: public %v", n, l.public)
		}
		seen := map[int]int{}
		for _, i := range l.public {
			seen[i]++
		}
		sym := 0
		for k, s := range l.sites {
			if len(s.nodes) == 0 {
				t.Fatalf("%d nodes: site %d is empty: %+v", n, k, l.sites)
			}
			for _, i := range s.nodes {
				seen[i]++
				if l.site(i) != k {
					t.Fatalf("%d nodes: site(%d) = %d, want %d", n, i, l.site(i), k)
				}
			}
			if s.symmetric {
				sym++
				if len(s.nodes) != 1 {
					t.Fatalf("%d nodes: %d behind the symmetric router", n, len(s.nodes))
				}
			}
		}
		if wantSym := n-wantPub >= 4; (sym == 1) != wantSym || sym > 1 {
			t.Fatalf("%d nodes: %d symmetric routers", n, sym)
		}
		if len(l.sites)-sym != 2 {
			t.Fatalf("%d nodes: %d port-preserving routers, want 2", n, len(l.sites)-sym)
		}
		for i := 0; i < n; i++ {
			if seen[i] != 1 {
				t.Fatalf("%d nodes: node %d placed %d times: %+v", n, i, seen[i], l)
			}
		}
		for a := 0; a < n; a++ {
			for b := 0; b < n; b++ {
				want := l.site(b) < 0 || l.site(a) == l.site(b)
				if l.reach(a, b) != want {
					t.Fatalf("%d nodes: reach(%d, %d) = %v", n, a, b, !want)
				}
			}
		}
	}
	l := layoutNAT(5)
	for _, c := range []struct {
		a, b int
		path string
	}{{1, 2, "lan"}, {1, 3, "nat"}, {2, 3, "nat"}, {1, 4, "symmetric"}, {3, 4, "symmetric"}} {
		if got := l.path(c.a, c.b); got != c.path {
			t.Errorf("5 nodes: path(%d, %d) = %s, want %s", c.a, c.b, got, c.path)
		}
	}
}

// A cut fills the receiver's chain with a drop per sender's mark, and a
// heal empties every chain.
func TestCutRules(t *testing.T) {
	rules := cutRules(4, [][2]int{{0, 1}, {2, 1}, {1, 3}, {0, 1}})
	want := []string{
		"*filter\n-F smcut\nCOMMIT\n",
		"*filter\n-F smcut\n-A smcut -m dscp --dscp 1 -j DROP\n-A smcut -m dscp --dscp 3 -j DROP\nCOMMIT\n",
		"*filter\n-F smcut\nCOMMIT\n",
		"*filter\n-F smcut\n-A smcut -m dscp --dscp 2 -j DROP\nCOMMIT\n",
	}
	if !slices.Equal(rules, want) {
		t.Fatalf("cut rules:\n%q\nwant\n%q", rules, want)
	}
	for i, r := range cutRules(4, nil) {
		if r != want[0] {
			t.Fatalf("heal, node %d: %q", i, r)
		}
	}
}

// What a cut means for relayed circuits: a relay re-sends a circuit as
// its own, so a cut pair's circuit through a relay is cut only when the
// relay is cut from one of the two. Every cut the harness draws does so,
// but a bridge cut whose bridge node is a relay (which is what a bridge
// is: the sides reach each other through it alone).
func TestRelayLeaks(t *testing.T) {
	if got := relayLeaks([][2]int{{1, 2}, {2, 1}}, []int{0}); len(got) != 2 {
		t.Fatalf("a cut pair a relay reaches on both sides: leaks %v, want both directions", got)
	}
	if got := relayLeaks([][2]int{{1, 2}, {0, 2}}, []int{0}); len(got) != 0 {
		t.Fatalf("relay cut from the receiver: leaks %v", got)
	}
	bridges := 0
	for n := 3; n <= 9; n++ {
		relays := layoutNAT(n).public
		for seed := uint64(1); seed <= 300; seed++ {
			for _, f := range Plan(seed, n, 20*time.Second, nil, false) {
				pairs := faultPairs(n, f)
				leaks := relayLeaks(pairs, relays)
				switch {
				case f.Kind == Bridge && slices.Contains(relays, f.Node):
					if len(leaks) == 0 {
						t.Fatalf("%d nodes, seed %d: a bridge on relay %d leaks nothing: %v", n, seed, f.Node, f)
					}
					bridges++
				case len(leaks) > 0:
					t.Fatalf("%d nodes, seed %d: %v: a relay carries the cut pairs %v", n, seed, f, leaks)
				}
			}
		}
	}
	if bridges == 0 {
		t.Fatal("no bridge on a relay drawn")
	}
}

// The NAT topology's cuts stop packets on each path between two nodes:
// on a LAN, from an edge to a public node through its NAT and back, and
// between two edges across two NATs by a hole punch (UDP, both sides
// sending from one port); a heal lets them through again. The
// management link carries the harness's connections to the API and
// nothing between nodes. Namespaces only (root, ip, iptables).
func TestNATNetCuts(t *testing.T) {
	if !netnsAvailable() || !netns.HasIptables() {
		t.Skip("needs network namespaces and iptables (root)")
	}
	nn, err := newNATNet(5) // 0 public; 1, 2 behind r0; 3 behind r1; 4 behind r2 (symmetric)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := nn.close(); err != nil {
			t.Error(err)
		}
		if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), nn.link("")) {
			t.Errorf("namespaces left:\n%s", out)
		}
		if out, _ := exec.Command("ip", "-o", "link", "show").Output(); strings.Contains(string(out), nn.link("")) {
			t.Errorf("links left:\n%s", out)
		}
	}()
	cut := func(pairs ...[2]int) {
		t.Helper()
		if err := nn.cut(t.Context(), pairs, nil); err != nil {
			t.Fatal(err)
		}
	}
	// TCP from a to b's listen address (node b's namespace, port 4001).
	var lns []net.Listener
	for i := 0; i < nn.n; i++ {
		var ln net.Listener
		if err := inNS(nn.ns(i), func() (err error) { ln, err = net.Listen("tcp", nn.ip(i)+":4001"); return err }); err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		go func() { // ends when the listener closes
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	// dial connects from node from's namespace; a connection expected to
	// fail is given 300 ms (a dropped SYN times out), one expected to
	// work 5 s (a loaded machine).
	dial := func(from int, addr string, want bool) error {
		wait := 300 * time.Millisecond
		if want {
			wait = 5 * time.Second
		}
		return inNS(nn.ns(from), func() error {
			c, err := net.DialTimeout("tcp", addr, wait)
			if err == nil {
				c.Close()
			}
			return err
		})
	}
	tcp := func(a, b int, want bool) {
		t.Helper()
		if err := dial(a, nn.ip(b)+":4001", want); (err == nil) != want {
			t.Fatalf("node %d to node %d: %v, want connected %v", a, b, err, want)
		}
	}
	tcp(1, 2, true) // a LAN
	tcp(1, 0, true) // through r0's NAT
	tcp(4, 0, true) // through the symmetric one
	tcp(0, 1, false)
	tcp(1, 3, false) // private addresses behind another NAT
	cut([2]int{1, 2})
	tcp(1, 2, false)
	tcp(2, 1, false) // its answers do not get back either
	cut([2]int{0, 1})
	tcp(1, 0, false) // the public node's answers are dropped at 1
	tcp(2, 0, true)  // its LAN neighbour is not cut
	cut([2]int{1, 0})
	tcp(1, 0, false)
	tcp(1, 2, true)
	cut()
	tcp(1, 0, true)

	// A UDP hole punch between 1 (behind r0) and 3 (behind r1): each
	// sends from port 5000 to the other's router, whose port-preserving
	// mapping keeps 5000.
	var conns []*net.UDPConn
	for _, i := range []int{1, 3} {
		var c *net.UDPConn
		if err := inNS(nn.ns(i), func() (err error) {
			c, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(nn.ip(i)), Port: 5000})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	to := []*net.UDPAddr{{IP: net.ParseIP(nn.wanIP(1)), Port: 5000}, {IP: net.ParseIP(nn.wanIP(0)), Port: 5000}}
	// heard reports whether conns[k] hears the other side while both
	// send every 20 ms: within 5 s when it should (a loaded machine),
	// within 1 s when it should not.
	heard := func(k int, want bool) bool {
		t.Helper()
		wait := time.Second
		if want {
			wait = 5 * time.Second
		}
		deadline := time.Now().Add(wait)
		buf := make([]byte, 16)
		for time.Now().Before(deadline) {
			for j, c := range conns {
				if _, err := c.WriteToUDP([]byte("punch"), to[j]); err != nil {
					t.Fatal(err)
				}
			}
			_ = conns[k].SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			for {
				_, _, err := conns[k].ReadFromUDP(buf)
				if err == nil {
					return true
				}
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatal(err)
				}
				break
			}
		}
		return false
	}
	if !heard(0, true) || !heard(1, true) {
		t.Fatal("no hole punch between nodes 1 and 3")
	}
	cut([2]int{1, 3})
	drain := func(c *net.UDPConn) { // what came before the cut
		buf := make([]byte, 16)
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		for {
			if _, _, err := c.ReadFromUDP(buf); err != nil {
				return
			}
		}
	}
	drain(conns[1])
	if heard(1, false) {
		t.Fatal("node 3 hears node 1 through the hole punch with 1 -> 3 cut")
	}
	if !heard(0, true) {
		t.Fatal("node 1 no longer hears node 3 with only 1 -> 3 cut")
	}
	cut()
	if !heard(1, true) {
		t.Fatal("node 3 does not hear node 1 after the heal")
	}

	// The management link: the harness reaches a node's API port there;
	// a node cannot open a connection over it, nor reach another port.
	var api net.Listener
	if err := inNS(nn.ns(1), func() (err error) { api, err = net.Listen("tcp", nn.api(1)); return err }); err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	go func() { // ends when the listener closes
		for {
			c, err := api.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if c, err := net.DialTimeout("tcp", nn.api(1), 5*time.Second); err != nil {
		t.Fatalf("the harness to node 1's API: %v", err)
	} else {
		c.Close()
	}
	if err := dial(2, nn.api(1), false); err == nil {
		t.Fatal("node 2 reached node 1's API over the management link")
	}
	if _, err := net.DialTimeout("tcp", nn.mgmtIP(1)+":4001", 300*time.Millisecond); err == nil {
		t.Fatal("the management link carries a connection to the libp2p port")
	}
}

// inNS runs f on a thread in network namespace ns: the sockets it makes
// belong to ns. The thread is not reused (it ends with the goroutine).
func inNS(ns string, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes when this goroutine ends
		fd, err := os.Open("/run/netns/" + ns)
		if err != nil {
			done <- err
			return
		}
		defer fd.Close()
		if err := unix.Setns(int(fd.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %v", ns, err)
			return
		}
		done <- f()
	}()
	return <-done
}
