package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"

	"github.com/signalmesh/signalmesh/internal/netns"
)

// Topologies of the namespace network (Spec.Topology).
const (
	// TopologyFlat: every node in a namespace of its own on one bridge,
	// each reaching every other directly.
	TopologyFlat = "flat"
	// TopologyNAT: public relay nodes, the others behind NAT routers.
	TopologyNAT = "nat"
)

// natSite is a private network behind a NAT router, and its nodes.
type natSite struct {
	nodes []int
	// symmetric: the router maps each flow to a random port of its own
	// (MASQUERADE --random-fully), so hole punching across it fails;
	// else it keeps a host's mapping for every destination (MASQUERADE's
	// default), so hole punching works.
	symmetric bool
}

// natLayout places the nodes of the NAT topology.
type natLayout struct {
	public []int // on the public network: relays, the edges' bootstrap
	sites  []natSite
}

// layoutNAT places n nodes (3 to 9): the first one public (the first two
// from 7 nodes on), the rest, the edges, behind two port-preserving NAT
// routers, and from four edges on one of them behind a third, symmetric,
// router; the port-preserving ones take the rest in turn, the first the
// larger share. Five nodes: 0 public; 1 and 2 behind r0; 3 behind r1; 4
// behind r2 (symmetric): of the six pairs of edges one is on a LAN, two
// can be hole-punched and three stay relayed.
func layoutNAT(n int) natLayout {
	pub := 1
	if n >= 7 {
		pub = 2
	}
	var l natLayout
	for i := 0; i < pub; i++ {
		l.public = append(l.public, i)
	}
	edges := n - pub
	l.sites = []natSite{{}, {}}
	if edges >= 4 {
		l.sites = append(l.sites, natSite{nodes: []int{n - 1}, symmetric: true})
		edges--
	}
	for k := 0; k < edges; k++ {
		s := k * 2 / edges // the first half to site 0, the rest to site 1
		l.sites[s].nodes = append(l.sites[s].nodes, pub+k)
	}
	return l
}

// site is the private network node i is on, -1 for the public one.
func (l natLayout) site(i int) int {
	for k, s := range l.sites {
		if slices.Contains(s.nodes, i) {
			return k
		}
	}
	return -1
}

// reach says whether node from can dial node to's listen address: to is
// public, or on from's private network.
func (l natLayout) reach(from, to int) bool {
	return l.site(to) < 0 || l.site(from) == l.site(to)
}

// path says how two edges can be linked: "lan" on one private network,
// "nat" across two port-preserving NATs (a hole punch can make it
// direct), "symmetric" across a symmetric one (it stays relayed).
func (l natLayout) path(a, b int) string {
	sa, sb := l.site(a), l.site(b)
	switch {
	case sa == sb:
		return "lan"
	case l.sites[sa].symmetric || l.sites[sb].symmetric:
		return "symmetric"
	}
	return "nat"
}

// natNet is the NAT topology in network namespaces. The public nodes
// are on a public network (a bridge), with the routers' outer sides;
// each router namespace masquerades its private network (a bridge inside
// it) and drops unsolicited inbound packets (netns.Router); each edge
// node's namespace is on one private network, with a default route
// through its router. Every node namespace also has a management link
// to the harness (a second bridge, here), which carries only the HTTP
// API: its firewall takes in only connections to the API ports and lets
// out only their answers, so no libp2p packet goes that way.
//
// Cuts are per directed pair at the receiver: each node namespace marks
// what it sends on its network link with a DSCP value of its own, which
// NAT leaves alone, and the cut "a cannot send to b" drops, in b's
// namespace, what comes in marked a's. That cuts every path from a to b
// (on a LAN, through the NATs, hole-punched) but a circuit relayed by a
// public node r: r re-sends it as its own. That circuit is cut when r is
// cut from a or from b, which every fault the harness draws does (see
// relayLeaks) except a bridge cut whose bridge node is r: the two sides
// reach each other through r, which is what a bridge cut is.
type natNet struct {
	id     int
	n      int
	subnet int
	lay    natLayout
	netem  bool
}

func newNATNet(n int) (_ *natNet, err error) {
	if !netns.HasIptables() {
		return nil, errors.New("the NAT topology needs the iptables and iptables-restore commands (Debian package iptables)")
	}
	nn := &natNet{id: os.Getpid(), n: n, subnet: 100 + os.Getpid()%150, lay: layoutNAT(n)}
	defer func() {
		if err != nil {
			_ = nn.close()
		}
	}()
	if err := netns.Bridge("", nn.link("br"), ""); err != nil {
		return nil, err
	}
	if err := netns.Bridge("", nn.link("mb"), fmt.Sprintf("10.214.%d.1/24", nn.subnet)); err != nil {
		return nil, err
	}
	for k, s := range nn.lay.sites {
		r := nn.routerNS(k)
		if err := netns.Join(r, "eth0", nn.wanIP(k)+"/24", "", nn.link("br"), nn.link(fmt.Sprintf("u%d", k))); err != nil {
			return nil, err
		}
		if err := netns.Bridge(r, "lan", nn.gateway(k)+"/24"); err != nil {
			return nil, err
		}
		if err := netns.Router(r, "eth0", "lan", fmt.Sprintf("10.%d.%d.0/24", 216+k, nn.subnet), s.symmetric); err != nil {
			return nil, err
		}
	}
	for i := 0; i < n; i++ {
		ns, site := nn.ns(i), nn.lay.site(i)
		brNS, br := "", nn.link("br")
		if site >= 0 {
			brNS, br = nn.routerNS(site), "lan"
		}
		if err := netns.Join(ns, "eth0", nn.ip(i)+"/24", brNS, br, nn.link(fmt.Sprintf("h%d", i))); err != nil {
			return nil, err
		}
		if site >= 0 {
			if err := ipRun("-n", ns, "route", "add", "default", "via", nn.gateway(site)); err != nil {
				return nil, err
			}
		}
		if err := netns.Join(ns, "mgmt", nn.mgmtIP(i)+"/24", "", nn.link("mb"), nn.link(fmt.Sprintf("m%d", i))); err != nil {
			return nil, err
		}
		if err := netns.Restore(ns, nodeRules(i)); err != nil {
			return nil, err
		}
	}
	probe := exec.Command("ip", "netns", "exec", nn.ns(0), "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
	if probe.Run() == nil {
		nn.netem = true
		_ = exec.Command("ip", "netns", "exec", nn.ns(0), "tc", "qdisc", "del", "dev", "lo", "root").Run()
	}
	return nn, nil
}

// cutChain is the chain, in each node namespace, that the cuts fill.
const cutChain = "smcut"

// dscp is node i's mark on what its namespace sends (1-9; 0 is what
// the harness and the routers send).
func dscp(i int) int { return i + 1 }

// nodeRules are node i's namespace's firewall: its mark on what it sends
// on eth0, the cut chain on what comes in there, and the management link
// open only to the harness's connections to the API ports (7070 the
// node's, 7100 and up its ephemeral neighbours').
func nodeRules(i int) string {
	return fmt.Sprintf(`*mangle
-A OUTPUT -o eth0 -j DSCP --set-dscp %d
COMMIT
*filter
:%s - [0:0]
-A INPUT -i eth0 -j %[2]s
-A INPUT -i mgmt -p tcp -m multiport --dports 7070,7100:7399 -j ACCEPT
-A INPUT -i mgmt -j DROP
-A OUTPUT -o mgmt -m conntrack --ctstate ESTABLISHED -j ACCEPT
-A OUTPUT -o mgmt -j DROP
COMMIT
`, dscp(i), cutChain)
}

// cutRules are, per node namespace, the iptables-restore input that
// sets its cut chain for pairs: a drop of what comes marked by each node
// that may not send to it.
func cutRules(n int, pairs [][2]int) []string {
	out := make([]string, n)
	for i := range out {
		var b strings.Builder
		fmt.Fprintf(&b, "*filter\n-F %s\n", cutChain)
		var from []int
		for _, p := range pairs {
			if p[1] == i && !slices.Contains(from, p[0]) {
				from = append(from, p[0])
			}
		}
		slices.Sort(from)
		for _, a := range from {
			fmt.Fprintf(&b, "-A %s -m dscp --dscp %d -j DROP\n", cutChain, dscp(a))
		}
		b.WriteString("COMMIT\n")
		out[i] = b.String()
	}
	return out
}

// relayLeaks lists the cut pairs that a relay can still carry: a relay r
// (not a or b) that a may send to and that may send to b.
func relayLeaks(pairs [][2]int, relays []int) [][2]int {
	cut := map[[2]int]bool{}
	for _, p := range pairs {
		cut[p] = true
	}
	var out [][2]int
	for _, p := range pairs {
		for _, r := range relays {
			if r != p[0] && r != p[1] && !cut[[2]int{p[0], r}] && !cut[[2]int{r, p[1]}] {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

func (nn *natNet) link(suffix string) string {
	return fmt.Sprintf("%s%d%s", netnsPrefix, nn.id, suffix)
}
func (nn *natNet) ns(i int) string       { return nn.link(fmt.Sprintf("n%d", i)) }
func (nn *natNet) routerNS(k int) string { return nn.link(fmt.Sprintf("r%d", k)) }
func (nn *natNet) mgmtIP(i int) string   { return fmt.Sprintf("10.214.%d.%d", nn.subnet, 10+i) }
func (nn *natNet) wanIP(k int) string    { return fmt.Sprintf("10.215.%d.%d", nn.subnet, 100+k) }
func (nn *natNet) gateway(k int) string  { return fmt.Sprintf("10.%d.%d.1", 216+k, nn.subnet) }

// ip is node i's address on its network: public, or private behind its
// router.
func (nn *natNet) ip(i int) string {
	if s := nn.lay.site(i); s >= 0 {
		return fmt.Sprintf("10.%d.%d.%d", 216+s, nn.subnet, 10+i)
	}
	return fmt.Sprintf("10.215.%d.%d", nn.subnet, 10+i)
}

func (nn *natNet) name() string {
	shaping := "tbf rate limit (no sch_netem in this kernel)"
	if nn.netem {
		shaping = "netem delay and loss"
	}
	var sites []string
	for k, s := range nn.lay.sites {
		kind := "port-preserving"
		if s.symmetric {
			kind = "symmetric"
		}
		sites = append(sites, fmt.Sprintf("%v behind r%d (%s)", s.nodes, k, kind))
	}
	return fmt.Sprintf("network namespaces, NAT topology: %v public (relays), %s; routers drop unsolicited inbound; cuts drop by the sender's DSCP mark at the receiver; slow links: %s",
		nn.lay.public, strings.Join(sites, ", "), shaping)
}

func (nn *natNet) wrap(i int, argv []string) []string { return netns.Cmd(nn.ns(i), argv) }
func (nn *natNet) listen(i int) string                { return fmt.Sprintf("/ip4/%s/tcp/4001", nn.ip(i)) }
func (nn *natNet) api(i int) string                   { return nn.mgmtIP(i) + ":7070" }
func (nn *natNet) canSlow() bool                      { return true }
func (nn *natNet) relays() []int                      { return nn.lay.public }
func (nn *natNet) reach(from, to int) bool            { return nn.lay.reach(from, to) }

func (nn *natNet) extra(host, k int) (string, string) {
	return fmt.Sprintf("/ip4/%s/tcp/%d", nn.ip(host), 4100+k), fmt.Sprintf("%s:%d", nn.mgmtIP(host), 7100+k)
}

// cut sets every node namespace's cut chain, one iptables-restore each,
// in parallel (a flap cuts and heals every few hundred milliseconds).
func (nn *natNet) cut(_ context.Context, pairs [][2]int, _ *cluster) error {
	rules := cutRules(nn.n, pairs)
	errs := make([]error, nn.n)
	var wg sync.WaitGroup
	for i := range rules {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = netns.Restore(nn.ns(i), rules[i])
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (nn *natNet) slow(i int, on bool) error { return slowLink(nn.ns(i), nn.netem, on) }

func (nn *natNet) close() error {
	var errs []error
	del := func(args ...string) {
		if err := ipRun(args...); err != nil && !strings.Contains(err.Error(), "Cannot find") && !strings.Contains(err.Error(), "No such file") {
			errs = append(errs, err)
		}
	}
	// The ends outside the namespaces first (as netnsNet does), then the
	// namespaces (an edge's other end goes with its router's), then the
	// bridges.
	for i := 0; i < nn.n; i++ {
		del("link", "del", nn.link(fmt.Sprintf("m%d", i)))
		if nn.lay.site(i) < 0 {
			del("link", "del", nn.link(fmt.Sprintf("h%d", i)))
		}
	}
	for k := range nn.lay.sites {
		del("link", "del", nn.link(fmt.Sprintf("u%d", k)))
	}
	for i := 0; i < nn.n; i++ {
		del("netns", "del", nn.ns(i))
	}
	for k := range nn.lay.sites {
		del("netns", "del", nn.routerNS(k))
	}
	del("link", "del", nn.link("br"))
	del("link", "del", nn.link("mb"))
	return errors.Join(errs...)
}
