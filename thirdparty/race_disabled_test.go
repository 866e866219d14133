//go:build !race

package thirdparty

// raceEnabled reports whether the test binary runs under the race detector.
const raceEnabled = false
