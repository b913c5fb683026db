package causal

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// This file is a tiny step language for scenario tests, in the spirit of
// raft's datadriven interaction tests (without the dependency). A scenario
// is a list of steps, each "command args => expected output":
//
//	add A:2 deps=B:1 cause=x csrc=s id=y src=s dig=1 lam=3  => A:2 A:3
//	journal B:1 deps=...       (store in the journal only, do not Add)
//	gossip A:2 deps=...        (Add, not in the journal: only gossiped)
//	know B:4                   => -
//	note src id digest         (a Weak signal delivered outside the core)
//	tick 100                   => A:2!lost
//	pull                       => B:1 C:3
//	catchup                    => B:1 A:2   (Pull loop reading the journal)
//	frontier A 2               => B:1 C:3 lam=7 trunc=1
//	missing                    => gaps=A:1-1,B:3-4 causes=x
//	len                        => 2
//	delivered A                => 3
//	restart                    (a new Core over the same journal)
//	reopen                     (a new Core restored from the old one's
//	                            encoded State, told the journal's highest
//	                            sequence per origin, as a node reopens)
//	ixcalls                    => 1 (Index lookups since the last ixcalls)
//
// A released signal is printed as its ref with flags: !dup, !conflict,
// !lost. Errors print as ErrFull, ErrDuplicate, ErrMeta. Nothing prints as
// "-". A signal's id defaults to its ref ("A:2"), its source to "src", its
// digest to 0 and its Lamport time to its sequence number. Time ("now") is
// set by tick and used by add.

// journal is the signals a node has stored, by place and by id; it is the
// Index the core reads.
type journal struct {
	byRef map[Ref]Meta
	byID  map[string][]Copy
	calls int
}

func newJournal() *journal {
	return &journal{byRef: map[Ref]Meta{}, byID: map[string][]Copy{}}
}

func (j *journal) put(m Meta) {
	if _, ok := j.byRef[m.Ref()]; ok {
		return
	}
	j.byRef[m.Ref()] = m
	j.byID[m.ID] = append(j.byID[m.ID], Copy{Ref: m.Ref(), Source: m.Source, Digest: m.Digest})
}

func (j *journal) Journaled(r Ref) bool { _, ok := j.byRef[r]; return ok }

func (j *journal) ByID(id string) []Copy {
	j.calls++
	return j.byID[id]
}

type scenario struct {
	name  string
	p     Params
	steps []string
}

type runner struct {
	t   *testing.T
	p   Params
	c   *Core[string]
	j   *journal
	now int64
}

func runScenario(t *testing.T, sc scenario) {
	t.Helper()
	p := sc.p
	if p.Limit == 0 {
		p.Limit = 100
	}
	if p.BloomBits == 0 {
		p.BloomBits = 1 << 12
	}
	if p.Recent == 0 {
		p.Recent = 1 << 10
	}
	r := &runner{t: t, p: p, j: newJournal()}
	r.restart()
	for i, step := range sc.steps {
		cmd, want, hasWant := strings.Cut(step, "=>")
		cmd, want = strings.TrimSpace(cmd), strings.TrimSpace(want)
		got := r.do(cmd)
		if hasWant && got != want {
			t.Fatalf("step %d %q:\n got: %s\nwant: %s", i+1, cmd, got, want)
		}
	}
}

func (r *runner) restart() {
	c, err := New[string](r.p, r.j)
	if err != nil {
		r.t.Fatal(err)
	}
	r.c = c
}

// reopen replaces the core with a new one restored from the old one's
// State, through its binary encoding, and tells it the highest journaled
// sequence of each origin (Know), as a node does when it reopens.
func (r *runner) reopen() {
	b, err := r.c.State().MarshalBinary()
	if err != nil {
		r.t.Fatal(err)
	}
	var st State
	if err := st.UnmarshalBinary(b); err != nil {
		r.t.Fatal(err)
	}
	r.restart()
	if err := r.c.Restore(st); err != nil {
		r.t.Fatal(err)
	}
	top := map[string]uint64{}
	for ref := range r.j.byRef {
		top[ref.Origin] = max(top[ref.Origin], ref.Seq)
	}
	for o, seq := range top {
		r.c.Know(Ref{Origin: o, Seq: seq})
	}
}

func (r *runner) do(cmd string) string {
	f := strings.Fields(cmd)
	switch f[0] {
	case "add", "journal", "gossip":
		m := parseMeta(r.t, f[1], f[2:])
		if f[0] != "gossip" {
			r.j.put(m)
		}
		if f[0] == "journal" {
			return "-"
		}
		rel, err := r.c.Add(m, m.ID, r.now)
		return fmtOut(rel, err)
	case "note": // note <source> <id> <digest>
		return fmtOut(r.c.Note(f[1], f[2], uint64(atoi(r.t, f[3]))), nil)
	case "know":
		r.c.Know(parseRef(r.t, f[1]))
		return "-"
	case "tick":
		r.now = atoi(r.t, f[1])
		return fmtOut(r.c.Tick(r.now), nil)
	case "pull":
		return fmtRefs(r.c.Pull())
	case "catchup":
		return fmtOut(catchUp(r.c, r.j.byRef, r.now), nil)
	case "frontier":
		deps, lam, trunc := r.c.Frontier(f[1], int(atoi(r.t, f[2])))
		return fmt.Sprintf("%s lam=%d trunc=%d", fmtRefs(deps), lam, trunc)
	case "missing":
		gaps, causes := r.c.Missing()
		var gs []string
		for _, g := range gaps {
			gs = append(gs, fmt.Sprintf("%s:%d-%d", g.Origin, g.From, g.To))
		}
		return fmt.Sprintf("gaps=%s causes=%s", strings.Join(gs, ","), strings.Join(causes, ","))
	case "len":
		return strconv.Itoa(r.c.Len())
	case "delivered":
		return strconv.FormatUint(r.c.DeliveredOf(f[1]), 10)
	case "restart":
		r.restart()
		return "-"
	case "reopen":
		r.reopen()
		return "-"
	case "decide": // decide <ref> [cause] [deps] [gap=<from>]
		var d Decision
		for _, a := range f[2:] {
			switch k, v, _ := strings.Cut(a, "="); k {
			case "cause":
				d.Cause = true
			case "deps":
				d.Deps = true
			case "gap":
				d.GapFrom = uint64(atoi(r.t, v))
			}
		}
		r.c.Decide(parseRef(r.t, f[1]), d)
		return "-"
	case "ixcalls":
		n := r.j.calls
		r.j.calls = 0
		return strconv.Itoa(n)
	}
	r.t.Fatalf("unknown step %q", cmd)
	return ""
}

// catchUp is the caller's Pull loop: for each ref Pull names, read it and
// the ones after it from the journal and Add them, until one is missing or
// refused; repeat until a round adds nothing.
func catchUp[T any](c *Core[T], byRef map[Ref]Meta, now int64) []Release[string] {
	var out []Release[string]
	for {
		progress := false
		for _, r := range c.Pull() {
			for ; ; r.Seq++ {
				m, ok := byRef[r]
				if !ok {
					break
				}
				rel, err := c.Add(m, *new(T), now)
				if err != nil {
					break
				}
				progress = true
				for _, x := range rel {
					out = append(out, Release[string]{Meta: x.Meta, V: x.Meta.ID, Dup: x.Dup, Conflict: x.Conflict, CauseLost: x.CauseLost,
						DepLost: x.DepLost, Late: x.Late, LamportClamped: x.LamportClamped, CauseLater: x.CauseLater})
				}
			}
		}
		if !progress {
			return out
		}
	}
}

func parseMeta(t *testing.T, ref string, args []string) Meta {
	r := parseRef(t, ref)
	m := Meta{Origin: r.Origin, Stamp: Stamp{Seq: r.Seq, Lamport: r.Seq}, ID: ref, Source: "src"}
	for _, a := range args {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "deps":
			for d := range strings.SplitSeq(v, ",") {
				m.Deps = append(m.Deps, parseRef(t, d))
			}
		case "cause":
			m.Cause = v
		case "id":
			m.ID = v
		case "src":
			m.Source = v
		case "csrc":
			m.CauseSource = v
		case "dig":
			m.Digest = uint64(atoi(t, v))
		case "lam":
			m.Lamport = uint64(atoi(t, v))
		default:
			t.Fatalf("unknown argument %q", a)
		}
	}
	return m
}

func parseRef(t *testing.T, s string) Ref {
	o, n, ok := strings.Cut(s, ":")
	if !ok {
		t.Fatalf("bad ref %q", s)
	}
	return Ref{Origin: o, Seq: uint64(atoi(t, n))}
}

func atoi(t *testing.T, s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("bad number %q", s)
	}
	return n
}

func fmtOut[T any](rel []Release[T], err error) string {
	switch {
	case errors.Is(err, ErrFull):
		return "ErrFull"
	case errors.Is(err, ErrDuplicate):
		return "ErrDuplicate"
	case errors.Is(err, ErrMeta):
		return "ErrMeta"
	case err != nil:
		return err.Error()
	}
	var s []string
	for _, x := range rel {
		v := x.Meta.Ref().String()
		if x.Dup {
			v += "!dup"
		}
		if x.Conflict {
			v += "!conflict"
		}
		if x.CauseLost {
			v += "!lost"
		}
		if x.CauseLater {
			v += "!later"
		}
		if x.LamportClamped {
			v += "!clamped"
		}
		if x.DepLost {
			v += "!deplost"
		}
		if x.Late {
			v += "!late"
		}
		s = append(s, v)
	}
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, " ")
}

func fmtRefs(rs []Ref) string {
	if len(rs) == 0 {
		return "-"
	}
	return strings.Join(slices.Collect(func(yield func(string) bool) {
		for _, r := range rs {
			if !yield(r.String()) {
				return
			}
		}
	}), " ")
}
