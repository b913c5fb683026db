package chaos

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// fakeNode serves the two endpoints digests reads.
func fakeNode(t *testing.T, status map[string]any) int {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/digest", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"count": 3, "digest": "abc"})
	})
	mux.HandleFunc("/v1/status", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"node": status})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return p
}

// The mesh is not quiescent while a node holds a signal waiting for a
// dependency: DepWait delivers it later, and it is journaled (adopted)
// after that. Seed 12657 read the journals while three nodes held an
// ephemeral node's signal so, and found it delivered and in no journal.
func TestNotQuiescentWhileSignalsWait(t *testing.T) {
	for _, tc := range []struct {
		name    string
		status  map[string]any
		settled bool
	}{
		{"idle", map[string]any{"Unjournaled": 0, "Buffered": 0}, true},
		{"unjournaled", map[string]any{"Unjournaled": 2}, false},
		{"buffered", map[string]any{"Buffered": 1, "Missing": []map[string]any{{"Origin": "12D3KooWhonest"}}}, false},
		// the hostile node's flood waits for holes that never come
		{"buffered for the hostile node", map[string]any{"Buffered": 3, "Missing": []map[string]any{{"Origin": "12D3KooWhostile"}, {"Origin": PeerRef("12D3KooWhostile2")}}}, true},
		{"buffered for both", map[string]any{"Buffered": 3, "Missing": []map[string]any{{"Origin": "12D3KooWhostile"}, {"Origin": "12D3KooWhonest"}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := &loopNet{http: []int{fakeNode(t, map[string]any{}), fakeNode(t, tc.status)}}
			c := &cluster{net: ln, client: http.DefaultClient, procs: []*proc{{i: 0}, {i: 1}},
				hostile: &HostileReport{Peers: map[string]string{"gossip": "12D3KooWhostile", "journal": "12D3KooWhostile2"}}}
			_, same, err := c.digests(context.Background())
			if settled := err == nil && same; settled != tc.settled {
				t.Fatalf("settled %v (err %v), want %v", settled, err, tc.settled)
			}
		})
	}
}
