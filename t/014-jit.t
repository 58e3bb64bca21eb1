# The nodes() hot path is compiled by LuaJIT (no NYI, no trace abort), as
# lua-resty-core checks its FFI APIs: jit.v writes trace events into the
# error log, and the loop that calls nodes() must show up as a trace.
use lib 't/lib';
use Test::Nginx::Socket::Lua;
use TestCKV;

consul_double(8500);

workers(2);
master_on();
repeat_each(1);
no_shuffle();

# jit.v on, and no trace stitching across C functions (a stitched trace
# would hide a call that the JIT cannot compile).
our $InitJit = <<_EOC_;
        require("jit.v").on("$Test::Nginx::Util::ErrLogFile")
        jit.opt.start("minstitch=100000", "hotloop=10")
_EOC_

# 2 per block (status, body) + error_log and no_error_log patterns (a
# "[TRACE --- content_by_lua..." line is an aborted trace of the loop).
plan tests => repeat_each() * (blocks() * 2 + 16);
run_tests();

__DATA__

=== TEST 1: plain binding: kv:nodes(name) in a hot loop is JIT-compiled
--- http_config eval
"
    init_by_lua_block {
$::InitJit
    }
    init_worker_by_lua_block {
        local consul_kv = require('resty.consul_kv')
        require('ckvtest').client = assert(consul_kv.new({
            servers = { 'http://127.0.0.1:8500' },
            prefix = 't014a',
            timeout = { wait = 5 },
        }))
    }
"
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local kv = t.client
            local name = "http://127.0.0.1:8500/v1/kv/t014a/web/"
            t.put(8500, "t014a/web/10.0.0.1:80", "{}")
            t.wait_for(function() return kv:nodes(name) ~= nil end)
            local n
            for i = 1, 300 do
                n = kv:nodes(name)
            end
            ngx.say(t.show(n))
        }
    }
--- response_body
10.0.0.1:80 w=1
--- error_log eval
qr/\[TRACE\s+\d+ content_by_lua\(nginx\.conf:\d+\):\d+ loop\]/
--- no_error_log eval
["[error]", " -- NYI:", qr/\[TRACE\s+---\s+content_by_lua/]



=== TEST 2: plain binding: a miss (unknown service) is JIT-compiled too
--- http_config eval
"
    init_by_lua_block {
$::InitJit
    }
    init_worker_by_lua_block {
        local consul_kv = require('resty.consul_kv')
        require('ckvtest').client = assert(consul_kv.new({
            servers = { 'http://127.0.0.1:8500' },
            prefix = 't014b',
            timeout = { wait = 5 },
        }))
    }
"
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local kv = t.client
            local name = "http://127.0.0.1:8500/v1/kv/t014b/none/"
            local n = 0
            for i = 1, 300 do
                if kv:nodes(name) == nil then
                    n = n + 1
                end
            end
            ngx.say(n)
        }
    }
--- response_body
300
--- error_log eval
qr/\[TRACE\s+\d+ content_by_lua\(nginx\.conf:\d+\):\d+ loop\]/
--- no_error_log eval
["[error]", " -- NYI:", qr/\[TRACE\s+---\s+content_by_lua/]



=== TEST 3: drop-in: nodes(name) for a known service is JIT-compiled
--- http_config eval
"
    init_by_lua_block {
$::InitJit
        require('ckvtest').dropin_conf({
            servers = { 'http://127.0.0.1:8500' },
            prefix = 't014c',
            timeout = { wait = 5 },
        })
    }
    init_worker_by_lua_block {
        require('apisix.discovery.consul_kv').init_worker()
    }
"
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local d = require("apisix.discovery.consul_kv")
            local nodes = d.nodes
            local name = "http://127.0.0.1:8500/v1/kv/t014c/web/"
            t.put(8500, "t014c/web/10.0.0.1:80", '{"weight":2}')
            t.wait_for(function() return d.all_nodes()[name] ~= nil end)
            local n
            for i = 1, 300 do
                n = nodes(name)
            end
            ngx.say(t.show(n))
        }
    }
--- response_body
10.0.0.1:80 w=2
--- error_log eval
qr/\[TRACE\s+\d+ content_by_lua\(nginx\.conf:\d+\):\d+ loop\]/
--- no_error_log eval
["[error]", " -- NYI:", qr/\[TRACE\s+---\s+content_by_lua/]



=== TEST 4: drop-in: a miss answered by default_service is JIT-compiled
--- http_config eval
"
    init_by_lua_block {
$::InitJit
        require('ckvtest').dropin_conf({
            servers = { 'http://127.0.0.1:8500' },
            prefix = 't014d',
            timeout = { wait = 5 },
            default_service = { host = '127.0.0.1', port = 20999 },
        })
    }
    init_worker_by_lua_block {
        require('apisix.discovery.consul_kv').init_worker()
    }
"
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local d = require("apisix.discovery.consul_kv")
            local nodes = d.nodes
            local name = "http://127.0.0.1:8500/v1/kv/t014d/missing/"
            local first = nodes(name)   -- logs the miss, once
            local n
            for i = 1, 300 do
                n = nodes(name)
            end
            ngx.say(n[1].host, ":", n[1].port, " w=", n[1].weight,
                    " max_fails=", n[1].metadata.max_fails, " same table: ", n == first)
        }
    }
--- response_body
127.0.0.1:20999 w=1 max_fails=1 same table: true
--- error_log eval
[
qr/\[TRACE\s+\d+ content_by_lua\(nginx\.conf:\d+\):\d+ loop\]/,
qr/fetch nodes failed by http:\/\/127\.0\.0\.1:8500\/v1\/kv\/t014d\/missing\/, return default service/,
]
--- no_error_log eval
[" -- NYI:", qr/\[TRACE\s+---\s+content_by_lua/]
