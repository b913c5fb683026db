package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plots are the charts Plot draws, by Series.Plot.
var plots = []struct {
	name, title, x, y string
	logY              bool
}{
	{"latency-cdf", "Steady rate: latency to all peers (first run; lost signals: the curve ends below 1)", "latency to the last peer (ms)", "fraction of signals", false},
	{"convergence-vs-n", "Two-sided partition heal (median, bars: min-max over runs)", "peers", "ms (log)", true},
	{"throughput-vs-n", "Burst: deliveries/s to all subscribers (median, min-max)", "peers", "signals/s (log)", true},
	{"completeness-vs-n", "Burst: share the worst subscriber got (median, min-max)", "peers", "%", false},
}

// Plot draws the result's series as PNG and SVG files in dir, one chart per
// kind of series present, and returns the files written.
func (r *Result) Plot(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	for _, pl := range plots {
		var args []any
		var bars []plot.Plotter
		for _, s := range r.Series {
			if s.Plot != pl.name || len(s.X) == 0 {
				continue
			}
			xy := make(plotter.XYs, len(s.X))
			for i := range s.X {
				xy[i].X, xy[i].Y = s.X[i], s.Y[i]
				if pl.logY {
					xy[i].Y = max(xy[i].Y, 1) // a log axis cannot show 0
				}
			}
			args = append(args, s.System, xy)
			if len(s.YMin) == len(s.X) && len(s.YMax) == len(s.X) {
				e := errPoints{XYs: xy, lo: slices.Clone(s.YMin), hi: slices.Clone(s.YMax)}
				for i := range e.lo {
					if pl.logY {
						e.lo[i], e.hi[i] = max(e.lo[i], 1), max(e.hi[i], 1)
					}
				}
				b, err := plotter.NewYErrorBars(e)
				if err != nil {
					return files, fmt.Errorf("bench: plot %s: %w", pl.name, err)
				}
				bars = append(bars, b)
			}
		}
		if len(args) == 0 {
			continue
		}
		p := plot.New()
		p.Title.Text = pl.title
		p.X.Label.Text, p.Y.Label.Text = pl.x, pl.y
		if pl.logY {
			p.Y.Scale = plot.LogScale{}
			p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		}
		// Bottom right for the CDF (its curves end top right), top left for
		// completeness (its curves sit at the top), top right otherwise.
		p.Legend.Top = pl.name != "latency-cdf"
		p.Legend.Left = pl.name == "completeness-vs-n"
		var err error
		if pl.name == "latency-cdf" {
			err = plotutil.AddLines(p, args...)
		} else {
			err = plotutil.AddLinePoints(p, args...)
		}
		if err != nil {
			return files, fmt.Errorf("bench: plot %s: %w", pl.name, err)
		}
		p.Add(bars...) // the range over the repeated runs
		for _, ext := range []string{".png", ".svg"} {
			f := filepath.Join(dir, pl.name+ext)
			if err := p.Save(16*vg.Centimeter, 10*vg.Centimeter, f); err != nil {
				return files, fmt.Errorf("bench: plot %s: %w", f, err)
			}
			files = append(files, f)
		}
	}
	slices.Sort(files)
	return files, nil
}

// errPoints are a curve's medians with the smallest and largest run's
// values as error bars.
type errPoints struct {
	plotter.XYs
	lo, hi []float64
}

func (e errPoints) YError(i int) (float64, float64) {
	return e.XYs[i].Y - e.lo[i], e.hi[i] - e.XYs[i].Y
}
