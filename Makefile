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

.PHONY: run test deps deps-test build release bench check-config

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

# The sign-in tests run against a real Redis and a real headless Chromium, the interop
# tests against third-party OpenID software on Node.js: install the Debian packages when
# missing (needs root or sudo; skipped when all are present), then the pinned node
# packages of tests/interop (only when node_modules is missing or older than the lockfile).
INTEROP := tests/interop
deps-test:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v nginx >/dev/null 2>&1 || missing="$$missing nginx"; \
	command -v caddy >/dev/null 2>&1 || missing="$$missing caddy"; \
	if [ -n "$$missing" ]; then \
	  echo "installing test dependencies:$$missing"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || { command -v sudo >/dev/null 2>&1 && sudo=sudo; }; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
	  || echo "warning: could not install$$missing (tests that need them will say so)"; \
	fi
	@if [ ! -f $(INTEROP)/node_modules/.package-lock.json ] || \
	    [ $(INTEROP)/package-lock.json -nt $(INTEROP)/node_modules/.package-lock.json ]; then \
	  echo "installing the interop tests' node packages (npm ci --prefix $(INTEROP))"; \
	  npm ci --prefix $(INTEROP) --no-audit --no-fund --loglevel=error >/dev/null \
	  || echo "warning: npm ci failed (tests/interop.rs will retry and say why)"; \
	fi

test: deps deps-test
	$(CARGO) test --all-targets

check-config: build
	./target/debug/idfabric check --offline

bench: deps
	benches/load.sh
