# idfabric — the two commands of README.md, and the tools they need.
#
#   make run    # the gateway on the embedded default (idfabric demo)
#   make test   # every test
#
# Pingora's build needs cmake (zlib-ng, aws-lc); if it is missing it is installed from
# PyPI into .tools/ (project-local, no root needed).

CARGO ?= cargo
TOOLS := $(CURDIR)/.tools
export PATH := $(TOOLS)/venv/bin:$(HOME)/.cargo/bin:$(PATH)

.PHONY: run test deps build release bench check-config

deps:
	@command -v cmake >/dev/null 2>&1 || { \
	  echo "cmake not found: installing it from PyPI into .tools/"; \
	  python3 -m venv $(TOOLS)/venv && $(TOOLS)/venv/bin/pip install --quiet cmake; }

build: deps
	$(CARGO) build

release: deps
	$(CARGO) build --release

run: deps
	$(CARGO) run --quiet -- demo

test: deps
	$(CARGO) test --all-targets -- --test-threads=2

check-config: build
	./target/debug/idfabric check --offline

bench: deps
	benches/load.sh
