# The plain OpenResty binding (resty.consul_kv) against the Consul double.
use lib 't/lib';
use Test::Nginx::Socket::Lua;
use TestCKV;

consul_double(8500);

workers(2);
master_on();
repeat_each(1);
plan tests => repeat_each() * (blocks() * 3);
no_shuffle();
run_tests();

__DATA__

=== TEST 1: library loads and reports its versions
--- config
    location /t {
        content_by_lua_block {
            local consul_kv = require("resty.consul_kv")
            ngx.say(consul_kv._VERSION)
            ngx.say(consul_kv.library_version)
            ngx.say(require("resty.consul_kv.cdefs").ABI_VERSION)
        }
    }
--- response_body_like eval
qr{^\d+\.\d+\.\d+\nckv/\d+\.\d+\.\d+\n1\n\z}


=== TEST 2: a node registered while running appears, then goes
--- http_config
    init_worker_by_lua_block {
        local consul_kv = require("resty.consul_kv")
        require("ckvtest").client = assert(consul_kv.new({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t001b",
            timeout = { wait = 2 },
        }))
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local kv = t.client
            local name = "http://127.0.0.1:8500/v1/kv/t001b/web/"
            t.put(8500, "t001b/web/10.0.0.1:8080", '{"weight":3,"max_fails":2}')
            local ok, nodes = t.wait_for(function()
                local n = kv:nodes(name)
                return n ~= nil, n
            end)
            ngx.say(ok, " ", t.show(nodes))
            local same = kv:nodes(name) == kv:nodes(name)
            ngx.say("same table: ", same)
            t.delete(8500, "t001b/web/10.0.0.1:8080")
            ok = t.wait_for(function() return kv:nodes(name) == nil end)
            ngx.say("gone: ", ok)
        }
    }
--- response_body
true 10.0.0.1:8080 w=3 max_fails=2
same table: true
gone: true
