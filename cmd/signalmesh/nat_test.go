//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh/chaos"
	"github.com/signalmesh/signalmesh/internal/netns"
)

// natNet is the NAT topology: a public network (a bridge) with a relay
// node and three NAT routers; behind each router a private network with
// edge nodes. Every address is one the test makes in its own namespaces:
// 10.231.0.0/24 public, 10.231.1.0/24 to 10.231.3.0/24 private.
type natNet struct {
	t      testing.TB
	prefix string
	exe    string
	dir    string
}

func (n *natNet) ns(name string) string { return n.prefix + name }

func (n *natNet) must(err error) {
	n.t.Helper()
	if err != nil {
		n.t.Fatal(err)
	}
}

// natRouter is a private network behind a NAT router: its namespace, its
// edges' namespaces, and whether it maps every flow to a port of its own.
type natRouter struct {
	name      string
	edges     []string
	symmetric bool
}

// The routers: r1 and r2 as Linux MASQUERADE does by default, keeping a
// flow's source port when it is free and reusing a host's mapping for its
// later flows from the same port (endpoint-independent mapping), so hole
// punching works across them; r3 with --random-fully, a fresh random port
// for every flow (endpoint-dependent, "symmetric"), so the port its edge
// was observed at is not the one its hole punch comes from and a hole
// punch across it fails. Each router lets in from the public side only the
// packets of flows a private host opened, as a home router does (netns.Router
// says why hole punching needs that).
var natRouters = []natRouter{
	{name: "r1", edges: []string{"a1", "a2"}},
	{name: "r2", edges: []string{"b1", "b2"}},
	{name: "r3", edges: []string{"c1"}, symmetric: true},
}

// build makes the namespaces pub (the relay), the routers and their
// edges; t.Cleanup removes them.
func (n *natNet) build() {
	br := n.prefix + "br"
	n.t.Cleanup(func() {
		_ = netns.IP("netns", "del", n.ns("pub"))
		for _, r := range natRouters {
			_ = netns.IP("netns", "del", n.ns(r.name))
			for _, e := range r.edges {
				_ = netns.IP("netns", "del", n.ns(e))
			}
		}
		_ = netns.IP("link", "del", br)
	})
	n.must(netns.Bridge("", br, ""))
	n.must(netns.Join(n.ns("pub"), "eth0", "10.231.0.10/24", "", br, n.prefix+"vp"))
	for i, r := range natRouters {
		rns := n.ns(r.name)
		n.must(netns.Join(rns, "eth0", fmt.Sprintf("10.231.0.%d/24", 21+i), "", br, n.prefix+"v"+r.name))
		// The private side: a bridge inside the router's namespace.
		n.must(netns.Bridge(rns, "lan", fmt.Sprintf("10.231.%d.1/24", i+1)))
		n.must(netns.Router(rns, "eth0", "lan", fmt.Sprintf("10.231.%d.0/24", i+1), r.symmetric))
		for j, e := range r.edges {
			n.must(netns.Join(n.ns(e), "eth0", fmt.Sprintf("10.231.%d.%d/24", i+1, 10+j), rns, "lan", n.prefix+"v"+e))
			n.must(netns.IP("-n", n.ns(e), "route", "add", "default", "via", fmt.Sprintf("10.231.%d.1", i+1)))
		}
	}
}

// proc is a node process in a namespace.
type proc struct {
	name, ns, id, record string
	cmd                  *exec.Cmd
}

// start runs `signalmesh node` in namespace name (its API on the
// namespace's own loopback) and waits until it serves.
func (n *natNet) start(name string, args ...string) *proc {
	n.t.Helper()
	p := &proc{name: name, ns: n.ns(name), record: filepath.Join(n.dir, name+".jsonl")}
	argv := append([]string{"ip", "netns", "exec", p.ns, n.exe, "node", "-mesh", "nat", "-http", "127.0.0.1:7070",
		"-listen", "/ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1", "-record", p.record,
		"-log-level", "warn", "-discover", "1s"}, args...)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(os.Environ(), "SIGNALMESH_TEST_RUN=1")
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, err := os.Create(filepath.Join(n.dir, name+".log"))
	n.must(err)
	p.cmd.Stderr = logf
	out, err := p.cmd.StdoutPipe()
	n.must(err)
	n.must(p.cmd.Start())
	n.t.Cleanup(func() {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		_ = p.cmd.Wait()
		logf.Close()
		if n.t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			n.t.Logf("%s's log:\n%s", name, b)
		}
	})
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "signalmesh node "); ok && p.id == "" {
			p.id, _, _ = strings.Cut(rest, ":")
		}
		if strings.HasPrefix(strings.TrimSpace(line), "http:") {
			go func() { // drain: ends when the process exits
				for sc.Scan() {
				}
			}()
			return p
		}
	}
	n.t.Fatalf("%s did not start", name)
	return nil
}

// cli runs a client command of this binary inside p's namespace.
func (n *natNet) cli(p *proc, args ...string) ([]byte, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", p.ns, n.exe}, args...)...)
	cmd.Env = append(os.Environ(), "SIGNALMESH_TEST_RUN=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %v: %w: %s", p.name, args, err, stderr.String())
	}
	return out, nil
}

type natStatus struct {
	Node struct {
		Peers int
		Links []struct {
			Peer   string
			Direct bool
			Addr   string
			Punch  string
		}
	} `json:"node"`
}

func (n *natNet) status(p *proc) (natStatus, error) {
	var st natStatus
	out, err := n.cli(p, "status", "-node", "http://127.0.0.1:7070")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(out, &st)
}

// digest is p's journal digest and size ("DIGEST COUNT"), "" when p does
// not answer.
func (n *natNet) digest(p *proc) string {
	out, err := n.cli(p, "digest", "-node", "http://127.0.0.1:7070")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// edgeLink is how two edges reach each other, as both of them report it.
type edgeLink struct {
	sides, direct int    // how many of the two report the link, and report it direct
	addr          string // the address of the connection in use (a direct one if any)
	punch         string // the last hole punch's outcome, as either side recorded it
}

func (l edgeLink) String() string {
	k := "relayed"
	if l.direct > 0 {
		k = "direct"
	}
	s := k + " " + l.addr
	if l.sides < 2 {
		s += " (reported by one side only)"
	}
	if l.punch != "" {
		s += "; hole punch: " + l.punch
	}
	return s
}

// edgeLinks reports each pair of edges that is connected, keyed "a1-b2"
// (names in order).
func (n *natNet) edgeLinks(edges []*proc, names map[string]string) map[string]edgeLink {
	out := map[string]edgeLink{}
	for _, p := range edges {
		st, err := n.status(p)
		if err != nil {
			continue
		}
		for _, l := range st.Node.Links {
			q := names[l.Peer]
			if q == "" || q == "pub" {
				continue
			}
			pair := min(p.name, q) + "-" + max(p.name, q)
			e := out[pair]
			e.sides++
			if l.Direct {
				e.direct++
				e.addr = l.Addr
			} else if e.direct == 0 {
				e.addr = l.Addr
			}
			if chaos.PunchRank(l.Punch) > chaos.PunchRank(e.punch) {
				e.punch = l.Punch
			}
			out[pair] = e
		}
	}
	return out
}

// recorded is the set of signal types p's persistent subscription recorded.
func recorded(p *proc) map[string]bool {
	got := map[string]bool{}
	b, _ := os.ReadFile(p.record)
	for _, line := range bytes.Split(b, []byte("\n")) {
		var s struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(line, &s) == nil && s.Type != "" {
			got[s.Type] = true
		}
	}
	return got
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return time.Since(start)
}

// TestNATTopology: a relay node on a public network; three private
// networks, each behind a NAT router (iptables MASQUERADE, inbound only for
// the flows a private host opened): a1 and a2 behind r1, b1 and b2 behind
// r2, both endpoint-independent mappings, and c1 behind r3, which maps each
// flow to a random port of its own. The edges know only the relay's
// address. All six converge. Then each pair of edges is reported, direct
// or relayed: edges on one private network connect directly, edges behind
// r1 and r2 become direct by hole punching (DCUtR), and c1's links stay
// relayed once a hole punch with each of its peers has failed. Then the
// relay is cut off the public network: a signal published on an edge
// behind r1 reaches the edges behind r2 and the other way round, and the
// journals of the four converge, with no relay in between. Skipped where
// network namespaces cannot be made (not root, no ip or iptables
// command); package node's loopback tests still cover discovery
// (TestDiscoveryBeyondBootstrap) and limits there, not relaying.
func TestNATTopology(t *testing.T) {
	if testing.Short() {
		t.Skip("builds network namespaces and starts six node processes")
	}
	prefix := fmt.Sprintf("smn%d", os.Getpid()%100000)
	if !netns.Available(prefix + "probe") {
		t.Skip("network namespaces unavailable (needs root and the ip command)")
	}
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("no iptables command (Debian package iptables; .ci/run installs it)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	n := &natNet{t: t, prefix: prefix, exe: exe, dir: t.TempDir()}
	n.build()
	pub := n.start("pub", "-relay")
	relay := "/ip4/10.231.0.10/tcp/4001/p2p/" + pub.id
	var edges []*proc
	for _, r := range natRouters {
		for _, e := range r.edges {
			edges = append(edges, n.start(e, "-bootstrap", relay, "-relays", relay))
		}
	}
	all := append([]*proc{pub}, edges...)
	start := time.Now() // the last node started
	for _, p := range all {
		if _, err := n.cli(p, "publish", "-node", "http://127.0.0.1:7070", "-type", "nat."+p.name); err != nil {
			t.Fatal(err)
		}
	}
	took := waitFor(t, 60*time.Second, "every node recorded every node's signal", func() bool {
		for _, p := range all {
			if len(recorded(p)) < len(all) {
				return false
			}
		}
		return true
	})
	t.Logf("%d nodes converged %v after the last publish", len(all), took.Round(time.Millisecond))

	// How each edge reaches the others: a hole punch with c1 fails when
	// its dials time out (seconds).
	names := map[string]string{}
	for _, p := range all {
		names[p.id] = p.name
	}
	var links map[string]edgeLink
	var punched time.Duration // when every link among a1, a2, b1, b2 was direct
	settled := func() bool {
		links = n.edgeLinks(edges, names)
		done := true
		for i, p := range edges {
			for _, q := range edges[i+1:] {
				l := links[p.name+"-"+q.name]
				switch {
				case p.name[0] == 'c' || q.name[0] == 'c':
					if l.sides < 2 || l.direct > 0 || chaos.PunchRank(l.punch) != 2 {
						done = false
					}
				case l.direct < 2, p.name[0] != q.name[0] && chaos.PunchRank(l.punch) != 3:
					return false // across r1 and r2: direct by a hole punch
				}
			}
		}
		if punched == 0 {
			punched = time.Since(start)
		}
		return done
	}
	deadline := time.Now().Add(60 * time.Second)
	ok := settled()
	for !ok && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		ok = settled()
	}
	for _, pair := range slices.Sorted(maps.Keys(links)) {
		t.Logf("edge link %s: %v", pair, links[pair])
	}
	if !ok {
		t.Fatalf("after 60 s, want the links among a1, a2, b1, b2 direct (across r1 and r2 by a hole punch) and c1's relayed after a hole punch whose dials failed")
	}
	t.Logf("the links across r1 and r2 were all direct %v after the last node started; c1's all relayed, each after a hole punch whose dials failed, %v after it",
		punched.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	// Cut the relay off the public network and publish on each side of it.
	n.must(netns.IP("-n", pub.ns, "link", "set", "eth0", "down"))
	byName := map[string]*proc{}
	for _, p := range edges {
		byName[p.name] = p
	}
	four := []*proc{byName["a1"], byName["a2"], byName["b1"], byName["b2"]}
	cut := time.Now()
	for _, p := range []*proc{byName["a1"], byName["b2"]} {
		if _, err := n.cli(p, "publish", "-node", "http://127.0.0.1:7070", "-type", "nat.cut."+p.name); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "a1's and b2's signals on a1, a2, b1, b2 without the relay", func() bool {
		for _, p := range four {
			if got := recorded(p); !got["nat.cut.a1"] || !got["nat.cut.b2"] {
				return false
			}
		}
		return true
	})
	t.Logf("with the relay cut off, a1's and b2's signals reached a1, a2, b1 and b2 in %v", time.Since(cut).Round(time.Millisecond))
	// Their journals hold the same signals: the six published before the
	// cut and the two after it.
	want := fmt.Sprint(len(all) + 2)
	var digests []string
	waitFor(t, 30*time.Second, "the journals of a1, a2, b1, b2 converging on "+want+" entries", func() bool {
		digests = digests[:0]
		for _, p := range four {
			digests = append(digests, n.digest(p))
		}
		_, count, _ := strings.Cut(digests[0], " ")
		return count == want && slices.Equal(digests, slices.Repeat(digests[:1], len(digests)))
	})
	t.Logf("their journals converged %v after the cut: %s", time.Since(cut).Round(time.Millisecond), digests[0])
}
