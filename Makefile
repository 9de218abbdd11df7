# cmk — build, test, lint.
#
#   make test    everything CI runs: installs the test servers (PostgreSQL,
#                Azurite, Chromium with playwright-core, awscli and boto3) and staticcheck, then gofmt, vet, staticcheck and
#                every test, with no test allowed to skip for a missing server
#   make fuzz    every fuzz target for FUZZTIME each (default 3s, as in make test;
#                longer: make fuzz FUZZTIME=5m)
#   make bench   the benchmarks (long; not part of make test)

GO ?= go
STATICCHECK_VERSION ?= v0.8.2
GOBIN := $(shell $(GO) env GOPATH)/bin

.PHONY: test lint unit fuzz bench build tools deps

test: deps lint unit fuzz

# Servers the tests start themselves on loopback.
deps:
	bash scripts/install-postgres.sh
	bash scripts/install-azurite.sh
	bash scripts/install-chromium.sh
	bash scripts/install-awscli.sh

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
	CMK_REQUIRE_SERVERS=1 $(GO) test -count=1 -timeout 20m ./...

# Every fuzz target, FUZZTIME each.
FUZZTIME ?= 3s
fuzz:
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

# The measurements at report sizes (long; see README). `cmk bench <name>`
# runs one of them.
bench:
	$(GO) run ./cmd/cmk bench all
