package chaos

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// drive applies the faults at their times, each lifted after its
// duration; faults may overlap (cuts under way add up). A settle kill is
// not the workload's: finish runs it.
func (c *cluster) drive(ctx context.Context, faults []Fault, start time.Time) error {
	var wg sync.WaitGroup
	errs := make([]error, len(faults))
	for k, f := range faults {
		if f.Kind == SettleKill {
			continue
		}
		if !waitUntil(ctx, start.Add(f.At)) {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.log("fault %s", f)
			if err := c.apply(ctx, k, f, start.Add(f.At+f.For)); err != nil {
				errs[k] = fmt.Errorf("fault %s: %w", f, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func waitUntil(ctx context.Context, t time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Until(t)):
		return true
	}
}

// apply runs fault k until end.
func (c *cluster) apply(ctx context.Context, k int, f Fault, end time.Time) error {
	n := len(c.procs)
	if nodeKind(f.Kind) {
		c.procs[f.Node].life.Lock()
		defer c.procs[f.Node].life.Unlock()
	}
	switch f.Kind {
	case Halves, Bridge, Isolate, OneWay:
		return c.hold(ctx, k, faultPairs(n, f), end)
	case Flap:
		var err error
		for on := true; time.Now().Before(end) && ctx.Err() == nil; on = !on {
			var pairs [][2]int
			if on {
				pairs = faultPairs(n, f)
			}
			err = errors.Join(err, c.setCut(ctx, k, pairs))
			waitUntil(ctx, minTime(end, time.Now().Add(f.Period)))
		}
		return errors.Join(err, c.setCut(context.WithoutCancel(ctx), k, nil))
	case Kill:
		c.kill(f.Node)
		if waitUntil(ctx, end) { // interrupted: the node stays down, Run is ending
			return c.start(ctx, f.Node)
		}
	case Restart:
		err := c.stop(f.Node)
		if waitUntil(ctx, end) {
			return errors.Join(err, c.start(ctx, f.Node))
		}
		return err
	case Pause, LongPause:
		c.pause(f.Node, true)
		waitUntil(ctx, end)
		c.pause(f.Node, false)
	case Slow:
		err := c.net.slow(f.Node, true)
		waitUntil(ctx, end)
		return errors.Join(err, c.net.slow(f.Node, false))
	}
	return nil
}

// faultPairs are the directed pairs a cut fault of n nodes cuts (a
// flap's while it is on); nil for other faults.
func faultPairs(n int, f Fault) [][2]int {
	switch f.Kind {
	case Halves, Bridge, Flap:
		return directed(cutPairs(n, f.Groups))
	case Isolate:
		return directed(cutPairs(n, isolateGroups(n, f.Node)))
	case OneWay:
		return oneWayPairs(f.Groups)
	}
	return nil
}

// hold cuts pairs for fault k until end.
func (c *cluster) hold(ctx context.Context, k int, pairs [][2]int, end time.Time) error {
	err := c.setCut(ctx, k, pairs)
	waitUntil(ctx, end)
	return errors.Join(err, c.setCut(context.WithoutCancel(ctx), k, nil))
}

// setCut sets fault k's cut pairs (nil: lifts them) and applies the union
// of every cut under way.
func (c *cluster) setCut(ctx context.Context, k int, pairs [][2]int) error {
	c.cutMu.Lock()
	defer c.cutMu.Unlock()
	if pairs == nil {
		delete(c.cuts, k)
	} else {
		c.cuts[k] = pairs
	}
	seen := map[[2]int]bool{}
	var all [][2]int
	for _, ps := range c.cuts {
		for _, p := range ps {
			if !seen[p] {
				seen[p] = true
				all = append(all, p)
			}
		}
	}
	return c.net.cut(ctx, all, c)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// outage is the long-outage schedule: one node (the last) is isolated
// while setup.Outage signals are published to the others, in batches of
// 100, then the cut is lifted.
func (c *cluster) outage(ctx context.Context, w *workload) error {
	n := len(c.procs)
	away := n - 1
	if err := c.setCut(ctx, 0, directed(cutPairs(n, isolateGroups(n, away)))); err != nil {
		return err
	}
	defer c.setCut(context.WithoutCancel(ctx), 0, nil)
	c.log("outage: node %d isolated while %d signals are published", away, w.setup.Outage)
	for k := 0; k < w.setup.Outage && ctx.Err() == nil; k += 100 {
		if err := w.batch(k, min(100, w.setup.Outage-k), k/100%(n-1)); err != nil {
			return err
		}
	}
	return ctx.Err()
}
