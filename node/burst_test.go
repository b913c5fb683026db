package node_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
)

// One peer publishes 10,000 signals as fast as it can (16 concurrent
// publishers, one signal per call) to 4 others: every subscriber on every
// peer gets all of them, once, whatever GossipSub drops.
func TestBurstIsComplete(t *testing.T) {
	checkLeaks(t)
	const total, writers = 10000, 16
	nodes := cluster(t, 5, nil)
	recs := make([]*recorder, len(nodes))
	for i, n := range nodes {
		recs[i] = newRecorder()
		if _, err := n.Subscribe("burst.*", recs[i].handle); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += writers {
				s := mustSignal(t, "burst.tick", signalmesh.WithSubject(fmt.Sprint(i)))
				if err := nodes[0].Publish(context.Background(), s); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	published := time.Since(start)
	eventually(t, 90*time.Second, "every subscriber has all 10,000", func() bool {
		for _, r := range recs {
			if r.count() < total {
				return false
			}
		}
		return true
	})
	t.Logf("published %d in %v; all delivered on 5 peers after %v", total, published, time.Since(start))
	for i, r := range recs {
		r.mu.Lock()
		n, dups := len(r.seen), 0
		for _, c := range r.seen {
			dups += c - 1
		}
		r.mu.Unlock()
		if n != total || dups != 0 {
			t.Fatalf("node %d: %d distinct, %d duplicates", i, n, dups)
		}
	}
	journalsConverge(t, nodes, total, 90*time.Second)
	t.Logf("journals identical on 5 peers after %v", time.Since(start))
	st, err := nodes[1].Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("receiver status: journaled %d, deduped %d, dropped %v, heads %d", st.Journaled, st.Deduped, st.Dropped, st.Heads)
	for _, n := range nodes {
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
