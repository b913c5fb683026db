package liblog_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	golog "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/gologshim"

	"github.com/signalmesh/signalmesh/internal/liblog"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// After Route, go-log's and go-libp2p's loggers write to the given logger,
// from the given level up, and nothing below it.
func TestRouteSendsLibraryLogsToTheLogger(t *testing.T) {
	var buf syncBuf
	liblog.Route(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), slog.LevelWarn)

	gl := golog.Logger("liblog-test")
	gl.Errorw("go-log error", "peer", "p1")
	gl.Warn("go-log warning")
	gl.Info("go-log info, below the level")
	lp := gologshim.Logger("liblog-test-p2p")
	lp.Warn("libp2p warning", "conn", 3)
	lp.Debug("libp2p debug, below the level")

	out := buf.String()
	for _, want := range []string{`msg="go-log error"`, "logger=liblog-test", "peer=p1", `msg="go-log warning"`,
		`msg="libp2p warning"`, "logger=liblog-test-p2p", "conn=3"} {
		if !strings.Contains(out, want) {
			t.Errorf("the logger lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "below the level") {
		t.Errorf("a record below the level got through:\n%s", out)
	}
}
