//go:build race

package node_test

// raceEnabled: the race detector slows a node several times over; the
// tests that start dozens of nodes in one process scale down under it.
const raceEnabled = true
