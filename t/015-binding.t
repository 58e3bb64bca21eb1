# The plain OpenResty binding (resty.consul_kv) with 2 workers: one watch
# per nginx instance, stats(), all_nodes(), config errors, close().
use lib 't/lib';
use Test::Nginx::Socket::Lua;
use TestCKV;

consul_double(8500);

workers(2);
master_on();
repeat_each(1);
no_shuffle();

# 2 per block (status, body) + one per error_log / no_error_log pattern.
plan tests => repeat_each() * (blocks() * 2 + 4);
run_tests();

__DATA__

=== TEST 1: one long poll per nginx instance: one leader, one follower
--- skip_eval: 3: $TestCKV::real_consul
--- http_config
    lua_shared_dict ckv_t 1m;
    init_by_lua_block { require("resty.consul_kv") }  # the instance's share group
    init_worker_by_lua_block {
        local t = require("ckvtest")
        local consul_kv = require("resty.consul_kv")
        local kv = assert(consul_kv.new({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t015a",
            share = { group = "t015a" },
            timeout = { wait = 5 },
        }))
        t.client = kv
        t.record_per_worker("ckv_t", "role", function()
            return kv:stats().role
        end)
        t.record_per_worker("ckv_t", "web", function()
            return t.show(kv:nodes("http://127.0.0.1:8500/v1/kv/t015a/web/"))
        end)
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local kv = t.client
            t.put(8500, "t015a/web/10.0.0.1:80", '{"weight":2,"priority":1,"fail_timeout":3}')
            local ok, seen = t.wait_workers("ckv_t", "web",
                                            "10.0.0.1:80 w=2 fail_timeout=3 priority=1", 2)
            ngx.say("both workers: ", ok)
            local shm = ngx.shared.ckv_t
            local roles = { shm:get("role:0"), shm:get("role:1") }
            table.sort(roles)
            ngx.say("roles: ", table.concat(roles, " "))
            -- the long polls on the prefix, sampled for a while: never two
            local function polls()
                return t.double_stats(8500).blocking_per_path["/v1/kv/t015a/"] or 0
            end
            t.wait_for(function() return polls() >= 1 end)
            local max = 0
            for _ = 1, 20 do
                max = math.max(max, polls())
                ngx.sleep(0.01)
            end
            ngx.say("long polls on the prefix: ", max)
            -- A follower reads the leader's figures, written shortly after
            -- each change.
            local st
            t.wait_for(function()
                st = kv:stats()
                return st.servers[1].state == "watching"
            end)
            ngx.say("stats: ready ", st.ready, ", source ", st.source,
                    ", services ", st.services, ", nodes ", st.nodes)
            local s1 = st.servers[1]
            ngx.say("server: ", s1.url, " ", s1.state, " index>0 ", s1.last_index > 0,
                    " errors ", s1.errors_total)
            local all = kv:all_nodes()
            ngx.say("all_nodes: ", t.show(all["http://127.0.0.1:8500/v1/kv/t015a/web/"]))
            ngx.say("all_nodes cached: ", kv:all_nodes() == all)
        }
    }
--- response_body
both workers: true
roles: follower leader
long polls on the prefix: 1
stats: ready true, source consul, services 1, nodes 1
server: http://127.0.0.1:8500 watching index>0 true errors 0
all_nodes: 10.0.0.1:80 w=2 fail_timeout=3 priority=1
all_nodes cached: true



=== TEST 2: an invalid config is refused with a message that never shows the token
--- config
    location /t {
        content_by_lua_block {
            local consul_kv = require("resty.consul_kv")
            local cases = {
                { servers = {} , token = "tok-t015-secret" },
                { servers = { "ftp://127.0.0.1:8500" }, token = "tok-t015-secret" },
                { servers = { "http://127.0.0.1:8500/path" }, token = "tok-t015-secret" },
                { servers = { "http://127.0.0.1:8500" }, timeout = { wait = 601 },
                  token = "tok-t015-secret" },
                { servers = { "http://127.0.0.1:8500" }, weight = 0,
                  token = "tok-t015-secret" },
                '{"servers": ["http://127.0.0.1:8500"], "token": "tok-t015-secret",',
            }
            for i, conf in ipairs(cases) do
                local kv, err = consul_kv.new(conf)
                ngx.say(i, ": ", kv == nil, " ", type(err), " ", #err > 0,
                        " token shown: ", err:find("tok-t015", 1, true) ~= nil)
                ngx.log(ngx.INFO, "case ", i, ": ", err)
            end
        }
    }
--- response_body
1: true string true token shown: false
2: true string true token shown: false
3: true string true token shown: false
4: true string true token shown: false
5: true string true token shown: false
6: true string true token shown: false
--- no_error_log
[error]
tok-t015-secret



=== TEST 3: close(): idempotent; tables already returned stay valid, the last snapshot is served
--- http_config
    init_by_lua_block { require("resty.consul_kv") }  # the instance's share group
    init_worker_by_lua_block {
        local consul_kv = require("resty.consul_kv")
        require("ckvtest").client = assert(consul_kv.new({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t015c",
            timeout = { wait = 5 },
            share = { enabled = false },
        }))
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local kv = t.client
            local name = "http://127.0.0.1:8500/v1/kv/t015c/web/"
            t.put(8500, "t015c/web/10.0.0.1:80", "{}")
            local ok, n1 = t.wait_for(function()
                local n = kv:nodes(name)
                return n ~= nil, n
            end)
            ngx.say("seen: ", ok)
            ngx.say("close: ", kv:close(), " again: ", kv:close())
            t.put(8500, "t015c/web/10.0.0.2:80", "{}")
            ngx.say("old table: ", t.show(n1))
            ngx.say("after close: ", t.show(kv:nodes(name)), ", same table: ",
                    kv:nodes(name) == n1)
        }
    }
--- response_body
seen: true
close: true again: true
old table: 10.0.0.1:80 w=1
after close: 10.0.0.1:80 w=1, same table: true
--- no_error_log
[error]
