package chaos

import (
	"context"
	"slices"
	"time"
)

// Shrink makes a failed schedule smaller while an anomaly of kind persists:
// it tries, one at a time, to drop each fault, to halve the ephemeral
// nodes, the rate and the duration, and to switch each optional part off,
// and keeps each change whose run still shows kind. run runs one schedule
// (Run with Schedules 1, in practice); tries bounds the runs. It returns
// the smallest spec found, its result, and the runs it made.
func Shrink(ctx context.Context, spec Spec, failed Result, kind string, tries int, run func(context.Context, Spec) (Result, error)) (Spec, Result, int) {
	spec.Seed, spec.Schedules, spec.Cover = failed.Seed, 1, false
	spec.Faults = slices.Clone(failed.Faults)
	best, bestRes, runs := spec, failed, 0
	still := func(s Spec) bool {
		if runs >= tries || ctx.Err() != nil {
			return false
		}
		runs++
		s.Parts.None = false
		s.Parts.None = s.Parts == (Parts{})
		r, err := run(ctx, s)
		if err != nil || !hasKind(r.Verdict, kind) {
			return false
		}
		best, bestRes = s, r
		return true
	}
	for k := len(best.Faults) - 1; k >= 0; k-- {
		s := best
		s.Faults = slices.Delete(slices.Clone(best.Faults), k, k+1)
		if len(s.Faults) == 0 {
			s.Faults = []Fault{} // none, rather than drawn
		}
		still(s)
	}
	for _, step := range []func(*Spec) bool{
		func(s *Spec) bool { s.Parts.Ephemeral /= 2; return s.Parts.Ephemeral < best.Parts.Ephemeral },
		func(s *Spec) bool { s.Rate /= 2; return s.Rate > 0 },
		func(s *Spec) bool {
			s.Duration /= 2
			return s.Duration >= 4*time.Second && lastEnd(s.Faults) <= s.Duration-time.Second
		},
		func(s *Spec) bool { was := s.Parts.OutOfBand; s.Parts.OutOfBand = false; return was },
		func(s *Spec) bool { was := s.Parts.Reuse; s.Parts.Reuse = false; return was },
		func(s *Spec) bool { was := s.Parts.Retry; s.Parts.Retry = false; return was },
		func(s *Spec) bool { was := s.Parts.SlowSubscriber; s.Parts.SlowSubscriber = false; return was },
		func(s *Spec) bool { was := s.Parts.Limits; s.Parts.Limits = false; return was },
		func(s *Spec) bool { was := s.Parts.PartialMesh; s.Parts.PartialMesh = false; return was },
		func(s *Spec) bool { was := s.Parts.Group; s.Parts.Group = false; return was },
		func(s *Spec) bool { was := s.Parts.Hostile; s.Parts.Hostile = false; return was },
		func(s *Spec) bool { was := s.Parts.Retention; s.Parts.Retention = false; return was },
	} {
		for {
			s := best
			if !step(&s) || !still(s) {
				break
			}
		}
	}
	return best, bestRes, runs
}

func hasKind(v Verdict, kind string) bool {
	return slices.ContainsFunc(v.Anomalies, func(a Anomaly) bool { return a.Kind == kind })
}

func lastEnd(faults []Fault) time.Duration {
	var end time.Duration
	for _, f := range faults {
		if f.Kind != SettleKill {
			end = max(end, f.At+f.For)
		}
	}
	return end
}
