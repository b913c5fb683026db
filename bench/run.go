package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"
)

// Spec says what to run. Zero fields take the standard suite's values.
type Spec struct {
	// Scenarios to run, from "partition", "rejoin", "burst", "steady",
	// "durable". Empty: all.
	Scenarios []string `json:"scenarios"`
	// Peers in the partition and burst scenarios. Default 5.
	Peers int `json:"peers"`
	// Signals per side (partition) or written while one peer is away
	// (rejoin), in the burst, and published (durable).
	// Default 1,000 / 10,000 / 20,000.
	PerSide int `json:"per_side"`
	Burst   int `json:"burst"`
	Durable int `json:"durable"`
	// Rate (signals/s) and Seconds of the steady scenario. Default 1,000
	// for 10 s (short: 200 for 2 s).
	Rate    int     `json:"rate"`
	Seconds float64 `json:"seconds"`
	// Short runs small counts and skips the slowest baseline, for CI.
	Short bool `json:"short"`
}

func (s Spec) withDefaults() Spec {
	if len(s.Scenarios) == 0 {
		s.Scenarios = []string{"partition", "rejoin", "burst", "steady", "durable"}
	}
	def := func(v *int, full, short int) {
		if *v == 0 {
			*v = full
			if s.Short {
				*v = short
			}
		}
	}
	def(&s.Peers, 5, 3)
	def(&s.PerSide, 1000, 100)
	def(&s.Burst, 10000, 500)
	def(&s.Durable, 20000, 1000)
	def(&s.Rate, 1000, 200)
	if s.Seconds == 0 {
		s.Seconds = 10
		if s.Short {
			s.Seconds = 2
		}
	}
	return s
}

// Result is one run: what was asked, where, and what was measured.
type Result struct {
	Spec     Spec      `json:"spec"`
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Machine  Machine   `json:"machine"`
	Revision string    `json:"revision"`
	Figures  []Figure  `json:"figures"`
}

// Machine describes where a result was measured.
type Machine struct {
	GOOS, GOARCH, Go string
	CPUs             int
	Host             string
}

// Run runs the scenarios of spec one after another; progress, when not
// nil, is told each scenario's name before it starts.
func Run(ctx context.Context, spec Spec, progress func(scenario string, i, n int)) (*Result, error) {
	spec = spec.withDefaults()
	for _, sc := range spec.Scenarios {
		switch sc {
		case "partition", "rejoin", "burst", "steady", "durable":
		default:
			return nil, fmt.Errorf("bench: unknown scenario %q (partition, rejoin, burst, steady, durable)", sc)
		}
	}
	host, _ := os.Hostname()
	res := &Result{Spec: spec, Started: time.Now().UTC(), Revision: revision(),
		Machine: Machine{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, Go: runtime.Version(), CPUs: runtime.NumCPU(), Host: host}}
	for i, sc := range spec.Scenarios {
		if progress != nil {
			progress(sc, i, len(spec.Scenarios))
		}
		var figs []Figure
		var err error
		switch sc {
		case "partition":
			figs, err = Partition(ctx, spec.Peers, spec.PerSide, spec.Short)
		case "rejoin":
			figs, err = Rejoin(ctx, spec.Peers, spec.PerSide)
		case "burst":
			figs, err = Burst(ctx, spec.Peers, spec.Burst)
		case "steady":
			figs, err = Steady(ctx, spec.Peers, spec.Rate, time.Duration(spec.Seconds*float64(time.Second)))
		case "durable":
			figs, err = Durable(ctx, spec.Durable)
		}
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", sc, err)
		}
		for k := range figs {
			figs[k].Metric = sc + "/" + figs[k].Metric
		}
		res.Figures = append(res.Figures, figs...)
	}
	res.Seconds = time.Since(res.Started).Seconds()
	return res, nil
}

// revision is the git revision the binary was built from, or of the
// working directory's repository when the build did not record one.
func revision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	out, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// WriteJSON writes the result to dir as <started>.json and returns the path.
func (r *Result) WriteJSON(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, r.Started.Format("20060102T150405Z")+".json")
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}

// Summary prints one line per figure, with each baseline's value as a ratio
// to signalmesh's for the same metric.
func (r *Result) Summary(w io.Writer) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "metric\tsystem\tvalue\tvs signalmesh\tnote\n")
	ours := map[string]float64{} // the first signalmesh figure of each metric
	for _, f := range r.Figures {
		if _, seen := ours[f.Metric]; f.System == "signalmesh" && !seen {
			ours[f.Metric] = f.Value
		}
	}
	for _, f := range r.Figures {
		ratio := ""
		if base := ours[f.Metric]; f.System != "signalmesh" && base != 0 {
			ratio = fmt.Sprintf("%.2fx", f.Value/base)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\t%s\n", f.Metric, f.System, trim(f.Value), f.Unit, ratio, f.Note)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "%d figures in %.0f s on %d CPUs (%s/%s, %s), revision %s\n",
		len(r.Figures), r.Seconds, r.Machine.CPUs, r.Machine.GOOS, r.Machine.GOARCH, r.Machine.Go, shortRev(r.Revision))
}

func trim(v float64) string {
	s := fmt.Sprintf("%.1f", v)
	return strings.TrimSuffix(s, ".0")
}

func shortRev(r string) string {
	if len(r) > 12 {
		return r[:12]
	}
	return r
}
