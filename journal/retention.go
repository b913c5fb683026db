package journal

import (
	"errors"
	"fmt"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/router"
)

// Rule keeps the signals whose type matches Pattern for MaxAge and, of
// them, the newest MaxCount and MaxBytes (see the package doc, Bounded
// history); each limit left at 0 does not apply.
type Rule struct {
	// Pattern is a router pattern over the signal type ("sensor.**").
	Pattern string `json:"pattern"`
	// MaxAge is how long a signal is kept, from its time attribute (a
	// signal with no time, or one dated in the future, is kept). 0: no
	// age limit.
	MaxAge time.Duration `json:"max_age"`
	// MaxCount keeps the newest MaxCount signals of the rule, in replay
	// order (the oldest leave first; a copy of a retried event counts).
	// 0: no count limit.
	MaxCount int `json:"max_count"`
	// MaxBytes keeps the newest signals of the rule whose stored forms
	// add up to at most MaxBytes, in replay order (the oldest leave
	// first). 0: no byte limit.
	MaxBytes int64 `json:"max_bytes"`
}

// Retention is a list of rules: the first whose pattern matches a
// signal's type applies; a signal no rule matches is kept. Nil keeps
// everything.
//
// What is built (issue 15, first part): the local view. Replay, Stream
// and All (so the backlog of a new subscription) leave out the signals
// past retention, and Stream says how many it passed over (a typed
// truncation, not silence). The signals stay on disk, and Get, Causes and
// the causal core still find them, until the epochs of the package doc
// reclaim them.
type Retention []Rule

// ErrRetention: a rule that cannot be applied.
var ErrRetention = errors.New("journal: bad retention rule")

// Validate reports the first bad rule.
func (r Retention) Validate() error {
	for i, rule := range r {
		if err := router.Validate(rule.Pattern); err != nil {
			return fmt.Errorf("%w %d: %w", ErrRetention, i, err)
		}
		if rule.MaxAge < 0 || rule.MaxCount < 0 || rule.MaxBytes < 0 {
			return fmt.Errorf("%w %d (%s): negative limit", ErrRetention, i, rule.Pattern)
		}
		if rule.MaxAge == 0 && rule.MaxCount == 0 && rule.MaxBytes == 0 {
			return fmt.Errorf("%w %d (%s): no limit (leave it out to keep everything)", ErrRetention, i, rule.Pattern)
		}
	}
	return nil
}

// ruleOf is the index of the rule that applies to typ, or -1.
func (r Retention) ruleOf(typ string) int {
	for i, rule := range r {
		if router.Matches(rule.Pattern, typ) {
			return i
		}
	}
	return -1
}

// Counts reports whether a rule limits a count or bytes: whether a signal
// is retained then depends on the newer signals of its rule, so a view of
// a few signals (Effects, Trace) reads the whole journal to know it.
func (r Retention) Counts() bool { return r.counts() }

// counts reports whether a rule limits a count or bytes: what leaves then
// depends on the newer signals, not on the signal alone.
func (r Retention) counts() bool {
	for _, rule := range r {
		if rule.MaxCount > 0 || rule.MaxBytes > 0 {
			return true
		}
	}
	return false
}

// Expired reports whether s is past its rule's age at now (count and
// byte limits depend on the other signals: the views apply them).
func (r Retention) Expired(s *signalmesh.Signal, now time.Time) bool { return r.expired(s, now) }

// expired reports whether s is past its rule's age at now.
func (r Retention) expired(s *signalmesh.Signal, now time.Time) bool {
	i := r.ruleOf(s.Type)
	return i >= 0 && r[i].MaxAge > 0 && !s.Time.IsZero() && now.Sub(s.Time) > r[i].MaxAge
}

// SetRetention makes the journal's views (All, Replay, Stream) leave out
// the signals past r at the time now gives (nil: time.Now). Call it before
// the journal is read concurrently.
func (j *Journal) SetRetention(r Retention, now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	j.ret, j.now = r, now
}

// retain drops from sigs what is past retention: by age, then, by count
// and bytes (size gives each signal's stored size), the oldest in replay
// order. It returns the signals kept, in replay order when there are
// count or byte rules (else in sigs' order), and how many left.
func (j *Journal) retain(sigs []*signalmesh.Signal, size map[*signalmesh.Signal]int) ([]*signalmesh.Signal, int) {
	if len(j.ret) == 0 {
		return sigs, 0
	}
	now := j.now()
	kept := sigs[:0]
	for _, s := range sigs {
		if !j.ret.expired(s, now) {
			kept = append(kept, s)
		}
	}
	left := len(sigs) - len(kept)
	if !j.ret.counts() {
		return kept, left
	}
	Order(kept)
	lim := newLimits(j.ret)
	for _, s := range kept {
		lim.count(s, size[s])
	}
	out := kept[:0]
	for _, s := range kept {
		if lim.pass(s, size[s]) {
			left++
			continue
		}
		out = append(out, s)
	}
	return out, left
}

// limits applies the count and byte limits of a Retention: count every
// signal within age first (count), then pass them in replay order (pass).
type limits struct {
	r               Retention
	total, passed   []int
	totalB, passedB []int64
}

func newLimits(r Retention) *limits {
	return &limits{r: r, total: make([]int, len(r)), passed: make([]int, len(r)), totalB: make([]int64, len(r)), passedB: make([]int64, len(r))}
}

func (l *limits) count(s *signalmesh.Signal, size int) {
	if i := l.r.ruleOf(s.Type); i >= 0 {
		l.total[i]++
		l.totalB[i] += int64(size)
	}
}

// pass passes s, the next signal within age in replay order, and reports
// whether it is beyond its rule's count or bytes.
func (l *limits) pass(s *signalmesh.Signal, size int) bool {
	i := l.r.ruleOf(s.Type)
	if i < 0 {
		return false
	}
	rule := l.r[i]
	l.passed[i]++
	gone := rule.MaxCount > 0 && l.passed[i] <= l.total[i]-rule.MaxCount
	gone = gone || rule.MaxBytes > 0 && l.totalB[i]-l.passedB[i] > rule.MaxBytes
	l.passedB[i] += int64(size)
	return gone
}
