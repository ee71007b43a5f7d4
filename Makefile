# nodedns build, run and test entry points. `make help` lists them.

# The Go toolchain every target uses: go1.27.3, which the go command fetches
# through the module proxy the first time (about 10 s). Go 1.26 has known
# vulnerabilities in net/http and crypto/tls, which the metrics endpoint
# links; go1.27.3 has none that govulncheck knows of.
GOTOOLCHAIN ?= go1.27.3
export GOTOOLCHAIN
# Every build outside the race detector is static and -trimpath, as the
# image's and the tools' (CoreDNS, the control plane) are, and the modules
# those share with nodedns are pinned to the same versions: then the
# compiled dependencies (client-go above all) are built once and shared by
# every step instead of once per step. The race detector needs cgo.
STATIC      := CGO_ENABLED=0 GOFLAGS=-trimpath
GO          ?= go
BIN         := bin
VERSION     ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can
# report a spurious "context deadline exceeded" when the time is up
# (golang/go#75804, fixed in Go 1.27). 100000 runs take 5 to 10 s a target
# on two cores.
FUZZTIME    ?= 100000x
# Fuzz targets, as package:Target. go test -fuzz runs one target at a time.
FUZZ_TARGETS := ./dnswire:FuzzParseQuery ./dnswire:FuzzTTLOffsets ./resolver:FuzzRequestPath \
                ./upstream:FuzzParseAddr ./upstream:FuzzCheckReply ./bench:FuzzParseQueryFile \
                ./search:FuzzClassify ./cache:FuzzLoadSnapshot

.PHONY: help build run deploy test tests checks measured vet staticcheck vulncheck unit integration memory view-scale fuzz-short conformance soak soak-short fuzz bench bench-go bench-suite bench-storm bench-hostile bench-upgrade clean tools image

help:
	@echo "make build        build bin/nodedns and bin/nodedns-bench"
	@echo "make run          run nodedns on 127.0.0.1:5353 forwarding to /etc/resolv.conf's nameservers"
	@echo "make deploy       regenerate deploy/nodedns.yaml from the kustomize base deploy/base"
	@echo "make image        the container image (Dockerfile), built offline and reproducibly with buildah into $(BIN)/nodedns-image.oci.tar"
	@echo "make test         everything CI checks: vet, staticcheck, govulncheck, go test -race, the end-to-end tests, memory bounds, conformance, a 1-minute soak, short fuzzing"
	@echo "make conformance  nodedns vs Unbound (and CoreDNS) on a test zone served by Knot; summary in test/conformance/testdata/out/"
	@echo "make soak         10 minutes of hits, misses, storms and upstream faults: memory and goroutines stay flat (SOAK=30m for longer)"
	@echo "make view-scale   nodedns in the DaemonSet's memory limit against 100,000 Services on a real API server, at start and through an API server restart (root; ~10 min)"
	@echo "make fuzz         each fuzz target for FUZZTIME runs (default $(FUZZTIME); FUZZTIME=2000000x fuzzes longer)"
	@echo "make bench        Go benchmarks of the hot path, then the side-by-side suite (see bench/README.md)"
	@echo "make bench-go     only the Go benchmarks of the hot path"
	@echo "make bench-suite  only the nodedns vs CoreDNS suite (~10 min; report in bench/results/)"
	@echo "make bench-storm  only the retry-storm scenarios of the suite (storm-delay, storm-drop, storm-shared, fair), for both servers"
	@echo "make bench-hostile only the scenarios of one pod against the others (scan, hostile-idle, hostile-headers, hostile-tcp)"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/nodedns ./cmd/nodedns-bench

run: build
	./$(BIN)/nodedns --log-format console

# deploy/nodedns.yaml is deploy/base rendered as one file, as `kubectl
# kustomize deploy/base` renders it; a test in ./deploy fails when they differ.
deploy:
	$(GO) run ./deploy/render -base deploy/base -o deploy/nodedns.yaml

# The image of the Dockerfile, built offline with Debian's buildah (vfs
# storage in a temporary directory under $(BIN), removed after), the binary
# built here with the Dockerfile's flags; the same commit gives the same
# digest (image/build.sh; test/image/image_test.go runs it from the image).
image:
	VERSION=$(VERSION) GO=$(GO) ./image/build.sh $(BIN)/nodedns-image.oci.tar

# The steps of `make test`, in order, each timed (the times go to the log:
# a cold run must stay within CI's budget).
TEST_STEPS := tools vet staticcheck vulncheck tests checks
# Each step's wall time and the CPU time of its processes: on two cores a
# step whose CPU time is near twice its wall time is compute-bound.
test: SHELL := /bin/bash
test:
	@all=$$SECONDS; for s in $(TEST_STEPS); do \
		TIMEFORMAT="make test: $$s took %0R s (CPU %0U s user + %0S s system)"; \
		time $(MAKE) --no-print-directory $$s || { echo "make test: $$s failed"; exit 1; }; \
	done; echo "make test: passed in $$(( SECONDS - all )) s"

# tools installs what the tests use from outside Go: dig (a real DNS client)
# and dnsperf. It does nothing when they are already there.
tools:
	@./.ci/install-tools

vet:
	$(STATIC) $(GO) vet ./...

staticcheck:
	$(STATIC) $(GO) run $(STATICCHECK) ./...

# govulncheck against the Go vulnerability database, built offline from its
# Go module (tools/vulncheck/run.sh), on what ships: the nodedns binary, as
# the image has it. Binary mode checks the symbols the binary links, in
# seconds; source mode (tools/vulncheck/run.sh ./...) also follows the
# call graph of the tests and the benchmark tools, for minutes.
vulncheck:
	$(STATIC) $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/nodedns
	$(STATIC) ./tools/vulncheck/run.sh -mode binary $(BIN)/nodedns

# The packages under the race detector: every one but the integration
# tests, which drive the real binaries (built without it) from outside,
# and the control plane's harness, which only they and it use (its
# clientset, under the race detector, would double the unit tests'
# compiling).
INTEGRATION := ./test/e2e ./test/image ./deploy ./internal/kubetest
unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 20m -skip '^TestDifferential$$' \
		$$($(GO) list ./... | grep -v -e /test/e2e$$ -e /test/image$$ -e /deploy$$ -e /internal/kubetest$$)

# The end-to-end tests (network namespaces, the control plane, the image):
# real binaries and real peers, driven from outside.
integration: tools
	$(STATIC) $(GO) test -count=1 -timeout 20m $(INTEGRATION)

# The checks of the running binary beside the fuzzing, which is compiling
# most of its time: memory bounds, conformance and the soak one after the
# other (the soak measures itself), fuzz-short in parallel.
checks:
	$(MAKE) --no-print-directory -j2 --output-sync=target measured fuzz-short

measured:
	$(MAKE) --no-print-directory memory
	$(MAKE) --no-print-directory conformance
	$(MAKE) --no-print-directory soak-short

# Both, side by side: the race detector's compiling and the end-to-end
# tests' waiting (for processes, timeouts, the API server) share the
# machine. Each one's output comes whole when it ends.
tests:
	$(MAKE) --no-print-directory -j2 --output-sync=target unit integration

# The differential conformance test (test/conformance/README.md):
# nodedns, and CoreDNS when built, against Unbound, all forwarding to Knot
# DNS on loopback. A difference not in
# test/conformance/known-differences.txt fails, unless CONFORMANCE_STRICT=0.
CONFORMANCE_STRICT ?= 1
conformance: tools
	NODEDNS_CONFORMANCE_STRICT=$(CONFORMANCE_STRICT) NODEDNS_CONFORMANCE_REQUIRE=1 \
		$(STATIC) $(GO) test -count=1 -timeout 10m -run '^TestDifferential$$' -v ./test/conformance

# The soak runs the real binary under hits, misses, storms and upstream
# faults, and checks that memory and goroutines stay flat. Without the race
# detector, which would measure itself. SOAK sets the length.
SOAK ?= 10m
soak:
	NODEDNS_SOAK=$(SOAK) $(STATIC) $(GO) test -count=1 -timeout 0 -run '^TestSoak$$' -v ./cmd/nodedns

soak-short:
	$(MAKE) soak SOAK=1m

# The memory bounds are measured without the race detector, which grows
# goroutine stacks and would measure itself.
memory:
	$(STATIC) $(GO) test -count=1 -run 'WorstCase|AccountedBytes|ViewMemory|ViewListPeak' -v ./resolver ./cache ./kubeview

# The Kubernetes view at scale (kubeview's TestViewScale): nodedns in a
# memory cgroup with the DaemonSet's limit, its cache full, against 100,000
# Services in 10,000 namespaces on a real API server; the peak memory at
# start and through an API server restart. Root (the cgroup); about ten
# minutes on two cores, most of it creating the Services. Not in make test,
# which checks the list's peak at 10,000 Services (TestViewListPeak).
view-scale:
	NODEDNS_VIEW_SCALE=1 $(STATIC) $(GO) test -count=1 -timeout 40m -run '^TestViewScale$$' -v ./kubeview

# make test fuzzes each target for 30000 runs; make fuzz longer.
fuzz-short:
	$(MAKE) --no-print-directory fuzz FUZZTIME=30000x

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(STATIC) $(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

# SUITE_FLAGS passes options to `nodedns-bench suite` (see its --help), e.g.
#   make bench-storm SUITE_FLAGS='--storm-duration 30s --storm-qps 30000'
SUITE_FLAGS ?=

bench: bench-go bench-suite

bench-go:
	$(GO) test -run='^$$' -bench=. -benchmem -count=1 ./dnswire ./cache ./resolver

# The suite pins the servers to core 0 and itself to core 1; it builds CoreDNS
# with tools/coredns/build.sh the first time (a few minutes).
bench-suite: build
	./$(BIN)/nodedns-bench suite --no-build --cpu-profile $(SUITE_FLAGS)

bench-storm: build
	./$(BIN)/nodedns-bench suite --no-build --scenarios storm-delay,storm-drop,storm-shared,fair $(SUITE_FLAGS)

bench-hostile: build
	./$(BIN)/nodedns-bench suite --no-build --scenarios scan,hostile-idle,hostile-headers,hostile-tcp $(SUITE_FLAGS)

# The hand-over under nodedns-bench's open loop at 20k queries/s: an old
# and a new nodedns on core 0, the load on core 1 (cmd/nodedns
# TestUpgradeBench). Run it alone: it measures lost queries.
bench-upgrade:
	NODEDNS_UPGRADE_BENCH=1 $(GO) test -count=1 -run '^TestUpgradeBench$$' -v ./cmd/nodedns

clean:
	rm -rf $(BIN)
