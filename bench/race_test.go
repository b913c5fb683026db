//go:build race

package bench_test

// raceEnabled: TestRunShort runs part of the suite under the race
// detector (the whole of it without).
const raceEnabled = true
