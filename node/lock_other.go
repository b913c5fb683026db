//go:build !unix

package node

import "errors"

// ErrDataDirInUse: another node has the DataDir open.
var ErrDataDirInUse = errors.New("node: data directory in use by another node")

// lockDir relies on the store's own lock where flock does not exist.
func lockDir(string) (func(), error) { return func() {}, nil }
