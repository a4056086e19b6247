# Abacus: `make run` serves in memory on 127.0.0.1:1453; `make test` installs what the tests
# need (into .tools/ and via apt) and runs everything.

CARGO ?= cargo

.PHONY: schema run build release dist image image-test chart-test manifests kind-test tools test test-unit test-e2e conformance conformance-cluster clients bench lint fmt clean cluster cluster-down

run:
	$(CARGO) run --release --bin abacus

build:
	$(CARGO) build

release:
	$(CARGO) build --release --bin abacus

# The binary the container image ships: release without debug info (target/dist/abacus).
dist:
	$(CARGO) build --profile dist --locked --bin abacus

# The image from that binary (the Dockerfile's prebuilt stage), with podman or docker:
# CONTAINER=docker make image. `docker build .` compiles inside the builder stage instead.
CONTAINER ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
IMAGE ?= abacus:$(shell awk -F'"' '/^version *=/ { print $$2; exit }' Cargo.toml)
image: dist
	$(CONTAINER) build --target prebuilt --build-arg VERSION=$(word 2,$(subst :, ,$(IMAGE))) -t $(IMAGE) .

# The Helm chart offline: lint, schema validation for Kubernetes 1.30-1.37, security scan,
# manifests/ up to date (hack/chart-test.sh); its properties are cargo tests (tests/chart.rs).
chart-test: tools
	bash hack/chart-test.sh

# manifests/abacus.yaml, rendered from the chart for users without Helm.
manifests: tools
	bash hack/manifests.sh

# The chart on a real cluster (needs Docker and kind; exits 2 without them): hack/kind-test.sh.
kind-test:
	bash hack/kind-test.sh

# The image tested with real containers (podman, installed when missing): hack/image-test.sh.
image-test: release
	bash hack/image-test.sh

tools:
	bash hack/install-tools.sh all

test: tools lint test-unit test-e2e chart-test image-test

test-unit:
	$(CARGO) test --release

test-e2e: release
	bash hack/e2e.sh all

conformance: tools release
	bash hack/e2e.sh conformance

# Conformance suite, spread checks and real-client scenarios through nginx round-robin over 3
# Redis-backed nodes (hack/cluster.sh); results in conformance-results-cluster/.
conformance-cluster: tools release
	bash hack/e2e.sh cluster

clients: tools release
	bash hack/e2e.sh clients

bench: tools release
	bash hack/bench.sh

# Redis + 3 release nodes + nginx round-robin on 127.0.0.1:8080 (LB_PORT=0: a free port); state in .cluster/.
cluster: release
	bash hack/cluster.sh up 3

cluster-down:
	bash hack/cluster.sh down

# The AbacusConfig JSON Schema (checked in), the README's settings table and the chart's
# values.schema.json `$defs`, all generated from the Rust types; tests fail when one is stale.
schema: release
	./target/release/abacus schema > docs/abacus-config.schema.json
	./target/release/abacus schema --markdown > target/settings-table.md
	awk 'BEGIN{t=""; while ((getline l < "target/settings-table.md") > 0) t=t l "\n"} \
	  /<!-- settings-table:begin -->/{print; printf "%s", t; skip=1; next} \
	  /<!-- settings-table:end -->/{skip=0} !skip' README.md > target/README.md.new
	mv target/README.md.new README.md
	python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); v["$$defs"]=json.load(open(sys.argv[2]))["$$defs"]; \
	  open(sys.argv[1],"w").write(json.dumps(v,indent=2)+"\n")' charts/abacus/values.schema.json docs/abacus-config.schema.json

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
	rm -rf .tools conformance-results conformance-results-cluster bench-results
