package node

import (
	"log/slog"

	"github.com/signalmesh/signalmesh/internal/liblog"
)

// RouteLibraryLogs sends the logs of the libraries a node runs on, which
// log through process-wide loggers of their own (go-libp2p through
// gologshim; bitswap, the DAG service and others through ipfs/go-log), to
// l, from level min up (warn is a good choice: they say much at info).
// It is process-wide: call it once, before the first node starts (a
// go-libp2p logger keeps the handler it had at its first message). A
// node's own logs, and those of its go-ds-crdt stores, go to its
// Config.Logger whether or not this is called. The daemon calls it with
// its logger.
func RouteLibraryLogs(l *slog.Logger, min slog.Level) { liblog.Route(l, min) }
