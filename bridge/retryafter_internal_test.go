package bridge

import (
	"testing"
	"time"
)

func TestRetryAfterHeader(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		h    string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{" 0 ", 0},
		{"-1", 0},
		{"soon", 0},
		{"Sun, 01 Mar 2026 12:00:07 GMT", 7 * time.Second},
		{"Sun, 01 Mar 2026 11:59:00 GMT", 0}, // in the past
		{"86400", maxRetryAfter},
	} {
		if got := retryAfter(c.h, now); got != c.want {
			t.Errorf("Retry-After %q: %v, want %v", c.h, got, c.want)
		}
	}
}
