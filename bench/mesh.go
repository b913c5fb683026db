package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"

	"github.com/signalmesh/signalmesh"
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

// newMesh starts n signalmesh nodes (in memory, or on disk under dir) and
// connects them.
func newMesh(ctx context.Context, n int, dir string) ([]*node.Node, *cluster, error) {
	mesh := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	c := &cluster{}
	nodes := make([]*node.Node, 0, n)
	for i := 0; i < n; i++ {
		g := node.NewBlocklist()
		cfg := node.Config{Mesh: mesh, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Gater: g, Logger: Quiet()}
		if dir != "" {
			cfg.DataDir = fmt.Sprintf("%s/%d", dir, i)
		}
		nd, err := node.New(ctx, cfg)
		if err != nil {
			_ = c.Close()
			return nil, nil, err
		}
		nodes = append(nodes, nd)
		c.hosts = append(c.hosts, nd.Host())
		c.gaters = append(c.gaters, g)
		c.close = append(c.close, nd.Close)
	}
	if err := Connect(ctx, c.hosts); err != nil {
		_ = c.Close()
		return nil, nil, err
	}
	return nodes, c, nil
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

// identical reports whether every node holds want journal entries with the
// same digest.
func identical(ctx context.Context, nodes []*node.Node, want int) bool {
	first := ""
	for i, n := range nodes {
		c, d, err := n.JournalDigest(ctx)
		if err != nil || c != want || (i > 0 && d != first) {
			return false
		}
		first = d
	}
	return true
}

func rawAll(ctx context.Context, peers []*RawPeer, want int) bool {
	for _, p := range peers {
		if c, err := p.Count(ctx); err != nil || c != want {
			return false
		}
	}
	return true
}

// parallel runs publish(i) for i in [0,total) on 16 goroutines, as a busy
// service would, and returns the first error.
func parallel(total int, publish func(i int) error) error {
	const writers = 16
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += writers {
				if err := publish(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func newSignals(n int, typ string) []*signalmesh.Signal {
	sigs := make([]*signalmesh.Signal, n)
	for i := range sigs {
		sigs[i], _ = signalmesh.New(typ, "/bench", nil, signalmesh.WithSubject(fmt.Sprint(i)))
	}
	return sigs
}
