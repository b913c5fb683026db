// Package liblog sends the logs of the libraries signalmesh runs on to a
// slog.Logger. Those libraries log to process-wide loggers of their own:
// go-libp2p through gologshim (slog handlers bound at each logger's first
// message), bitswap, the DAG service and go-ds-crdt's defaults through
// ipfs/go-log (zap cores). Route replaces both, for the whole process.
// A node's own logs, and those of its go-ds-crdt stores, go to its
// Config.Logger whether or not Route is called.
package liblog

import (
	"context"
	"log/slog"
	"maps"
	"slices"

	golog "github.com/ipfs/go-log/v2"
	"github.com/libp2p/go-libp2p/gologshim"
	"go.uber.org/zap/zapcore"
)

// Route sends every library log at level min or above to l, for the
// whole process: go-log's loggers are set to min (their default is
// error) and write through l; go-libp2p's loggers created from now on
// write through l. Call it once, before the first node starts: a go-libp2p
// logger that already logged keeps its handler.
func Route(l *slog.Logger, min slog.Level) {
	h := levelHandler{min: min, next: l.Handler()}
	gologshim.SetDefaultHandler(h)
	golog.SetPrimaryCore(core{h: h})
	_ = golog.SetLogLevel("*", zapLevel(min).String()) // every logger, and those created later
}

// levelHandler drops records below min.
type levelHandler struct {
	min  slog.Level
	next slog.Handler
}

func (h levelHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.next.Enabled(ctx, l)
}
func (h levelHandler) Handle(ctx context.Context, r slog.Record) error { return h.next.Handle(ctx, r) }
func (h levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return levelHandler{min: h.min, next: h.next.WithAttrs(as)}
}
func (h levelHandler) WithGroup(name string) slog.Handler {
	return levelHandler{min: h.min, next: h.next.WithGroup(name)}
}

// core is a zapcore.Core that writes to a slog.Handler.
type core struct {
	h     slog.Handler
	attrs []slog.Attr
}

var _ zapcore.Core = core{}

func (c core) Enabled(l zapcore.Level) bool { return c.h.Enabled(context.Background(), slogLevel(l)) }

func (c core) With(fs []zapcore.Field) zapcore.Core {
	return core{h: c.h, attrs: append(slices.Clip(c.attrs), attrsOf(fs)...)}
}

func (c core) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c core) Write(e zapcore.Entry, fs []zapcore.Field) error {
	r := slog.NewRecord(e.Time, slogLevel(e.Level), e.Message, 0)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	r.AddAttrs(c.attrs...)
	r.AddAttrs(attrsOf(fs)...)
	return c.h.Handle(context.Background(), r)
}

func (core) Sync() error { return nil }

func attrsOf(fs []zapcore.Field) []slog.Attr {
	if len(fs) == 0 {
		return nil
	}
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fs {
		f.AddTo(enc)
	}
	out := make([]slog.Attr, 0, len(enc.Fields))
	for _, k := range slices.Sorted(maps.Keys(enc.Fields)) {
		out = append(out, slog.Any(k, enc.Fields[k]))
	}
	return out
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	}
	return slog.LevelError
}

func zapLevel(l slog.Level) zapcore.Level {
	switch {
	case l <= slog.LevelDebug:
		return zapcore.DebugLevel
	case l <= slog.LevelInfo:
		return zapcore.InfoLevel
	case l <= slog.LevelWarn:
		return zapcore.WarnLevel
	}
	return zapcore.ErrorLevel
}
