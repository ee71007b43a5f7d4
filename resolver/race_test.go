//go:build race

package resolver

// raceEnabled is set when the tests run under the race detector.
const raceEnabled = true
