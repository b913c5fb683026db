package node

import "sync"

// askedCap bounds the message ids asked remembers: GossipSub asks a peer
// for at most 5,000 a heartbeat (MaxIHaveLength) and a reply comes within
// its 3 s follow-up time, so an id pushed out by newer ones is one whose
// reply is late or never comes. A forgotten id costs nothing but the old
// behaviour: its message, when it comes, is passed on.
const askedCap = 16384

// asked remembers the ids of the messages this node asked its peers for
// (IWANT, after their IHAVE), read from GossipSub's outgoing RPCs by the
// tracer, so that validate knows a message as second-hand GossipSub repair
// (see there). The oldest id makes room when askedCap are held.
type asked struct {
	mu   sync.Mutex
	at   map[string]int // id → its slot in ring
	ring []string
	next int
}

// add remembers ids.
func (a *asked) add(ids []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.at == nil {
		a.at, a.ring = make(map[string]int), make([]string, askedCap)
	}
	for _, id := range ids {
		if old := a.ring[a.next]; old != "" && a.at[old] == a.next {
			delete(a.at, old)
		}
		a.ring[a.next] = id
		a.at[id] = a.next
		a.next = (a.next + 1) % len(a.ring)
	}
}

// take reports whether id was asked for, and forgets it.
func (a *asked) take(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.at[id]; !ok {
		return false
	}
	delete(a.at, id)
	return true
}
