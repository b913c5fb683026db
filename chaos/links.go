package chaos

import (
	"context"
	"fmt"
	"strings"
)

// Links is how the edge nodes of the NAT topology reached each other at
// the end of a schedule (after the probes, before the nodes stop), as
// their Status.Links say.
type Links struct {
	// Direct, Relayed and None count the pairs of edges: connected
	// directly (by either side's account), through a relay only, not
	// connected (or neither side answered).
	Direct  int `json:"direct"`
	Relayed int `json:"relayed"`
	None    int `json:"none"`
	// Punched counts the direct pairs across two NATs (Path "nat").
	Punched int        `json:"punched"`
	Pairs   []LinkPair `json:"pairs"`
}

// LinkPair is one pair of edges.
type LinkPair struct {
	A int `json:"a"`
	B int `json:"b"`
	// Path is what lies between them: "lan" (one private network),
	// "nat" (two port-preserving NATs: a hole punch can make the link
	// direct), "symmetric" (a symmetric NAT: it stays relayed).
	Path string `json:"path"`
	// Link is "direct", "relayed" or "none".
	Link string `json:"link"`
	// Punch is how the last hole punch between them ended, as either side
	// recorded it (node.Link.Punch; the more telling of the two).
	Punch string `json:"punch,omitempty"`
	// Sides is how many of the two reported a connection.
	Sides int `json:"sides"`
}

func (l *Links) String() string {
	if l == nil {
		return "not read"
	}
	var lan int
	for _, p := range l.Pairs {
		if p.Path == "lan" && p.Link == "direct" {
			lan++
		}
	}
	s := fmt.Sprintf("%d direct (%d on a LAN, %d hole-punched across two NATs), %d relayed", l.Direct, lan, l.Punched, l.Relayed)
	if l.None > 0 {
		s += fmt.Sprintf(", %d not connected", l.None)
	}
	return s
}

// PunchRank orders the outcomes of hole punches (node.Link.Punch), the
// most telling first: a direct connection (3), dials that failed (2), a
// failed exchange (1: the hole punch did not get as far as the NATs),
// none (0).
func PunchRank(outcome string) int {
	switch {
	case outcome == "direct":
		return 3
	case strings.HasPrefix(outcome, "dials failed"):
		return 2
	case outcome != "":
		return 1
	}
	return 0
}

// nodeLink is the part of node.Link the report reads.
type nodeLink struct {
	Peer   string
	Direct bool
	Punch  string
}

// links reads every edge's links (its /v1/status) and reports each pair
// of edges.
func (c *cluster) links(ctx context.Context) *Links {
	relays := c.net.relays()
	nat, ok := c.net.(*natNet)
	if relays == nil || !ok {
		return nil
	}
	byID := map[string]int{}
	for i, p := range c.procs {
		byID[p.id] = i
	}
	type seen struct {
		sides, direct int
		punch         string
	}
	pairs := map[[2]int]*seen{}
	var edges []int
	for i := range c.procs {
		if nat.lay.site(i) >= 0 {
			edges = append(edges, i)
		}
	}
	for a, i := range edges {
		for _, j := range edges[a+1:] {
			pairs[[2]int{i, j}] = &seen{}
		}
	}
	for _, i := range edges {
		var st struct {
			Node struct {
				Links []nodeLink
			} `json:"node"`
		}
		if err := c.get(ctx, i, "/v1/status", &st); err != nil {
			c.log("node %d: links: %v", i, err)
			continue
		}
		for _, l := range st.Node.Links {
			j, ok := byID[l.Peer]
			if !ok {
				continue
			}
			s := pairs[[2]int{min(i, j), max(i, j)}]
			if s == nil {
				continue // a public node
			}
			s.sides++
			if l.Direct {
				s.direct++
			}
			if PunchRank(l.Punch) > PunchRank(s.punch) {
				s.punch = l.Punch
			}
		}
	}
	out := &Links{}
	for a, i := range edges {
		for _, j := range edges[a+1:] {
			s := pairs[[2]int{i, j}]
			p := LinkPair{A: i, B: j, Path: nat.lay.path(i, j), Punch: s.punch, Sides: s.sides}
			switch {
			case s.direct > 0:
				p.Link = "direct"
				out.Direct++
				if p.Path == "nat" {
					out.Punched++
				}
			case s.sides > 0:
				p.Link = "relayed"
				out.Relayed++
			default:
				p.Link = "none"
				out.None++
			}
			out.Pairs = append(out.Pairs, p)
		}
	}
	return out
}
