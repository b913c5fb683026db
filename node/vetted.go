package node

import (
	"bytes"
	"sync"

	"github.com/signalmesh/signalmesh"
)

// maxVetted bounds the vetted entries waiting for the put hook: a delta's
// entries are merged soon after they are vetted, and one that never is
// (its delta refused for another entry) is evicted oldest first.
const maxVetted = 4096

// vetted hands the put hook what checkEntry decoded and verified of a
// journal entry from another replica: go-ds-crdt vets every entry of a
// delta before it merges it, then calls the put hook with the same key and
// value. The put hook takes the signal instead of decoding and verifying
// the same bytes again. Safe for concurrent use (go-ds-crdt's workers).
type vetted struct {
	mu   sync.Mutex
	m    map[string]vettedEntry
	ring []string // keys in the order they were vetted
	next int      // the ring's oldest when it is full
}

type vettedEntry struct {
	value []byte
	s     *signalmesh.Signal
}

// put remembers the decoded signal s of the checked entry (key, value).
func (v *vetted) put(key string, value []byte, s *signalmesh.Signal) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = make(map[string]vettedEntry, maxVetted)
	}
	if _, ok := v.m[key]; !ok {
		if len(v.ring) < maxVetted {
			v.ring = append(v.ring, key)
		} else {
			delete(v.m, v.ring[v.next])
			v.ring[v.next] = key
			v.next = (v.next + 1) % maxVetted
		}
	}
	v.m[key] = vettedEntry{value, s}
}

// take returns the signal vetted at key if its value is value, and forgets
// it.
func (v *vetted) take(key string, value []byte) (*signalmesh.Signal, bool) {
	v.mu.Lock()
	e, ok := v.m[key]
	if ok {
		delete(v.m, key) // its ring slot is reused when its turn comes
	}
	v.mu.Unlock()
	if !ok || !bytes.Equal(e.value, value) {
		return nil, false
	}
	return e.s, true
}
