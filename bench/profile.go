package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"sync/atomic"
)

// ProfileEnv names a directory: when it is set, every measured window of
// signalmesh in the burst, steady and partition scenarios (publish to the
// last delivery, or the heal) writes a CPU profile there, and a runtime
// trace when ProfileEnv+"_TRACE" is set too. In-process peers only. For
// finding where the time goes, not for figures: profiling costs a few
// percent.
const ProfileEnv = "SIGNALMESH_BENCH_PROFILE"

var profiles atomic.Int64

// profileWindow starts a CPU profile (and a trace) of the window named
// when ProfileEnv is set and the system is signalmesh in this process; the
// function it returns stops them. Errors are printed, never returned: a
// profile is a side output.
func profileWindow(env Env, kind, name string) func() {
	dir := os.Getenv(ProfileEnv)
	if dir == "" || kind != "signalmesh" || env.Processes {
		return func() {}
	}
	k := profiles.Add(1)
	base := filepath.Join(dir, fmt.Sprintf("%s-%02d", name, k))
	f, err := os.Create(base + ".pprof")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "bench profile:", err)
		_ = f.Close()
		return func() {}
	}
	var tf *os.File
	if os.Getenv(ProfileEnv+"_TRACE") != "" {
		if tf, err = os.Create(base + ".trace"); err == nil {
			if err = trace.Start(tf); err != nil {
				_ = tf.Close()
				tf = nil
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench trace:", err)
		}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
		if tf != nil {
			trace.Stop()
			_ = tf.Close()
		}
	}
}
