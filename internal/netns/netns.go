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
