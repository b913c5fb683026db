//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh/internal/netns"
)

// natNet is the NAT topology: a public network (a bridge) with a relay
// node and two NAT routers; behind each router a private network with two
// edge nodes. Every address is one the test makes in its own namespaces:
// 10.231.0.0/24 public, 10.231.1.0/24 and 10.231.2.0/24 private.
type natNet struct {
	t      *testing.T
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

// build makes the namespaces pub (the relay), r1, r2 (routers), a1, a2
// behind r1 and b1, b2 behind r2; t.Cleanup removes them.
func (n *natNet) build() {
	br := n.prefix + "br"
	n.t.Cleanup(func() {
		for _, s := range []string{"pub", "r1", "r2", "a1", "a2", "b1", "b2"} {
			_ = netns.IP("netns", "del", n.ns(s))
		}
		_ = netns.IP("link", "del", br)
	})
	n.must(netns.IP("link", "add", br, "type", "bridge"))
	n.must(netns.IP("link", "set", br, "up"))
	// veth joins namespace ns (as dev) to the bridge br (in root, or in
	// namespace brNS when set).
	veth := func(ns, dev, addr, brNS, brName, hostEnd string) {
		n.must(netns.IP("netns", "add", ns))
		n.must(netns.IP("link", "add", hostEnd, "type", "veth", "peer", "name", hostEnd+"p"))
		n.must(netns.IP("link", "set", hostEnd+"p", "netns", ns))
		n.must(netns.IP("-n", ns, "link", "set", hostEnd+"p", "name", dev))
		n.must(netns.IP("-n", ns, "addr", "add", addr, "dev", dev))
		n.must(netns.IP("-n", ns, "link", "set", dev, "up"))
		n.must(netns.IP("-n", ns, "link", "set", "lo", "up"))
		if brNS != "" {
			n.must(netns.IP("link", "set", hostEnd, "netns", brNS))
			n.must(netns.IP("-n", brNS, "link", "set", hostEnd, "master", brName, "up"))
		} else {
			n.must(netns.IP("link", "set", hostEnd, "master", brName, "up"))
		}
	}
	veth(n.ns("pub"), "eth0", "10.231.0.10/24", "", br, n.prefix+"vp")
	for i, r := range []string{"r1", "r2"} {
		rns := n.ns(r)
		veth(rns, "eth0", fmt.Sprintf("10.231.0.%d/24", 21+i), "", br, n.prefix+"v"+r)
		// The private side: a bridge inside the router's namespace.
		n.must(netns.IP("-n", rns, "link", "add", "lan", "type", "bridge"))
		n.must(netns.IP("-n", rns, "addr", "add", fmt.Sprintf("10.231.%d.1/24", i+1), "dev", "lan"))
		n.must(netns.IP("-n", rns, "link", "set", "lan", "up"))
		n.must(netns.In(rns, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
		lan := fmt.Sprintf("10.231.%d.0/24", i+1)
		n.must(netns.In(rns, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", lan, "-o", "eth0", "-j", "MASQUERADE"))
		n.must(netns.In(rns, "iptables", "-A", "FORWARD", "-i", "eth0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"))
		n.must(netns.In(rns, "iptables", "-A", "FORWARD", "-i", "eth0", "-j", "DROP"))
		for j, e := range []string{"1", "2"} {
			name := string("ab"[i]) + e
			veth(n.ns(name), "eth0", fmt.Sprintf("10.231.%d.%d/24", i+1, 10+j), rns, "lan", n.prefix+"v"+name)
			n.must(netns.IP("-n", n.ns(name), "route", "add", "default", "via", fmt.Sprintf("10.231.%d.1", i+1)))
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

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
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

// TestNATTopology: a relay node on a public network; two private networks,
// each behind a NAT router (iptables MASQUERADE, inbound only for
// established flows), each with two edge nodes that know only the relay's
// address. All five converge; each edge-to-edge link is reported direct
// (hole punched, or on the same private network) or relayed; and once the
// edges of the two networks have a direct link, cutting the relay off does
// not stop replication between them. Skipped where network namespaces
// cannot be made (not root, no ip or iptables command); package node's
// loopback tests still cover discovery (TestDiscoveryBeyondBootstrap) and
// limits there, not relaying.
func TestNATTopology(t *testing.T) {
	if testing.Short() {
		t.Skip("builds network namespaces and starts five node processes")
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
	edges := []*proc{}
	for _, e := range []string{"a1", "a2", "b1", "b2"} {
		edges = append(edges, n.start(e, "-bootstrap", relay, "-relays", relay))
	}
	all := append([]*proc{pub}, edges...)
	start := time.Now()
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
	t.Logf("five nodes converged %v after the last publish", took.Round(time.Millisecond))

	// How each edge reaches the others.
	ids := map[string]string{}
	for _, p := range all {
		ids[p.id] = p.name
	}
	kind := func() map[string]string {
		out := map[string]string{}
		for _, p := range edges {
			st, err := n.status(p)
			if err != nil {
				continue
			}
			for _, l := range st.Node.Links {
				if q := ids[l.Peer]; q != "" && q != "pub" && p.name < q {
					k := "relayed"
					if l.Direct {
						k = "direct " + l.Addr
					}
					out[p.name+"-"+q] = k
				}
			}
		}
		return out
	}
	crossDirect := func(m map[string]string) bool {
		for pair, k := range m {
			if pair[0] != pair[3] && strings.HasPrefix(k, "direct") {
				return true
			}
		}
		return false
	}
	var links map[string]string
	punched := false
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		links = kind()
		if crossDirect(links) {
			punched = true
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	for pair, k := range links {
		t.Logf("edge link %s: %s", pair, k)
	}
	if !punched {
		t.Logf("no link across the two NATs became direct within 30 s: replication between the private networks goes through the relay")
		return
	}
	t.Logf("a link across the NATs is direct after %v", time.Since(start).Round(time.Millisecond))

	// Cut the relay off the public network and publish on each side.
	n.must(netns.IP("-n", pub.ns, "link", "set", "eth0", "down"))
	var a, b *proc
	for pair, k := range links {
		if pair[0] != pair[3] && strings.HasPrefix(k, "direct") {
			for _, p := range edges {
				if p.name == pair[:2] {
					a = p
				}
				if p.name == pair[3:] {
					b = p
				}
			}
			break
		}
	}
	for _, p := range []*proc{a, b} {
		if _, err := n.cli(p, "publish", "-node", "http://127.0.0.1:7070", "-type", "nat.cut."+p.name); err != nil {
			t.Fatal(err)
		}
	}
	took = waitFor(t, 30*time.Second, "the direct pair replicating without the relay", func() bool {
		ga, gb := recorded(a), recorded(b)
		return ga["nat.cut."+b.name] && gb["nat.cut."+a.name]
	})
	t.Logf("with the relay cut off, %s and %s exchanged signals in %v", a.name, b.name, took.Round(time.Millisecond))
}
