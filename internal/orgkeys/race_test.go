//go:build race

package orgkeys_test

const raceEnabled = true
