-- LuaRocks package of ckv (not published; `luarocks make` in a checkout).
-- Building needs cargo (Rust >= 1.80) on PATH: the make backend runs
-- `make lib` and then `make install` with the rock tree's directories.
rockspec_format = "3.0"
package = "ckv"
version = "0.1.0-1"
source = {
    -- Point this at the published repository before `luarocks pack`/`upload`.
    url = "git+file:///srv/git/ckv.git",
    tag = "v0.1.0",
}
description = {
    summary = "Consul KV service discovery for OpenResty and Apache APISIX, in Rust",
    detailed = [[
libckv watches Consul KV with blocking queries in a background thread, once
per nginx instance, and hands every worker an immutable snapshot. This rock
installs the library (as lib/lua/5.1/libckv.so, found on lua_package_cpath),
the LuaJIT binding resty.consul_kv and the drop-in replacement for APISIX's
apisix.discovery.consul_kv.]],
    license = "Apache-2.0",
    labels = { "openresty", "apisix", "consul", "service-discovery", "ffi" },
}
dependencies = {
    "lua >= 5.1, < 5.2",
}
build = {
    type = "make",
    build_target = "lib",
    install_target = "install",
    install_variables = {
        PREFIX = "$(PREFIX)",
        -- The SONAME'd library, header and ckv.pc stay inside the rock's own
        -- folder; only lua/ and lib/ are deployed to the tree.
        LIBDIR = "$(PREFIX)/c",
        INCLUDEDIR = "$(PREFIX)/include",
        LUA_LIB_DIR = "$(LUADIR)",
        LUA_CDIR = "$(LIBDIR)",
        LUA_CDIR_LINK = "no",
        INSTALL_DEBUG = "no",
    },
}
