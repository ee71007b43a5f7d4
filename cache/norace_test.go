//go:build !race

package cache

// raceEnabled is set when the tests run under the race detector.
const raceEnabled = false
