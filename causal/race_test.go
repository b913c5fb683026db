//go:build race

package causal

const raceEnabled = true
