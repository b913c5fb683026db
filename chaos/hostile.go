package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// HostileSource is the CloudEvents source of every signal the hostile node
// makes (its own and those it forges in honest nodes' names); its ids start
// with "hostile-".
const HostileSource = "/chaos/hostile"

// Attack kinds a hostile node reports (HostileReport.Sent).
const (
	AttackForgedSig   = "forged_signature" // gossip in an honest node's name, signed by the hostile key
	AttackUnsigned    = "unsigned"         // gossip in an honest node's name, no signature
	AttackMixed       = "mixed_origins"    // a frame of its own signal and one in an honest node's name
	AttackFlood       = "flood"            // its own signed signals whose predecessors never exist
	AttackHeadsOpen   = "heads_unsealed"   // head announcements without a seal
	AttackHeadsBadCid = "heads_bad_cid"    // sealed announcements of a CID that cannot name a block
	AttackHeadsAbsent = "heads_absent"     // sealed announcements of blocks that exist nowhere
	AttackJournalSig  = "journal_forged"   // a journal entry in an honest origin's name at its next place, signed by the hostile key
	AttackJournalKey  = "journal_misplaced"
	AttackOverwrite   = "journal_overwrite" // another value for an honest entry
	AttackTombstone   = "journal_tombstone" // a tombstone of an honest entry
)

// hostileReasons are, per attack kind, the node counters (rejected_total
// reasons, or dropped_total reasons prefixed "dropped:") of which at least
// one must count it on at least one honest node. Absent heads are accepted
// by design (the prefetcher bounds them) and have none.
var hostileReasons = map[string][]string{
	AttackForgedSig:   {"signature"},
	AttackUnsigned:    {"signature"},
	AttackMixed:       {"origin"},
	AttackFlood:       {"dropped:dependency_not_found", "dropped:causal_buffer_full"},
	AttackHeadsOpen:   {"heads_seal"},
	AttackHeadsBadCid: {"heads_cid"},
	// At the victim's next place: if the victim has published its own
	// there by the time a replica checks the block, the overwrite check
	// (which runs first) refuses it.
	AttackJournalSig: {"journal_signature", "journal_overwrite"},
	AttackJournalKey: {"journal_key"},
	AttackOverwrite:  {"journal_overwrite", "journal_signature"}, // a replica that lacks the entry yet checks the signature
	AttackTombstone:  {"journal_tombstone"},
}

// hostileFamilies must each have been sent at least once: else the
// schedule did not test them.
var hostileFamilies = [][]string{
	{AttackForgedSig, AttackUnsigned, AttackMixed},
	{AttackFlood},
	{AttackHeadsOpen, AttackHeadsBadCid, AttackHeadsAbsent},
	{AttackJournalSig, AttackJournalKey, AttackOverwrite, AttackTombstone},
}

// HostileReport is what the hostile node says it did: its peer ids (one
// libp2p host per role), how many of each attack it sent, and the journal
// blocks it wrote (which honest replicas must refuse).
type HostileReport struct {
	Peers map[string]string `json:"peers"` // role -> peer id
	Sent  map[string]int    `json:"sent"`
	// Unreached counts, by the first kind of an attack family, the turns
	// it skipped because its topic had no peer (its host down, cut or
	// slow to connect): an attack sent to nobody is not counted as sent.
	Unreached map[string]int `json:"unreached,omitempty"`
	Blocks    []string       `json:"blocks,omitempty"`
	Host      int            `json:"host"`          // the node it ran beside
	Err       string         `json:"err,omitempty"` // why it stopped early
}

// peer reports whether id is one of the hostile node's identities.
func (r *HostileReport) peer(id string) bool {
	for _, p := range r.Peers {
		if p == id {
			return true
		}
	}
	return false
}

// origin reports whether o, a peer id or its ref, is one of the hostile
// node's (false without a report).
func (r *HostileReport) origin(o string) bool {
	if r == nil {
		return false
	}
	for _, p := range r.Peers {
		if p == o || PeerRef(p) == o {
			return true
		}
	}
	return false
}

// names reports whether a log line names the hostile node or its attack:
// one of its peer ids (or their refs), one of its signal ids, one of its
// journal blocks.
func (r *HostileReport) names(line string) bool {
	if strings.Contains(line, "hostile-") {
		return true
	}
	for _, p := range r.Peers {
		if strings.Contains(line, p) || strings.Contains(line, PeerRef(p)) {
			return true
		}
	}
	for _, b := range r.Blocks {
		if strings.Contains(line, b) {
			return true
		}
	}
	return false
}

// hostileLogs are the WARN messages a hostile node's attacks cause; a line
// with one of them is expected only when it names the hostile node.
var hostileLogs = []string{
	"refused a journal block from another replica",
	"signals wait for causes that have not arrived",
	"delivered a signal without a dependency",
	"delivered a signal after later ones of its origin",
}

// hostileExcused reports whether a WARN/ERROR line is one the hostile
// node's attacks explain.
func (c *checker) hostileExcused(line string) bool {
	r := c.h.Hostile
	return r != nil && slices.ContainsFunc(hostileLogs, func(m string) bool { return strings.Contains(line, m) }) && r.names(line)
}

// ownHostile reports whether e is a signal of the hostile node in its own
// name: it may be delivered and journaled (signed by a member, it is
// given up on its missing predecessors after DepWait and adopted), and no
// honest rule applies to it.
func (c *checker) ownHostile(e Entry) bool {
	return e.Source == HostileSource && c.h.Hostile != nil && c.h.Hostile.peer(e.Peer)
}

// hostileOrigin reports whether an origin (peer id) is the hostile node's.
func (c *checker) hostileOrigin(origin string) bool {
	return c.h.Hostile != nil && c.h.Hostile.peer(origin)
}

// checkHostileEntry: a signal of the hostile node's source that is not in
// its own name was forged: it must never be journaled or delivered.
func (c *checker) checkHostileEntry(i int, e Entry, where string) {
	c.add(Anomaly{Kind: "hostile", ID: e.ID, Source: e.Source, Node: i,
		Detail: fmt.Sprintf("a signal the hostile node forged in %s's name is in the %s", short(e.Peer), where)})
}

// checkHostile: the hostile node ran and reported; each family of attacks
// was sent; each attack kind sent was counted by at least one honest node.
func (c *checker) checkHostile() {
	r := c.h.Hostile
	if r == nil {
		if c.h.HostileOn {
			c.add(Anomaly{Kind: "hostile", Node: -1, Detail: "the hostile node wrote no report"})
		}
		return
	}
	if r.Err != "" {
		c.add(Anomaly{Kind: "hostile", Node: r.Host, Detail: "the hostile node failed: " + r.Err})
	}
	for _, fam := range hostileFamilies {
		if !slices.ContainsFunc(fam, func(k string) bool { return r.Sent[k] > 0 }) && r.Unreached[fam[0]] == 0 {
			// Never tried (a family that had no peer to send to all
			// along, in a short schedule, says so in Unreached).
			c.add(Anomaly{Kind: "hostile", Node: r.Host, Detail: fmt.Sprintf("the hostile node sent none of %v", fam)})
		}
	}
	kinds := make([]string, 0, len(hostileReasons))
	for k := range hostileReasons {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		if r.Sent[k] > 0 && !c.counted(hostileReasons[k]) {
			c.add(Anomaly{Kind: "hostile", Node: -1, Detail: fmt.Sprintf("%d %s attacks sent, no honest node counted one (%v)", r.Sent[k], k, hostileReasons[k])})
		}
	}
}

// counted reports whether some node counted one of reasons.
func (c *checker) counted(reasons []string) bool {
	for i := 0; i < c.h.Nodes; i++ {
		for _, why := range reasons {
			if d, ok := strings.CutPrefix(why, "dropped:"); ok {
				if i < len(c.h.Counters) && c.h.Counters[i][d] > 0 {
					return true
				}
			} else if i < len(c.h.Rejected) && c.h.Rejected[i][why] > 0 {
				return true
			}
		}
	}
	return false
}

// hostileHost draws the node the hostile node runs beside (its own stream:
// the other draws do not move).
func hostileHost(seed uint64, nodes int) int {
	return rand.New(rand.NewPCG(seed, 0x4057)).IntN(nodes)
}

// hostileCommand is the command that starts a hostile node: Spec.Hostile
// Command, else Command with its last word "node" made "hostile".
func (s Spec) hostileCommand() []string {
	if len(s.HostileCommand) > 0 {
		return s.HostileCommand
	}
	if n := len(s.Command); n > 0 && s.Command[n-1] == "node" {
		return append(slices.Clone(s.Command[:n-1]), "hostile")
	}
	return nil
}

// hostile runs the schedule's hostile node beside its host until ctx ends,
// then stops it (SIGTERM) and returns its report (nil if it wrote none).
func (w *workload) hostile(ctx context.Context) *HostileReport {
	c := w.c
	host := hostileHost(w.seed, len(c.procs))
	listen, _ := c.net.extra(host, 250)
	if base, _, ok := strings.Cut(listen, "/tcp/"); ok {
		listen = base + "/tcp/0"
	}
	report := filepath.Join(c.dir, "hostile.json")
	flood := 2000 // past the per-origin share of a scaled-down causal buffer
	if c.spec.Short {
		// Still past CI's scaled-down buffers (93-177); the honest nodes
		// adopt what they delivered of it, which under -race on two cores
		// took past the short settle (30 s) at 500.
		flood = 200
	}
	var victims []string
	for _, p := range c.procs {
		victims = append(victims, p.id)
	}
	boot := c.bootBeside(host, (host+1)%len(c.procs))
	argv := append(c.spec.hostileCommand(), "-mesh", c.mesh, "-listen", listen, "-bootstrap", strings.Join(boot, ","),
		"-victims", strings.Join(victims, ","), "-seed", fmt.Sprint(w.seed), "-duration", c.spec.Duration.String(), "-flood", fmt.Sprint(flood), "-report", report)
	if err := runHostile(ctx, c.net.wrap(host, argv), filepath.Join(c.dir, "hostile.log"), c.spec.Env); err != nil {
		c.log("hostile node beside node %d: %v", host, err)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		return nil
	}
	var r HostileReport
	if json.Unmarshal(b, &r) != nil {
		return nil
	}
	r.Host = host
	c.log("hostile node beside node %d: sent %v", host, r.Sent)
	return &r
}

// runHostile runs argv until ctx ends, then sends it SIGTERM and waits up
// to 20 s for it to write its report and exit (then SIGKILL).
func runHostile(ctx context.Context, argv []string, logPath string, env []string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // owned: ends with the process
	select {
	case err := <-exited: // its -duration is over, or it failed
		if err != nil {
			return fmt.Errorf("%v (see %s)", err, logPath)
		}
		return nil
	case <-ctx.Done():
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case err := <-exited:
		return err
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		return errors.New("did not stop in 20 s after SIGTERM")
	}
}
