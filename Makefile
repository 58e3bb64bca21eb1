# ckv: build, test, install. See README.md.
PREFIX      ?= /usr/local
DESTDIR     ?=
LUA_LIB_DIR ?= $(PREFIX)/lib/lua/5.1
LUA_DIR     ?= $(PREFIX)/share/lua/5.1
INSTALL     ?= install
CARGO       ?= cargo

.PHONY: all build build-debug deps test check-header demo bench valgrind soak \
        example install install-lualib clean

all: build

deps:
	@bash scripts/install-deps.sh

# Release library (what nginx loads) plus the Consul test double.
build:
	$(CARGO) build --release -p ckv
	$(CARGO) build --release -p ckv-consul-double

build-debug:
	$(CARGO) build --workspace

# Every check CI runs; prints "total: N passed, M failed" last.
test: deps
	@bash scripts/test-all.sh

# Fails when include/ckv.h or the Lua cdefs are stale.
check-header: build-debug
	@bash scripts/check-header.sh

example: build-debug
	$(MAKE) -C examples

demo: deps
	@bash scripts/demo.sh

bench: deps
	@bash bench/run.sh

valgrind: deps build-debug
	@bash scripts/valgrind.sh

soak: deps build
	@bash scripts/soak.sh

install: build install-lualib
	$(INSTALL) -d $(DESTDIR)$(LUA_LIB_DIR)
	$(INSTALL) -m 755 target/release/libckv.so $(DESTDIR)$(LUA_LIB_DIR)/libckv.so
	$(INSTALL) -d $(DESTDIR)$(PREFIX)/include
	$(INSTALL) -m 644 include/ckv.h $(DESTDIR)$(PREFIX)/include/ckv.h

install-lualib:
	$(INSTALL) -d $(DESTDIR)$(LUA_DIR)/resty/consul_kv
	$(INSTALL) -d $(DESTDIR)$(LUA_DIR)/apisix/discovery/consul_kv
	$(INSTALL) -m 644 lua/resty/consul_kv.lua $(DESTDIR)$(LUA_DIR)/resty/
	$(INSTALL) -m 644 lua/resty/consul_kv/*.lua $(DESTDIR)$(LUA_DIR)/resty/consul_kv/
	$(INSTALL) -m 644 lua/apisix/discovery/consul_kv/*.lua \
		$(DESTDIR)$(LUA_DIR)/apisix/discovery/consul_kv/

clean:
	$(CARGO) clean
	rm -rf t/servroot* bench/out
	$(MAKE) -C examples clean
