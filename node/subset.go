package node

import (
	"context"
	"encoding/json"
	"strings"

	ds "github.com/ipfs/go-datastore"
	"github.com/ipfs/go-datastore/query"

	"github.com/signalmesh/signalmesh"
	"github.com/signalmesh/signalmesh/crdt"
)

// SubscriptionInfo is one entry of the mesh-wide subscription set.
type SubscriptionInfo struct {
	Peer     string `json:"peer"`
	ID       string `json:"id"` // the name of a persistent subscription, else a generated id
	Pattern  string `json:"pattern"`
	Name     string `json:"name,omitempty"` // set for persistent subscriptions
	Priority int    `json:"priority,omitempty"`
}

func (n *Node) startSubscriptionSet() error {
	var err error
	n.subset, err = crdt.Open(n.store, n.dag, n.ps, crdt.Params{
		Namespace:           ds.NewKey("/mesh/" + n.cfg.Mesh + "/subscriptions"),
		Topic:               n.topicName("subscriptions"),
		RebroadcastInterval: n.p.Rebroadcast,
		Has:                 n.dag.HasBlock,
		Logger:              n.log,
	})
	if err != nil {
		return err
	}
	// Entries this peer left from a previous run: its subscriptions are gone
	// until they are made again.
	res, err := n.subset.Query(n.ctx, query.Query{Prefix: "/" + n.self.String(), KeysOnly: true})
	if err != nil {
		return err
	}
	stale, err := res.Rest()
	if err != nil {
		return err
	}
	for _, e := range stale {
		if err := n.subset.Delete(n.ctx, ds.NewKey(e.Key)); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) subKey(id string) ds.Key {
	return ds.NewKey("/" + n.self.String() + "/" + id)
}

// announce adds a subscription to the mesh-wide set.
func (n *Node) announceSub(info SubscriptionInfo) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	return n.subset.Put(context.WithoutCancel(n.ctx), n.subKey(info.ID), b)
}

func (n *Node) withdrawSub(id string) error {
	if n.ctx.Err() != nil {
		return nil // closing: the entry is removed at the next start
	}
	return n.subset.Delete(n.ctx, n.subKey(id))
}

// Subscriptions returns the mesh-wide subscription set as this replica sees
// it: every peer's live subscriptions, converged like the journal.
func (n *Node) Subscriptions(ctx context.Context) ([]SubscriptionInfo, error) {
	res, err := n.subset.Query(ctx, query.Query{})
	if err != nil {
		return nil, err
	}
	all, err := res.Rest()
	if err != nil {
		return nil, err
	}
	out := make([]SubscriptionInfo, 0, len(all))
	for _, e := range all {
		var info SubscriptionInfo
		if err := json.Unmarshal(e.Value, &info); err != nil || !strings.HasPrefix(e.Key, "/"+info.Peer+"/") {
			n.m.reject("subscription_entry")
			continue
		}
		out = append(out, info)
	}
	return out, nil
}

func newSubID(name string) string {
	if name != "" {
		return name
	}
	return signalmesh.NewID()
}
