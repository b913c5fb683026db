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
	{"latency-cdf", "Steady rate: publish-to-all-peers latency", "latency to the last peer (ms)", "fraction of signals", false},
	{"convergence-vs-n", "Two-sided partition: heal to identical journals", "peers", "ms (log)", true},
	{"throughput-vs-n", "Burst: deliveries per second to all subscribers", "peers", "signals/s (log)", true},
	{"completeness-vs-n", "Burst: share the worst subscriber got", "peers", "%", false},
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
