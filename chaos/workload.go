package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Sources of the workload's signals: most use the first; a reused id
// uses the second.
const (
	srcMain = "/chaos"
	srcAlt  = "/chaos/alt"
)

// workload publishes at a steady rate to random nodes, with every
// consistency level, some signals the effects of others. Each op takes the
// same number of draws from its seed whatever happened before (which
// causes were available, which publishes failed), so that the schedule's
// draws do not depend on timing.
type workload struct {
	c     *cluster
	spec  Spec
	setup Setup
	rng   *rand.Rand
	seed  uint64
	start time.Time

	mu     sync.Mutex
	all    []Op
	kinds  map[string]string // id -> consistency
	offset []int64           // per node: how far its record was read
	causes [][]Key           // per node: journaled signals it delivered
	acked  []Op              // journaled publishes acknowledged, in order
	times  map[Key]Op        // the time attribute (Time, Expires) of each key published

	hostileReport *HostileReport // set when the hostile node has stopped
}

func newWorkload(c *cluster, seed uint64, spec Spec, setup Setup) *workload {
	n := len(c.procs)
	return &workload{c: c, spec: spec, setup: setup, seed: seed, rng: rand.New(rand.NewPCG(seed, 7)),
		kinds: map[string]string{}, offset: make([]int64, n), causes: make([][]Key, n)}
}

func (w *workload) ops() []Op {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.all)
}

func (w *workload) run(ctx context.Context) {
	sem := make(chan struct{}, 16) // publishes in flight; when full the next waits
	var wg sync.WaitGroup
	defer wg.Wait()
	every := time.Second / time.Duration(w.spec.Rate)
	t := time.NewTicker(every)
	defer t.Stop()
	for k := 0; ; k++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		op := w.next(k, time.Since(w.start))
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			w.publishRetry(op, k)
		}()
	}
}

// draws are the random numbers of one op, always all drawn.
type draws struct {
	node, level, k, cause, oob, reuse int
	pick                              float64
}

// next draws the k-th publish.
func (w *workload) next(k int, at time.Duration) Op {
	n := len(w.c.procs)
	d := draws{node: w.rng.IntN(n), level: w.rng.IntN(100), k: w.rng.IntN(2), cause: w.rng.IntN(100),
		oob: w.rng.IntN(2), reuse: w.rng.IntN(100), pick: w.rng.Float64()}
	op := Op{Source: srcMain, ID: fmt.Sprintf("s%d-%d", w.seed, k), Type: "chaos.cause", Node: d.node, At: at}
	switch {
	case d.level < 15:
		op.Consistency = "weak"
	case d.level < 45:
		op.Consistency = fmt.Sprintf("quorum:%d", 1+d.k%min(2, n-1))
	default:
		op.Consistency = "eventual"
	}
	if w.setup.Reuse && d.reuse < 2 && op.Consistency != "weak" {
		if prev, ok := w.pickOther(op.Node, d.pick); ok {
			op.Source, op.ID, op.Reuse = srcAlt, prev.ID, true
			op.Subject = w.subject(op.ID)
			w.doom(&op, k)
			return op
		}
	}
	op.Subject = w.subject(op.ID)
	if op.Consistency != "weak" && d.cause < 35 {
		if w.setup.OutOfBand && d.oob == 0 {
			if prev, ok := w.pickOther(op.Node, d.pick); ok {
				op.Cause, op.CauseSource, op.OutOfBand = prev.ID, prev.Source, true
			}
		} else if cs := w.delivered(op.Node); len(cs) > 0 {
			c := cs[recent(len(cs), d.pick)]
			op.Cause, op.CauseSource = c.ID, c.Source
		}
		if op.Cause != "" {
			op.Type = "chaos.effect"
		}
	}
	w.doom(&op, k)
	return op
}

// Parts.Retention: every signal is kept retentionAge from its time
// attribute, and the nodes prune every pruneEvery.
const (
	retentionAge = time.Hour
	pruneEvery   = 500 * time.Millisecond
)

// doom gives the k-th op, when it is among Setup.Doomed, a time attribute
// that puts it 1-5 s (by a hash of its key, not drawn) from the end of its
// retention. An ephemeral node's ops are doomed in the workload's first
// half (ephemeral): a retained signal low in the DAG would keep every
// block above it.
func (w *workload) doom(op *Op, k int) { w.timeOf(op, k < w.setup.Doomed) }

// timeOf sets op's time attribute: the one an op of the same (source, id)
// had (two reuses of an id are one signal, byte for byte, or the second
// is a conflict), else 1-5 s from the end of its retention when doomed,
// else none.
func (w *workload) timeOf(op *Op, doomed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.times == nil {
		w.times = map[Key]Op{}
	}
	if t, ok := w.times[op.Key()]; ok {
		op.Time, op.Expires = t.Time, t.Expires
		return
	}
	if doomed {
		h := fnv.New32a()
		h.Write([]byte(op.Source + " " + op.ID))
		exp := time.Now().Add(time.Second + time.Duration(h.Sum32()%4000)*time.Millisecond)
		op.Time, op.Expires = exp.Add(-retentionAge).UTC().Format(time.RFC3339Nano), exp.UnixNano()
	}
	w.times[op.Key()] = Op{Time: op.Time, Expires: op.Expires}
}

// doomed reports whether an op was published doomed (Parts.Retention).
func (o Op) doomed() bool { return o.Expires != 0 }

// subject is the subject of the signal id with the group part on (by a
// hash of the id, not drawn: two publishes of an id carry the same one),
// "" without it.
func (w *workload) subject(id string) string {
	if w.setup.Group == "" {
		return ""
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	return fmt.Sprintf("subj-%d", h.Sum32()%groupSubjects)
}

// recent maps u in [0, 1) to an index of n, biased to the last ones.
func recent(n int, u float64) int {
	return n - 1 - int(float64(n)*u*u*u)
}

// pickOther picks a recent acknowledged journaled publish, of the main
// source, made on another node than node (-1: any).
func (w *workload) pickOther(node int, u float64) (Op, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var from []Op
	for k := len(w.acked) - 1; k >= 0 && len(from) < 200; k-- {
		if o := w.acked[k]; o.Node != node && o.Source == srcMain {
			from = append(from, o)
		}
	}
	if len(from) == 0 {
		return Op{}, false
	}
	slices.Reverse(from)
	return from[recent(len(from), u)], true
}

// delivered reads what node i's record gained since the last call and
// returns the journaled signals it has delivered.
func (w *workload) delivered(i int) []Key {
	w.mu.Lock()
	defer w.mu.Unlock()
	f, err := os.Open(w.c.procs[i].record)
	if err != nil {
		return w.causes[i]
	}
	defer f.Close()
	if _, err := f.Seek(w.offset[i], io.SeekStart); err != nil {
		return w.causes[i]
	}
	b, _ := io.ReadAll(f)
	if k := bytes.LastIndexByte(b, '\n'); k >= 0 {
		b = b[:k+1]
		w.offset[i] += int64(len(b))
		for _, line := range bytes.Split(b[:len(b)-1], []byte("\n")) {
			var e Entry
			if json.Unmarshal(line, &e) == nil && e.ID != "" && !e.Again && e.Source == srcMain && w.kinds[e.ID] != "weak" && w.kinds[e.ID] != "" {
				w.causes[i] = append(w.causes[i], e.Key())
			}
		}
	}
	return w.causes[i]
}

// publishRetry publishes op and, when its outcome is unknown and retries
// are on, publishes the same (source, id) and content once more on
// another node (chosen from the op's index, not drawn).
func (w *workload) publishRetry(op Op, k int) {
	op = w.publish(op, w.c.net.api(op.Node), w.c.procs[op.Node])
	if op.Outcome != Unknown || !w.setup.Retry || op.Probe {
		return
	}
	n := len(w.c.procs)
	r := op
	r.Node = (op.Node + 1 + k%(n-1)) % n
	r.Retry, r.At, r.Err, r.Status, r.Live = true, time.Since(w.start), "", 0, false
	w.publish(r, w.c.net.api(r.Node), w.c.procs[r.Node])
}

// body is the CloudEvent of an op, and the digest of its data.
func (op Op) body() ([]byte, string) {
	// Not the node: a retry on another node is the same event, byte for byte.
	data, _ := json.Marshal(map[string]any{"id": op.ID, "source": op.Source, "eph": op.Ephemeral})
	ev := map[string]any{"specversion": "1.0", "id": op.ID, "source": op.Source, "type": op.Type, "data": json.RawMessage(data)}
	if op.Subject != "" {
		ev["subject"] = op.Subject
	}
	if op.Time != "" {
		ev["time"] = op.Time
	}
	if op.Cause != "" {
		ev["causeid"] = op.Cause
		if op.CauseSource != "" {
			ev["causesource"] = op.CauseSource
		}
	}
	b, _ := json.Marshal(ev)
	return b, DataSum(data)
}

// publish sends op to the API at addr (of process p, nil for an
// ephemeral node, which is live while it runs) and records its outcome.
func (w *workload) publish(op Op, addr string, p *proc) Op {
	body, sum := op.body()
	op.Sum = sum
	if p != nil {
		op.Origin = p.id
	}
	w.mu.Lock()
	w.kinds[op.ID] = op.Consistency
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://%s/v1/publish?consistency=%s&timeout=2s", addr, op.Consistency)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	epoch, live := 0, true
	if p != nil {
		epoch, live = p.live()
	}
	t0 := time.Now()
	resp, err := w.c.client.Do(req)
	op.Took = time.Since(t0)
	if p != nil {
		e2, live2 := p.live()
		live = live && live2 && e2 == epoch
	}
	op.Live = live
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		op.Outcome, op.Err = Refused, err.Error() // the node is down: nothing was sent
	case err != nil:
		op.Outcome, op.Err = Unknown, err.Error()
	default:
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		op.Status = resp.StatusCode
		switch {
		case resp.StatusCode == http.StatusAccepted:
			op.Outcome = Acked
		case resp.StatusCode == http.StatusGatewayTimeout && strings.HasPrefix(op.Consistency, "quorum"):
			op.Outcome, op.Err = QuorumTimeout, strings.TrimSpace(string(msg))
		case resp.StatusCode >= 500:
			// The node may have journaled it before failing.
			op.Outcome, op.Err = Unknown, resp.Status+": "+strings.TrimSpace(string(msg))
		default:
			op.Outcome, op.Err = Refused, resp.Status+": "+strings.TrimSpace(string(msg))
		}
	}
	w.mu.Lock()
	w.all = append(w.all, op)
	if op.Outcome == Acked && op.journaled() && !op.Reuse && !op.Probe {
		w.acked = append(w.acked, op)
	}
	w.mu.Unlock()
	return op
}

// batch publishes count eventual signals (ids o<seed>-<first+j>) to node
// in one batch-mode request (the long-outage schedule).
func (w *workload) batch(first, count, node int) error {
	p := w.c.procs[node]
	ops := make([]Op, count)
	var evs []json.RawMessage
	for j := range ops {
		ops[j] = Op{Source: srcMain, ID: fmt.Sprintf("o%d-%d", w.seed, first+j), Type: "chaos.cause", Node: node,
			Origin: p.id, Consistency: "eventual", At: time.Since(w.start)}
		b, sum := ops[j].body()
		ops[j].Sum = sum
		evs = append(evs, b)
	}
	body, _ := json.Marshal(evs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+w.c.net.api(node)+"/v1/publish", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/cloudevents-batch+json")
	t0 := time.Now()
	resp, err := w.c.client.Do(req)
	outcome, status, msg := Unknown, 0, ""
	if err != nil {
		msg = err.Error()
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		status, msg = resp.StatusCode, strings.TrimSpace(string(b))
		switch {
		case status == http.StatusAccepted:
			outcome, msg = Acked, ""
		case status < 500:
			outcome = Refused
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, o := range ops {
		o.Took, o.Outcome, o.Status, o.Err, o.Live = time.Since(t0), outcome, status, msg, true
		w.all = append(w.all, o)
	}
	if outcome != Acked {
		return fmt.Errorf("outage batch at node %d: %d %s", node, status, msg)
	}
	return nil
}
