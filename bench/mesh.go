package bench

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/libp2p/go-libp2p/core/host"

	"github.com/signalmesh/signalmesh/node"
)

// cluster is a set of peers of one kind (signalmesh nodes or raw peers)
// with their gaters, so that a scenario can cut and heal it.
type cluster struct {
	hosts  []host.Host
	gaters []*node.Blocklist
	close  []func() error
}

func (c *cluster) Close() error {
	var errs []error
	for _, f := range c.close {
		errs = append(errs, f())
	}
	return errors.Join(errs...)
}

// cut blocks and disconnects every pair across the two sides (indices).
func (c *cluster) cut(left, right []int) {
	for _, i := range left {
		for _, j := range right {
			c.gaters[i].Block(c.hosts[j].ID())
			c.gaters[j].Block(c.hosts[i].ID())
			_ = c.hosts[i].Network().ClosePeer(c.hosts[j].ID())
		}
	}
}

func (c *cluster) heal(ctx context.Context) error {
	for _, g := range c.gaters {
		g.Clear()
	}
	return Connect(ctx, c.hosts)
}

// newRaw starts n baseline peers and connects them.
func newRaw(ctx context.Context, n int, o RawOptions, dir string) ([]*RawPeer, *cluster, error) {
	c := &cluster{}
	peers := make([]*RawPeer, 0, n)
	for i := 0; i < n; i++ {
		g := node.NewBlocklist()
		o := o
		o.Gater = g
		if dir != "" {
			o.DataDir = fmt.Sprintf("%s/%d", dir, i)
		}
		p, err := NewRawPeer(o)
		if err != nil {
			_ = c.Close()
			return nil, nil, err
		}
		peers = append(peers, p)
		c.hosts = append(c.hosts, p.Host)
		c.gaters = append(c.gaters, g)
		c.close = append(c.close, p.Close)
	}
	if err := Connect(ctx, c.hosts); err != nil {
		_ = c.Close()
		return nil, nil, err
	}
	return peers, c, nil
}

// rawAll reports whether every peer holds want keys. It polls the put-hook
// counts, cheap, and counts the keys only once those reach want, so that,
// as for signalmesh (group.awaitIdentical), the polling does not slow down
// what it waits for.
func rawAll(ctx context.Context, peers []*RawPeer, want int) bool {
	for _, p := range peers {
		if p.Puts.Load() < int64(want) {
			return false
		}
	}
	for _, p := range peers {
		if c, err := p.Count(ctx); err != nil || c != want {
			return false
		}
	}
	return true
}

func tempDirFor(what string) (string, error) { return os.MkdirTemp("", "signalmesh-bench-"+what+"-") }

func removeAll(dir string) { _ = os.RemoveAll(dir) }
