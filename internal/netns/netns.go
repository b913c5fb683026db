// Package netns builds test networks out of Linux network namespaces with
// the ip command (iproute2): the fault harness's one-namespace-per-node
// bridge and the NAT topology of the node tests. It needs root.
package netns

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// IP runs the ip command with args.
func IP(args ...string) error {
	return Run("ip", args...)
}

// Run runs a command and returns its output in the error when it fails.
func Run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// In runs a command inside namespace ns.
func In(ns string, name string, args ...string) error {
	return IP(append([]string{"netns", "exec", ns, name}, args...)...)
}

// Available says whether this process can make namespaces: it is root,
// has the ip command, and adding a namespace (named probe, removed at
// once) works.
func Available(probe string) bool {
	if os.Geteuid() != 0 {
		return false
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return false
	}
	if IP("netns", "add", probe) != nil {
		return false
	}
	_ = IP("netns", "del", probe)
	return true
}

// Cmd is the command line that runs argv inside namespace ns.
func Cmd(ns string, argv []string) []string {
	return append([]string{"ip", "netns", "exec", ns}, argv...)
}

// Bridge makes a bridge named name in namespace ns ("": this one) and
// brings it up, with address addr (CIDR) when not "".
func Bridge(ns, name, addr string) error {
	pre := nsArgs(ns)
	steps := [][]string{{"link", "add", name, "type", "bridge"}}
	if addr != "" {
		steps = append(steps, []string{"addr", "add", addr, "dev", name})
	}
	steps = append(steps, []string{"link", "set", name, "up"})
	for _, s := range steps {
		if err := IP(append(pre, s...)...); err != nil {
			return err
		}
	}
	return nil
}

// Join makes namespace ns, unless it exists, and joins it to a bridge by
// a veth pair: inside, the link is named dev, has address addr (CIDR) and
// is up, and so is lo; outside, its other end, named hostEnd, is a port
// of bridge br in namespace brNS ("": this one). The end inside is made
// as hostEnd+"p" and renamed, so both names must be free here.
func Join(ns, dev, addr, brNS, br, hostEnd string) error {
	if !exists(ns) {
		if err := IP("netns", "add", ns); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"link", "add", hostEnd, "type", "veth", "peer", "name", hostEnd + "p"},
		{"link", "set", hostEnd + "p", "netns", ns},
		{"-n", ns, "link", "set", hostEnd + "p", "name", dev},
		{"-n", ns, "addr", "add", addr, "dev", dev},
		{"-n", ns, "link", "set", dev, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	}
	if brNS != "" {
		steps = append(steps, []string{"link", "set", hostEnd, "netns", brNS})
	}
	steps = append(steps, append(nsArgs(brNS), "link", "set", hostEnd, "master", br, "up"))
	for _, s := range steps {
		if err := IP(s...); err != nil {
			return err
		}
	}
	return nil
}

// Router makes namespace ns, which Join has put on a public network as
// wan, a home router for the private network lanNet (CIDR) on the bridge
// lan inside it: it forwards, masquerades lanNet's flows out of wan, and
// lets in from wan only the packets of flows a private host opened
// (ESTABLISHED, RELATED), dropping the rest, to it or through it.
//
// The mapping is Linux MASQUERADE's default unless symmetric: a flow
// keeps its source port when it is free, and a host's later flows from
// the same port reuse its mapping (endpoint-independent mapping), so hole
// punching works across it. With symmetric, --random-fully gives each
// flow a random port of its own (endpoint-dependent: the port a peer
// observed is not the one a hole punch comes from), so hole punching
// fails. A router that answered an unsolicited SYN with a reset (no
// INPUT rule, a REJECT) would fail a hole punch whose SYN arrived before
// the other side's had opened the mapping: the drop is what home routers
// do, and what makes hole punching work on sub-millisecond links.
func Router(ns, wan, lan, lanNet string, symmetric bool) error {
	if err := In(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"); err != nil {
		return err
	}
	masq := []string{"-t", "nat", "-A", "POSTROUTING", "-s", lanNet, "-o", wan, "-j", "MASQUERADE"}
	if symmetric {
		masq = append(masq, "--random-fully")
	}
	if err := In(ns, "iptables", masq...); err != nil {
		return err
	}
	for _, chain := range []string{"FORWARD", "INPUT"} {
		if err := In(ns, "iptables", "-A", chain, "-i", wan, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"); err != nil {
			return err
		}
		if err := In(ns, "iptables", "-A", chain, "-i", wan, "-j", "DROP"); err != nil {
			return err
		}
	}
	return nil
}

// Restore loads rules (iptables-restore's format) into namespace ns's
// tables without flushing what rules does not name (--noflush): one
// process for a whole rule set, applied at once.
func Restore(ns, rules string) error {
	cmd := exec.Command("ip", "netns", "exec", ns, "iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(rules)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables-restore in %s: %v: %s", ns, err, bytes.TrimSpace(out))
	}
	return nil
}

// HasIptables says whether the iptables commands are installed (Debian
// package iptables).
func HasIptables() bool {
	_, err1 := exec.LookPath("iptables")
	_, err2 := exec.LookPath("iptables-restore")
	return err1 == nil && err2 == nil
}

func nsArgs(ns string) []string {
	if ns == "" {
		return nil
	}
	return []string{"-n", ns}
}

func exists(ns string) bool {
	_, err := os.Stat("/run/netns/" + ns)
	return err == nil
}
