//go:build race

package zcnet

// raceEnabled reports whether the test binary runs under the race detector.
const raceEnabled = true
