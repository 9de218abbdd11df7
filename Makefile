# cmk — build, test, lint.
#
#   make test    everything CI runs: vet, staticcheck, all tests
#   make bench   the benchmarks (long; not part of make test)

GO ?= go
STATICCHECK_VERSION ?= v0.8.2
GOBIN := $(shell $(GO) env GOPATH)/bin

.PHONY: test lint unit bench build tools

test: lint unit

build:
	$(GO) build ./...

tools:
	@test -x $(GOBIN)/staticcheck || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: tools
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GOBIN)/staticcheck ./...

unit:
	$(GO) test -count=1 -timeout 20m ./...

# Enablement of an org with 1,000 sandboxes against a throttled vault.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./internal/e2e/
