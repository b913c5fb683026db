package node

import (
	"os"

	ds "github.com/ipfs/go-datastore"
)

// SIGNALMESH_TEST_NOVERIFY=1 turns signature and journal-entry checks off,
// to show what the hostile tests' attacks do without them.
func init() { testNoVerify = os.Getenv("SIGNALMESH_TEST_NOVERIFY") != "" }

// SetTestWrapStore wraps the store of every node started after it (tests
// only: set it before starting nodes, reset it to nil in a cleanup).
func SetTestWrapStore(wrap func(ds.Batching) ds.Batching) { testWrapStore = wrap }

// SetTestCrashClose makes Close leave what a kill -9 would (no adoption,
// no hand-off): the durable parts are what they were.
func SetTestCrashClose(on bool) { testCrashClose = on }
