-- luacheck configuration for the Lua modules and the Test::Nginx helpers
-- (scripts/test-all.sh runs `luacheck lua t/lib`).
std = "ngx_lua"
max_line_length = 100

-- Generated from include/ckv.h: its C declarations are one per line.
files["lua/resty/consul_kv/cdefs.lua"] = { max_line_length = false }
