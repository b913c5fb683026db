package node

import ds "github.com/ipfs/go-datastore"

// SetTestWrapStore wraps the store of every node started after it (tests
// only: set it before starting nodes, reset it to nil in a cleanup).
func SetTestWrapStore(wrap func(ds.Batching) ds.Batching) { testWrapStore = wrap }
