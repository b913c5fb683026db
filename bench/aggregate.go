package bench

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// figureKey names one figure across the repeated runs of a scenario.
type figureKey struct{ metric, system, variant, workload string }

func keyOf(f Figure) figureKey { return figureKey{f.Metric, f.System, f.Variant, f.Workload} }

// value is a run's figure as a number, a percentile that was not reached
// being +Inf, so that it sorts after every reached one.
func (f Figure) value() float64 {
	if f.NotReached {
		return math.Inf(1)
	}
	return f.Value
}

// aggregate turns the figures of the repeated runs of one scenario (runs[r]
// is run r's) into one figure each: the median over the runs it appears in,
// with their minimum, maximum and each run's value. A not-reached run counts
// as larger than any reached one; a median that is not reached is
// NotReached. Figures keep the order in which they first appear.
func aggregate(runs [][]Figure) []Figure {
	var order []figureKey
	first := map[figureKey]Figure{}
	vals := map[figureKey][]float64{}
	notes := map[figureKey][]string{}
	for _, figs := range runs {
		for _, f := range figs {
			k := keyOf(f)
			if _, ok := first[k]; !ok {
				order = append(order, k)
				first[k] = f
			}
			vals[k] = append(vals[k], f.value())
			if f.Note != "" && !slices.Contains(notes[k], f.Note) {
				notes[k] = append(notes[k], f.Note)
			}
		}
	}
	out := make([]Figure, 0, len(order))
	for _, k := range order {
		f := first[k]
		vs := vals[k]
		f.Runs = make([]*float64, len(vs))
		for i, v := range vs {
			if !math.IsInf(v, 1) {
				f.Runs[i] = &vs[i]
			}
		}
		sorted := slices.Sorted(slices.Values(vs))
		f.Value, f.NotReached = finite(median(sorted))
		f.Min, _ = finite(sorted[0])
		f.Max, f.MaxNotReached = finite(sorted[len(sorted)-1])
		f.Note = strings.Join(notes[k], " | ")
		out = append(out, f)
	}
	return out
}

// median of sorted values (the mean of the middle two for an even count).
func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// finite maps +Inf (not reached) to 0 and true.
func finite(v float64) (float64, bool) {
	if math.IsInf(v, 1) {
		return 0, true
	}
	return v, false
}

// aggregateSeries merges the curves of the repeated runs: a sweep's curve
// (x a peer count) gets, at each x, the median of the runs' y and their
// minimum and maximum as error bars; a latency CDF is the first run's.
func aggregateSeries(runs [][]Series) []Series {
	type key struct{ plot, system string }
	var order []key
	byKey := map[key][]Series{}
	for _, ss := range runs {
		for _, s := range ss {
			k := key{s.Plot, s.System}
			if _, ok := byKey[k]; !ok {
				order = append(order, k)
			}
			byKey[k] = append(byKey[k], s)
		}
	}
	var out []Series
	for _, k := range order {
		ss := byKey[k]
		if k.plot == "latency-cdf" || len(ss) == 1 {
			out = append(out, ss[0])
			continue
		}
		ys := map[float64][]float64{}
		for _, s := range ss {
			for i, x := range s.X {
				ys[x] = append(ys[x], s.Y[i])
			}
		}
		agg := Series{Plot: k.plot, System: k.system}
		for _, x := range slices.Sorted(maps.Keys(ys)) {
			v := slices.Sorted(slices.Values(ys[x]))
			agg.X = append(agg.X, x)
			agg.Y = append(agg.Y, median(v))
			agg.YMin = append(agg.YMin, v[0])
			agg.YMax = append(agg.YMax, v[len(v)-1])
		}
		out = append(out, agg)
	}
	return out
}

// Ratio is a baseline's median divided by signalmesh's median for the same
// metric, variant and workload.
type Ratio struct {
	Metric, Variant, Workload string
	System                    string  // the baseline
	Value                     float64 // System's median / signalmesh's median
}

// Ratios are the ratios the summary prints: one per baseline figure that
// has a signalmesh figure of the same metric, variant and workload, both
// reached and signalmesh's not 0. Always baseline / signalmesh, never the
// other way round.
func (r *Result) Ratios() []Ratio {
	ours := map[figureKey]Figure{}
	for _, f := range r.Figures {
		if f.System == KindMesh {
			k := keyOf(f)
			k.system = ""
			ours[k] = f
		}
	}
	var out []Ratio
	for _, f := range r.Figures {
		k := keyOf(f)
		k.system = ""
		base, ok := ours[k]
		if f.System == KindMesh || !ok || base.NotReached || f.NotReached || base.Value == 0 {
			continue
		}
		out = append(out, Ratio{Metric: f.Metric, Variant: f.Variant, Workload: f.Workload, System: f.System, Value: f.Value / base.Value})
	}
	return out
}

// Summary prints one line per figure: the median over the runs, the
// minimum and maximum, and each baseline's median as a ratio to
// signalmesh's for the same metric, variant and workload.
func (r *Result) Summary(w io.Writer) {
	ratios := map[figureKey]float64{}
	for _, q := range r.Ratios() {
		ratios[figureKey{q.Metric, q.System, q.Variant, q.Workload}] = q.Value
	}
	fmt.Fprintf(w, "median of %d runs each (systems' order rotated run to run); range: min-max over the runs;\n", r.Spec.Repeat)
	fmt.Fprintf(w, "ratio: the baseline's median / signalmesh's median, same metric and workload only (for ms above 1 = the baseline is slower; for signals/s and %% above 1 = more)\n")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "metric\tsystem\tmedian\trange\tratio\tnote\n")
	for _, f := range r.Figures {
		ratio := ""
		if q, ok := ratios[keyOf(f)]; ok {
			ratio = fmt.Sprintf("%.2fx", q)
		}
		sys := f.System
		if f.Variant != "" {
			sys += " " + f.Variant
		}
		note := f.Note
		if f.Workload != "" {
			note = strings.TrimSuffix("workload: "+f.Workload+"; "+note, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Metric, sys, f.median(), f.span(), ratio, note)
	}
	_ = tw.Flush()
	missing := map[string]int{}
	for _, m := range r.Missing {
		missing[m.Scenario+" "+m.System] += len(m.IDs)
	}
	for _, k := range slices.Sorted(maps.Keys(missing)) {
		fmt.Fprintf(w, "missing: %s: %d deliveries over %d runs (named in the JSON result)\n", k, missing[k], r.Spec.Repeat)
	}
	for _, sys := range slices.Sorted(maps.Keys(r.Systems)) {
		fmt.Fprintf(w, "system %s: %s\n", sys, r.Systems[sys])
	}
	links := "loopback"
	if r.Shape != "" {
		links = "loopback shaped by " + r.Shape
	}
	mode := "all peers in one process"
	if r.Spec.Processes {
		mode = "one process per peer"
	}
	fmt.Fprintf(w, "%d figures in %.0f s on %d CPUs (%s/%s, %s), %s, %s, seed %d, revision %s\n",
		len(r.Figures), r.Seconds, r.Machine.CPUs, r.Machine.GOOS, r.Machine.GOARCH, r.Machine.Go, mode, links, r.Spec.Seed, shortRev(r.Revision))
}

func (f Figure) median() string {
	if f.NotReached {
		return "not reached"
	}
	return trim(f.Value) + " " + f.Unit
}

func (f Figure) span() string {
	if len(f.Runs) < 2 {
		return ""
	}
	if allNil(f.Runs) {
		return "none reached"
	}
	hi := trim(f.Max)
	if f.MaxNotReached {
		hi = "not reached"
	}
	return trim(f.Min) + "-" + hi
}

func allNil(xs []*float64) bool {
	for _, x := range xs {
		if x != nil {
			return false
		}
	}
	return true
}
