# holdfast — see README.md
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo none)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN       := bin/holdfast

.PHONY: all build run test deps bench bench-idle bench-mem bench-sparse conformance h2spec soak docker fuzz lint deploy-check clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/holdfast

## run: the self-contained demo on its embedded config
run: build
	$(BIN) demo

## deps: Debian packages the tests and the bench use (dnsmasq, keepalived, haproxy, nginx, wrk, curl, h2load, chromium, etcd)
deps:
	./scripts/deps.sh

## test: vet and the whole suite under the race detector
test: deps
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...
	# the zero-allocation tests are built without the race detector (it allocates)
	$(GO) test -count=1 -run 'Allocs' ./proxy
	# the bench charts' SVG writer
	python3 -m unittest discover -s bench -p '*_test.py'

## conformance: the HTTP/1.1 conformance suite against holdfast, HAProxy and
## nginx; prints a case x target table and fails if a holdfast case fails
conformance: deps
	@mkdir -p bin
	@CONFORMANCE_TARGETS=holdfast,haproxy,nginx CONFORMANCE_TABLE=$(CURDIR)/bin/conformance.txt \
		$(GO) test -count=1 -timeout 10m -run '^TestConformance$$' ./e2e > bin/conformance.log 2>&1; \
		if [ ! -s bin/conformance.txt ]; then cat bin/conformance.log; exit 1; fi
	@cat bin/conformance.txt
	@echo "(details: bin/conformance.log)"
	@awk 'NR > 1 && $$2 == "FAIL" { f = 1 } END { exit f }' bin/conformance.txt

## h2spec: the HTTP/2 conformance suite (summerwind/h2spec, installed from the Go module
## proxy into bin/, never committed) against an h2c and a TLS listener of the built binary
h2spec: build
	./scripts/h2spec.sh

bench: build deps
	./bench/run.sh

## bench-idle (alias bench-mem): memory per idle keep-alive client connection (RSS growth / N)
## and goroutines for holdfast, HAProxy and nginx, each pinned to one core, at N = 5,000 and
## 10,000 side by side; ROUNDS (5), N ("5000 10000"), INFLIGHT, SETTLE; charts in bench/out/idle-*
bench-idle: build deps
	./bench/idle.sh
bench-mem: bench-idle

## bench-sparse: what a resume from the epoll park costs: N (2000) connections each sending a
## request every EVERY (3s) beside HOT (8) back-to-back ones; p50/p99 of both and CPU per request
bench-sparse: build deps
	./bench/sparse.sh

## soak: SOAK_DURATION (default 10m) of mixed load with faults (backend kills, reloads, a descriptor
## flood, a slowloris flood) against the built binary, loopback only; prints failed requests, RSS
## and goroutines over time. Not part of test.
soak:
	SOAK_DURATION=$${SOAK_DURATION:-10m} $(GO) test -tags soak -count=1 -run '^TestSoak$$' -timeout $${SOAK_TIMEOUT:-30m} -v ./e2e

docker:
	./deploy/docker/build.sh

## lint: go vet and staticcheck (fetched from the Go module proxy)
lint:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

## deploy-check: promtool check rules + promtool test rules on deploy/prometheus (installs Debian's
## prometheus package for promtool if missing); the metric names of deploy/ are checked in make test
deploy-check:
	./scripts/promtool.sh
	$(GO) test -count=1 -run '^TestDeployMetricNames$$' ./app

fuzz:
	$(GO) test -run=NONE -fuzz=FuzzParse -fuzztime=30s ./config

clean:
	rm -rf bin
