// Package testsvc starts real servers (Azurite, PostgreSQL) on loopback for
// tests, so that tests exercise the real protocols rather than mocks.
//
// Each helper finds the server's binaries, starts a private instance on
// 127.0.0.1 and a free port with its data in a temp directory, waits until
// it accepts connections, and stops it when the test (or test binary) is
// done. A program (a benchmark) starts them in a Scope, which Close stops.
//
// When a server is not installed, the test is skipped loudly, with a
// message that starts with "SKIPPED:" and says how to install it. When the
// environment variable CI is set, or CMK_REQUIRE_SERVERS=1, the test fails
// instead: nothing is silently skipped in CI.
//
// For fault tests: PostgresCluster is a PostgreSQL server of one test's own,
// which it may stop, kill and start again; SmallFS mounts a small tmpfs
// (root only) that Fill fills to the last byte.
package testsvc
