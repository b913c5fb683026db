package router

import (
	"errors"
	"fmt"
	"strings"

	"github.com/signalmesh/signalmesh"
)

// Errors naming the rule a pattern breaks. Validate and Add return them
// inside a *PatternError.
var (
	ErrEmptyPattern      = errors.New("router: empty pattern")
	ErrEmptySegment      = errors.New("router: empty segment (leading, trailing or doubled dot)")
	ErrWildcardInSegment = errors.New("router: '*' inside a literal segment (a wildcard is a whole segment: * or **)")
	ErrBadSegment        = errors.New("router: segment has a character other than a-z, A-Z, 0-9, '_' and '-'")
	ErrAdjacentStars     = errors.New("router: '**' directly next to another '**'")
	ErrPriority          = errors.New("router: priority outside -100..100")
)

// PatternError reports an invalid pattern: which one, which segment (0-based,
// -1 for the pattern as a whole) and which rule it broke.
type PatternError struct {
	Pattern string
	Segment int
	Err     error
}

func (e *PatternError) Error() string {
	if e.Segment < 0 {
		return fmt.Sprintf("%v: %q", e.Err, e.Pattern)
	}
	return fmt.Sprintf("%v: %q, segment %d", e.Err, e.Pattern, e.Segment)
}

func (e *PatternError) Unwrap() error { return e.Err }

// Validate checks a pattern: one or more dot-separated segments, each a
// literal (as in a signal type), * (exactly one segment) or ** (zero or more
// segments), with no ** directly next to another **.
func Validate(pattern string) error {
	if pattern == "" {
		return &PatternError{Pattern: pattern, Segment: -1, Err: ErrEmptyPattern}
	}
	prevStars := false
	for i, seg := range strings.Split(pattern, ".") {
		perr := func(err error) error { return &PatternError{Pattern: pattern, Segment: i, Err: err} }
		switch {
		case seg == "":
			return perr(ErrEmptySegment)
		case seg == "**":
			if prevStars {
				return perr(ErrAdjacentStars)
			}
			prevStars = true
			continue
		case seg == "*":
		case strings.Contains(seg, "*"):
			return perr(ErrWildcardInSegment)
		default:
			for j := 0; j < len(seg); j++ {
				if !signalmesh.IsSegmentByte(seg[j]) {
					return perr(ErrBadSegment)
				}
			}
		}
		prevStars = false
	}
	return nil
}

// Specificity ranks a pattern: routes with more specific patterns come first.
// For a pattern of n segments, with i the 0-based index of a segment, it is
//
//	2000*n + Σ literal 3000*(n-i) − Σ '*' (1000 − 100*i) − Σ '**' (2000 − 200*i)
//
// so user.123.created (24000) ranks before user.*.created (17100),
// user.**.created (16200), user.created (13000), user.* (9100), user.** (8200)
// and ** (0). The value is computed for any string; it is meaningful only for
// a valid pattern.
func Specificity(pattern string) int {
	n := strings.Count(pattern, ".") + 1
	spec := 2000 * n
	i := 0
	for seg := range strings.SplitSeq(pattern, ".") {
		switch seg {
		case "**":
			spec -= 2000 - 200*i
		case "*":
			spec -= 1000 - 100*i
		default:
			spec += 3000 * (n - i)
		}
		i++
	}
	return spec
}

// Matches reports whether the signal type typ matches pattern. It is false
// when either is invalid. It runs in time proportional to the product of
// their segment counts, whatever the wildcards.
func Matches(pattern, typ string) bool {
	if Validate(pattern) != nil || signalmesh.ValidType(typ) != nil {
		return false
	}
	p := strings.Split(pattern, ".")
	// active[j]: the first j pattern segments match the type segments read
	// so far. When p[j] is "**", active[j] also stands for "inside that **",
	// so that the ** can go on taking segments.
	active := make([]bool, len(p)+1)
	next := make([]bool, len(p)+1)
	active[0] = true
	closeStars(p, active)
	for seg := range strings.SplitSeq(typ, ".") {
		clear(next)
		for j, on := range active {
			if !on || j == len(p) {
				continue
			}
			switch p[j] {
			case "**":
				next[j] = true // ** takes this segment and may take more
			case "*":
				next[j+1] = true
			default:
				next[j+1] = next[j+1] || p[j] == seg
			}
		}
		closeStars(p, next)
		active, next = next, active
	}
	return active[len(p)]
}

// closeStars lets every active ** also match zero segments.
func closeStars(p []string, active []bool) {
	for j := 0; j < len(p); j++ {
		if active[j] && p[j] == "**" {
			active[j+1] = true
		}
	}
}
