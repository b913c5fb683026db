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

	"github.com/signalmesh/signalmesh/chaos"
)

// The CI run of the fault harness: three seeded schedules against node
// processes (this test binary standing in for signalmesh), each with a
// passing verdict, and nothing left behind.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes for about a minute")
	}
	out := filepath.Join(t.TempDir(), "chaos.json")
	var stdout, stderr bytes.Buffer
	t.Setenv("SIGNALMESH_TEST_RUN", "1") // the nodes are this binary
	code := run([]string{"chaos", "-short", "-out", out}, &stdout, &stderr)
	t.Logf("%s", stdout.String())
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var results []chaos.Result
	if err := json.Unmarshal(b, &results); err != nil {
		t.Fatal(err)
	}
	if len(results) != 3 {
		t.Fatalf("%d schedules, want 3", len(results))
	}
	for _, r := range results {
		v := r.Verdict
		if !v.OK || len(r.Faults) == 0 || v.Journaled == 0 || v.Deliveries < v.Journaled*r.Nodes {
			t.Fatalf("seed %d: %+v", r.Seed, r)
		}
	}
	if !strings.Contains(stdout.String(), "3 schedules") {
		t.Fatalf("no summary:\n%s", stdout.String())
	}
	assertNothingLeft(t, os.Getpid())
}

// Interrupted in the middle of a schedule, the harness removes its
// processes, namespaces, links and directories.
func TestChaosInterruptCleansUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "chaos", "-schedules", "1", "-nodes", "3", "-duration", "30s")
	cmd.Env = append(os.Environ(), "SIGNALMESH_TEST_RUN=1")
	errs, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(errs)
	var seen []string
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if strings.Contains(sc.Text(), "node 2 started") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("the harness did not stop on SIGINT:\n%s", strings.Join(seen, "\n"))
	}
	assertNothingLeft(t, cmd.Process.Pid)
}

// assertNothingLeft checks that no namespace, link, temporary directory or
// node process of the harness running as pid is left.
func assertNothingLeft(t *testing.T, pid int) {
	t.Helper()
	prefix := fmt.Sprintf("smc%d", pid)
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil && strings.Contains(string(out), prefix) {
		t.Errorf("namespaces left:\n%s", out)
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil && strings.Contains(string(out), prefix) {
		t.Errorf("links left:\n%s", out)
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("signalmesh-chaos-%d-*", pid)))
	if len(dirs) > 0 {
		t.Errorf("directories left: %v", dirs)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if bytes.Contains(b, []byte(fmt.Sprintf("signalmesh-chaos-%d-", pid))) {
			t.Errorf("a node process is left: %s", bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}
