package bridge_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/bridge"
	"github.com/signalmesh/signalmesh/journal"
	"github.com/signalmesh/signalmesh/node"
)

// A destination whose named subscription resumes behind Config.Retention
// gets the retained events, not the node's local truncation notice (which
// would leave the mesh as an event of another cluster).
func TestEgressSendsNoTruncationNotice(t *testing.T) {
	var mu sync.Mutex
	var types []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s, err := signalmesh.DecodeJSON(body, signalmesh.Limits{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		types = append(types, s.Type)
		mu.Unlock()
	}))
	defer srv.Close()
	sent := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(types) }
	n, err := node.New(context.Background(), node.Config{Mesh: fmt.Sprintf("egress-notice-%d", time.Now().UnixNano()), DataDir: t.TempDir(),
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: testLogger(t),
		Retention: journal.Retention{{Pattern: "order.**", MaxCount: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	dst := bridge.Destination{Name: "erp", URL: srv.URL, Patterns: []string{"order.**"}}
	start := func() *bridge.Egress {
		eg, err := bridge.NewEgress(n, bridge.EgressConfig{Cluster: "eu", Store: memStore(), Logger: testLogger(t), Destinations: []bridge.Destination{dst}})
		if err != nil {
			t.Fatal(err)
		}
		return eg
	}
	publish := func(k int) {
		for i := range k {
			s, _ := signalmesh.New("order.created", "/shop", map[string]int{"n": i})
			if err := n.Publish(context.Background(), s); err != nil {
				t.Fatal(err)
			}
		}
	}
	eg := start()
	publish(2)
	await(t, "two sent", func() bool { return len(sent()) == 2 })
	if err := eg.Close(); err != nil {
		t.Fatal(err)
	}
	publish(10) // while the destination's subscription is closed: 7 of them leave retention
	await(t, "journaled", func() bool { c, _, err := n.JournalDigest(context.Background()); return err == nil && c == 12 })
	eg = start()
	defer eg.Close()
	// A notice would come before the retained three.
	await(t, "the retained three sent", func() bool { return len(sent()) >= 5 })
	if got := sent(); !slices.Equal(got, slices.Repeat([]string{"order.created"}, 5)) {
		t.Fatalf("the destination for order.** received %v, want 5 order.created", got)
	}
	st, err := n.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Truncated != 7 {
		t.Fatalf("Status.Truncated %d, want the 7 the resumed backlog passed over", st.Truncated)
	}
}
