//go:build unix

package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ErrDataDirInUse: another node (in this process or another) has the
// DataDir open.
var ErrDataDirInUse = errors.New("node: data directory in use by another node")

// lockDir takes an exclusive lock on dir for the node's lifetime (released
// by the returned function, and by the kernel when the process dies).
func lockDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("node: data dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "signalmesh.lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("node: lock data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrDataDirInUse, dir)
		}
		return nil, fmt.Errorf("node: lock data dir: %w", err)
	}
	return func() { _ = f.Close() }, nil
}
