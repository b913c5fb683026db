//go:build race

package main

// raceEnabled: see TestChaosNATShort.
const raceEnabled = true
