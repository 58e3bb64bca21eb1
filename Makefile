# ckv: build, test, install. See README.md ("Installation").
#
#   make                       release libckv.so (stripped, debug info apart) + the Consul double
#   make GLIBC_FLOOR=2.28      the same library, loadable on glibc >= 2.28 (cargo zigbuild)
#   sudo make install          installs what `make` built; never runs cargo
#   sudo make uninstall        removes exactly what install put there
#   make deb                   target/dist/ckv_<version>-1_amd64.deb (glibc >= 2.28)
#   sudo make install-apisix   replaces APISIX's consul_kv in place (APISIX_HOME=/usr/local/apisix)
PREFIX       ?= /usr/local
DESTDIR      ?=
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
LUA_LIB_DIR  ?= $(PREFIX)/share/lua/5.1
LUA_CDIR     ?= $(PREFIX)/lib/lua/5.1
# Where gdb looks for the separate debug file (its debug-file-directory).
DEBUGDIR     ?= /usr/lib/debug
INSTALL_DEBUG ?= yes
# yes: $(LUA_CDIR)/libckv.so is a relative link to $(LIBDIR)/libckv.so.1 (one
# copy in memory for C and Lua users); no: a copy (LuaRocks trees).
LUA_CDIR_LINK ?= yes
INSTALL      ?= install
CARGO        ?= cargo
OBJCOPY      ?= objcopy
STRIP        ?= strip
GLIBC_FLOOR  ?=

VERSION   := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# The SONAME major is the C ABI version (ckv_abi_version()); build.rs sets it.
SOVERSION := 1
SONAME    := libckv.so.$(SOVERSION)
REALNAME  := libckv.so.$(VERSION)
DIST      := target/dist
# Every Lua module of the repository (a new file needs no edit here).
LUA_FILES := $(shell cd lua && find resty apisix -name '*.lua' | LC_ALL=C sort)
RESTY_FILES := $(filter resty/%,$(LUA_FILES))

ifeq ($(GLIBC_FLOOR),)
CARGO_LIB_BUILD := $(CARGO) build --release -p ckv
CARGO_LIB_OUT   := target/release/libckv.so
else
CARGO_LIB_BUILD := bash packaging/zig-toolchain.sh $(CARGO) zigbuild --release -p ckv \
                   --target x86_64-unknown-linux-gnu.$(GLIBC_FLOOR)
CARGO_LIB_OUT   := target/x86_64-unknown-linux-gnu/release/libckv.so
endif

.PHONY: all build lib double build-debug deps test check-header demo bench valgrind soak \
        example install uninstall install-apisix uninstall-apisix deb packaging-deps clean

all: build

deps:
	@bash scripts/install-deps.sh

# Release library (what nginx loads) plus the Consul test double and ckv-check.
build: lib double

# target/dist/libckv.so.<version>: stripped, with a .gnu_debuglink to
# target/dist/libckv.so.<version>.debug; target/dist/BUILD-INFO says how it
# was built and its highest GLIBC_ symbol version.
lib:
	$(CARGO_LIB_BUILD)
	@mkdir -p $(DIST)
	$(OBJCOPY) --only-keep-debug $(CARGO_LIB_OUT) $(DIST)/$(REALNAME).debug
	$(STRIP) --strip-unneeded -o $(DIST)/$(REALNAME).tmp $(CARGO_LIB_OUT)
	cd $(DIST) && $(OBJCOPY) --add-gnu-debuglink=$(REALNAME).debug $(REALNAME).tmp && mv $(REALNAME).tmp $(REALNAME)
	@printf 'version=%s\nsoname=%s\nglibc_floor=%s\nmax_glibc=%s\n' '$(VERSION)' '$(SONAME)' \
		'$(or $(GLIBC_FLOOR),host)' \
		"$$(objdump -T $(DIST)/$(REALNAME) | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)" \
		> $(DIST)/BUILD-INFO
	@cat $(DIST)/BUILD-INFO

double:
	$(CARGO) build --release -p ckv-consul-double -p ckv-check

build-debug:
	$(CARGO) build --workspace

# Every check CI runs; prints "total: N passed, M failed" last.
# A failed packaging-deps (no network) fails only the packaging steps.
test: deps
	-@$(MAKE) -s packaging-deps
	@bash scripts/test-all.sh

# What the packaging tests download, once per machine (cached in
# ~/.cache/ckv): zig + cargo-zigbuild from PyPI, a Debian bullseye root.
packaging-deps:
	@bash packaging/deps.sh

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

# Installs the files `make` left in target/dist; runs no compiler, so it works
# under sudo without cargo on root's PATH.
install:
	@test -f $(DIST)/$(REALNAME) || { echo "make install: $(DIST)/$(REALNAME) is missing: run make (as yourself) first" >&2; exit 1; }
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(LUA_CDIR)
	$(INSTALL) -m 644 $(DIST)/$(REALNAME) $(DESTDIR)$(LIBDIR)/$(REALNAME)
	ln -sfn $(REALNAME) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sfn $(SONAME) $(DESTDIR)$(LIBDIR)/libckv.so
	$(INSTALL) -m 644 include/ckv.h $(DESTDIR)$(INCLUDEDIR)/ckv.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
		-e 's|@VERSION@|$(VERSION)|' packaging/ckv.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/ckv.pc.tmp
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/ckv.pc.tmp && mv $(DESTDIR)$(PKGCONFIGDIR)/ckv.pc.tmp $(DESTDIR)$(PKGCONFIGDIR)/ckv.pc
ifeq ($(LUA_CDIR_LINK),yes)
	ln -sfn "$$(realpath -m --relative-to=$(LUA_CDIR) $(LIBDIR)/$(SONAME))" $(DESTDIR)$(LUA_CDIR)/libckv.so
else
	rm -f $(DESTDIR)$(LUA_CDIR)/libckv.so
	$(INSTALL) -m 644 $(DIST)/$(REALNAME) $(DESTDIR)$(LUA_CDIR)/libckv.so
endif
	for f in $(LUA_FILES); do \
		$(INSTALL) -d $(DESTDIR)$(LUA_LIB_DIR)/$$(dirname $$f) && \
		$(INSTALL) -m 644 lua/$$f $(DESTDIR)$(LUA_LIB_DIR)/$$f || exit 1; \
	done
ifeq ($(INSTALL_DEBUG),yes)
	$(INSTALL) -d $(DESTDIR)$(DEBUGDIR)$(LIBDIR)
	$(INSTALL) -m 644 $(DIST)/$(REALNAME).debug $(DESTDIR)$(DEBUGDIR)$(LIBDIR)/$(REALNAME).debug
endif

# Removes the files install wrote and the directories it made that are left
# empty; leaves any other file alone.
uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/$(REALNAME) $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libckv.so \
	      $(DESTDIR)$(INCLUDEDIR)/ckv.h $(DESTDIR)$(PKGCONFIGDIR)/ckv.pc $(DESTDIR)$(LUA_CDIR)/libckv.so \
	      $(DESTDIR)$(DEBUGDIR)$(LIBDIR)/$(REALNAME).debug
	for f in $(LUA_FILES); do rm -f $(DESTDIR)$(LUA_LIB_DIR)/$$f; done
	-rmdir $(DESTDIR)$(LUA_LIB_DIR)/resty/consul_kv $(DESTDIR)$(LUA_LIB_DIR)/apisix/discovery/consul_kv \
	       $(DESTDIR)$(LUA_LIB_DIR)/apisix/discovery $(DESTDIR)$(LUA_LIB_DIR)/apisix 2>/dev/null

# The replace-in-place route for an APISIX installation (README "APISIX"):
# APISIX's two consul_kv files are kept as *.apisix next to ours, the binding
# and the library go into APISIX's own deps tree (on its Lua paths already).
APISIX_HOME ?= /usr/local/apisix
APISIX_MOD  := $(DESTDIR)$(APISIX_HOME)/apisix/discovery/consul_kv
APISIX_DEPS := $(DESTDIR)$(APISIX_HOME)/deps
install-apisix:
	@test -f $(DIST)/$(REALNAME) || { echo "make install-apisix: $(DIST)/$(REALNAME) is missing: run make (as yourself) first" >&2; exit 1; }
	@test -f $(APISIX_MOD)/init.lua || { echo "make install-apisix: no $(APISIX_MOD)/init.lua: set APISIX_HOME to the APISIX installation" >&2; exit 1; }
	for f in init.lua schema.lua; do \
		[ -f $(APISIX_MOD)/$$f.apisix ] || cp -p $(APISIX_MOD)/$$f $(APISIX_MOD)/$$f.apisix || exit 1; \
		$(INSTALL) -m 644 lua/apisix/discovery/consul_kv/$$f $(APISIX_MOD)/$$f || exit 1; \
	done
	$(INSTALL) -d $(APISIX_DEPS)/share/lua/5.1/resty/consul_kv $(APISIX_DEPS)/lib/lua/5.1
	for f in $(RESTY_FILES); do \
		$(INSTALL) -m 644 lua/$$f $(APISIX_DEPS)/share/lua/5.1/$$f || exit 1; \
	done
	$(INSTALL) -m 644 $(DIST)/$(REALNAME) $(APISIX_DEPS)/lib/lua/5.1/libckv.so

# Puts APISIX's own module back and removes what install-apisix added.
uninstall-apisix:
	for f in init.lua schema.lua; do \
		[ ! -f $(APISIX_MOD)/$$f.apisix ] || mv $(APISIX_MOD)/$$f.apisix $(APISIX_MOD)/$$f || exit 1; \
	done
	rm -f $(addprefix $(APISIX_DEPS)/share/lua/5.1/,$(RESTY_FILES)) $(APISIX_DEPS)/lib/lua/5.1/libckv.so
	-rmdir $(APISIX_DEPS)/share/lua/5.1/resty/consul_kv 2>/dev/null

# A Debian package of the glibc-2.28 build, in Debian's paths.
deb:
	$(MAKE) lib GLIBC_FLOOR=$(or $(GLIBC_FLOOR),2.28)
	bash packaging/deb/build.sh $(VERSION)

clean:
	$(CARGO) clean
	rm -rf t/servroot* bench/out
	$(MAKE) -C examples clean
