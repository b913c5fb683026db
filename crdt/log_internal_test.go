package crdt

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// go-ds-crdt's warning for each batch split at MaxBatchDeltaSize is
// expected (the journal writes large batches) and goes to the replica's
// logger at debug; other warnings stay warnings.
func TestBatchSplitWarningIsDebug(t *testing.T) {
	var buf bytes.Buffer
	a := logAdapter{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	a.Warn("delta size over MaxBatchDeltaSize. Commiting.")
	a.Warnf("store is marked %s", "dirty")
	out := buf.String()
	if !strings.Contains(out, `level=DEBUG msg="delta size over MaxBatchDeltaSize. Commiting."`) {
		t.Errorf("the batch split is not at debug:\n%s", out)
	}
	if !strings.Contains(out, `level=WARN msg="store is marked dirty"`) {
		t.Errorf("another warning is not a warning:\n%s", out)
	}
}
