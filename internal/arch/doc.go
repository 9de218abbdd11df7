// Package arch holds cmk's import rules, the ones docs/architecture.md
// describes, as a test: each package sits in a layer and imports only from
// the layers below it; development tools stay out of the service; the
// control plane speaks no HTTP. A change that breaks a rule, or adds a
// package without giving it a place, fails `go test ./internal/arch`.
package arch
