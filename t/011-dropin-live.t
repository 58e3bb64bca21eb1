# The APISIX drop-in with 2 workers while Consul changes and misbehaves:
# nodes registered and unregistered (seen by both workers), keepalive=false
# polling, faults with recovery, an unreachable server, ACL tokens.
use lib 't/lib';
use Test::Nginx::Socket::Lua;
use TestCKV;

consul_double(8500);
# ACL mode with enable_key_list_policy, so that a recurse read without
# key:list is a 403 (without it Consul filters the list: an empty 404).
consul_double(8502, '--token', 'mgmt-t011-secret', '--acl-key-list-policy',
              '--list-token', 'reader-t011-secret=t011');

workers(2);
master_on();
repeat_each(1);
no_shuffle();

# 2 per block (status, body) + one per error_log / no_error_log pattern +
# one per grep_error_log.
plan tests => repeat_each() * (blocks() * 2 + 16);
run_tests();

__DATA__

=== TEST 1: nodes registered and unregistered while running; both workers follow
--- http_config
    lua_shared_dict ckv_t 1m;
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t011a",
            timeout = { wait = 5 },
        })
    }
    init_worker_by_lua_block {
        local t = require("ckvtest")
        local d = require("apisix.discovery.consul_kv")
        d.init_worker()
        t.record_per_worker("ckv_t", "web", function()
            return t.show_sorted(d.nodes("http://127.0.0.1:8500/v1/kv/t011a/web/"))
        end)
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local function step(what, expected)
                local ok, seen = t.wait_workers("ckv_t", "web", expected, 2)
                ngx.say(what, ": ", ok, " ", seen)
            end
            step("start", "nil")
            t.put(8500, "t011a/web/10.0.0.1:80", "{}")
            step("one", "10.0.0.1:80 w=1")
            t.put(8500, "t011a/web/10.0.0.2:80", '{"weight":3}')
            step("two", "10.0.0.1:80 w=1, 10.0.0.2:80 w=3")
            t.put(8500, "t011a/web/10.0.0.2:80", '{"weight":4}')
            step("reweighted", "10.0.0.1:80 w=1, 10.0.0.2:80 w=4")
            t.delete(8500, "t011a/web/10.0.0.1:80")
            step("one left", "10.0.0.2:80 w=4")
            t.delete(8500, "t011a/web/10.0.0.2:80")
            step("none", "nil")
        }
    }
--- response_body
start: true w0=nil w1=nil
one: true w0=10.0.0.1:80 w=1 w1=10.0.0.1:80 w=1
two: true w0=10.0.0.1:80 w=1, 10.0.0.2:80 w=3 w1=10.0.0.1:80 w=1, 10.0.0.2:80 w=3
reweighted: true w0=10.0.0.1:80 w=1, 10.0.0.2:80 w=4 w1=10.0.0.1:80 w=1, 10.0.0.2:80 w=4
one left: true w0=10.0.0.2:80 w=4 w1=10.0.0.2:80 w=4
none: true w0=nil w1=nil
--- grep_error_log eval
qr/fetch nodes failed by \S+ return default service/
--- grep_error_log_out
fetch nodes failed by http://127.0.0.1:8500/v1/kv/t011a/web/, return default service
fetch nodes failed by http://127.0.0.1:8500/v1/kv/t011a/web/, return default service
--- no_error_log
[crit]



=== TEST 2: keepalive false: polls every fetch_interval and picks changes up
--- skip_eval: 3: $TestCKV::real_consul
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t011b",
            share = { group = "t011b" },
            keepalive = false,
            fetch_interval = 1,
        })
    }
    init_worker_by_lua_block {
        require("apisix.discovery.consul_kv").init_worker()
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local d = require("apisix.discovery.consul_kv")
            local name = "http://127.0.0.1:8500/v1/kv/t011b/web/"
            local path = "/v1/kv/t011b/"
            local function gets()
                return t.double_stats(8500).per_path[path] or 0
            end
            -- two consecutive polls, about fetch_interval apart
            local n0 = gets()
            t.wait_for(function() return gets() > n0 end, 3)
            ngx.update_time()
            local t1, n1 = ngx.now(), gets()
            local ok = t.wait_for(function() return gets() > n1 end, 3)
            ngx.update_time()
            local gap = ngx.now() - t1
            ngx.say("next poll: ", ok, ", about 1s later: ", gap > 0.7 and gap < 1.6)
            ngx.say("blocking queries: ",
                    t.double_stats(8500).blocking_per_path[path] or 0)

            t.put(8500, "t011b/web/10.0.0.1:80", '{"weight":2}')
            local ok2, nodes = t.wait_for(function()
                return d.all_nodes()[name] ~= nil, d.all_nodes()[name]
            end, 3)
            ngx.say("added: ", ok2, " ", t.show(d.nodes(name)))
            t.put(8500, "t011b/web/10.0.0.1:80", '{"weight":6}')
            ok2 = t.wait_for(function()
                local n = d.nodes(name)
                return n[1].weight == 6
            end, 3)
            ngx.say("changed: ", ok2, " ", t.show(d.nodes(name)))
            local st = d.stats().servers[1]
            ngx.say("state: ", st.state)
        }
    }
--- response_body
next poll: true, about 1s later: true
blocking queries: 0
added: true 10.0.0.1:80 w=2
changed: true 10.0.0.1:80 w=6
state: polling
--- no_error_log
[error]



=== TEST 3: Consul faults: last good nodes served throughout, error logged, recovery
--- skip_eval: 6: $TestCKV::real_consul
--- http_config
    lua_shared_dict ckv_t 1m;
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t011c",
            timeout = { wait = 5 },
            backoff = { initial = 50, max = 200 },
        })
    }
    init_worker_by_lua_block {
        local t = require("ckvtest")
        local d = require("apisix.discovery.consul_kv")
        d.init_worker()
        -- all_nodes(): polling must not log misses before the first node
        t.record_per_worker("ckv_t", "web", function()
            return t.show_sorted(d.all_nodes()["http://127.0.0.1:8500/v1/kv/t011c/web/"])
        end, 0.005, true)
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local cjson = require("cjson.safe")
            local d = require("apisix.discovery.consul_kv")
            local function faults()
                return cjson.decode(t.control(8500, "GET", "/_double/fault"))
            end
            -- both workers are up (and have nothing yet)
            ngx.say("started: ", (t.wait_workers("ckv_t", "web", "nil", 2)))
            t.put(8500, "t011c/web/10.0.0.1:80", "{}")
            ngx.say("A: ", (t.wait_workers("ckv_t", "web", "10.0.0.1:80 w=1", 2)))

            -- the connection is dropped: the blocked read now, every read later
            t.fault(8500, { kind = "drop_connection", path_prefix = "t011c/",
                            methods = { "GET" } })
            t.put(8500, "t011c/web/10.0.0.2:80", "{}")
            ngx.say("dropped, retried: ", (t.wait_for(function()
                local f = faults()
                return f[1] and f[1].hits >= 3
            end)))
            ngx.say("state: ", (t.wait_for(function()
                return d.stats().servers[1].state == "backoff"
            end)))

            -- then Consul has no leader
            t.fault(8500)
            t.fault(8500, { kind = "no_leader", path_prefix = "t011c/",
                            methods = { "GET" } })
            ngx.say("no leader, retried: ", (t.wait_for(function()
                local f = faults()
                return f[1] and f[1].hits >= 3
            end)))
            local h0 = ngx.shared.ckv_t:get("web:0")
            ngx.say("still served during faults: ", h0)

            -- Consul is back: the change made during the outage arrives
            t.fault(8500)
            local ok, seen = t.wait_workers("ckv_t", "web",
                                            "10.0.0.1:80 w=1, 10.0.0.2:80 w=1", 2)
            ngx.say("recovered: ", ok, " ", seen)
            -- what each worker served, in order: never nothing
            ngx.say("w0: ", ngx.shared.ckv_t:get("web:0:hist"))
            ngx.say("w1: ", ngx.shared.ckv_t:get("web:1:hist"))
            ngx.say("recovery logged: ", (t.wait_log("ckv: http://127.0.0.1:8500/v1/kv/t011c/ recovered after")))
            ngx.say("state: ", (t.wait_for(function()
                return d.stats().servers[1].state == "watching"
            end)))
        }
    }
--- response_body
started: true
A: true
dropped, retried: true
state: true
no leader, retried: true
still served during faults: 10.0.0.1:80 w=1
recovered: true w0=10.0.0.1:80 w=1, 10.0.0.2:80 w=1 w1=10.0.0.1:80 w=1, 10.0.0.2:80 w=1
w0: nil | 10.0.0.1:80 w=1 | 10.0.0.1:80 w=1, 10.0.0.2:80 w=1
w1: nil | 10.0.0.1:80 w=1 | 10.0.0.1:80 w=1, 10.0.0.2:80 w=1
recovery logged: true
state: true
--- error_log eval
[
qr/\[error\].*ckv: http:\/\/127\.0\.0\.1:8500\/v1\/kv\/t011c\/: .*; keeping the last good nodes, retry 1 in/,
qr/\[error\].*ckv: http:\/\/127\.0\.0\.1:8500\/v1\/kv\/t011c\/: HTTP 500 \(Consul has no leader\).*keeping the last good nodes/,
qr/\[notice\].*ckv: http:\/\/127\.0\.0\.1:8500\/v1\/kv\/t011c\/ recovered after \d+ failed attempts/,
]
--- no_error_log
[crit]



=== TEST 4: an unreachable server is retried with backoff and logged once; the other serves
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8599", "http://127.0.0.1:8500" },
            prefix = "t011d",
            share = { group = "t011d" },
            timeout = { connect = 200, wait = 5 },
            backoff = { initial = 50, max = 200 },
        })
    }
    init_worker_by_lua_block {
        require("apisix.discovery.consul_kv").init_worker()
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local d = require("apisix.discovery.consul_kv")
            t.put(8500, "t011d/web/10.0.0.1:80", "{}")
            local name = "http://127.0.0.1:8500/v1/kv/t011d/web/"
            ngx.say("good server: ", (t.wait_for(function()
                return d.all_nodes()[name] ~= nil
            end)), " ", t.show(d.nodes(name)))
            local ok, st = t.wait_for(function()
                local s = d.stats().servers[1]
                return s.errors_total >= 4, s
            end)
            ngx.say("retried: ", ok, ", state ", st.state, ", url ", st.url)
            ngx.say("not ready: ", d.check_discovery_ready())
            ngx.say("logged: ", (t.wait_log("ckv: http://127.0.0.1:8599/v1/kv/t011d/:")))
        }
    }
--- response_body
good server: true 10.0.0.1:80 w=1
retried: true, state backoff, url http://127.0.0.1:8599
not ready: falseconsul_kv: no data from Consul yet
logged: true
--- grep_error_log eval
qr/\[error\].*ckv: http:\/\/127\.0\.0\.1:8599\/v1\/kv\/t011d\/: /
--- grep_error_log_out eval
qr/\A[^\n]+\n\z/
--- no_error_log
[crit]



=== TEST 5: ACL: without a token Consul answers 403; logged, no nodes
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8502" },
            prefix = "t011e",
            backoff = { initial = 50, max = 200 },
        })
    }
    init_worker_by_lua_block {
        require("apisix.discovery.consul_kv").init_worker()
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local d = require("apisix.discovery.consul_kv")
            t.put(8502, "t011e/web/10.0.0.1:80", "{}",
                  { ["X-Consul-Token"] = "mgmt-t011-secret" })
            ngx.say("403 logged: ", (t.wait_log("t011e/: HTTP 403")))
            local n = 0
            for _ in pairs(d.all_nodes()) do n = n + 1 end
            ngx.say("services: ", n)
            ngx.say("ready: ", (d.check_discovery_ready()))
        }
    }
--- response_body
403 logged: true
services: 0
ready: false
--- error_log eval
qr/\[error\].*ckv: http:\/\/127\.0\.0\.1:8502\/v1\/kv\/t011e\/: HTTP 403 \(the ACL token lacks key:read on the prefix\): "Permission denied: (?:anonymous token|token with AccessorID '[-0-9a-f]+') lacks permission/
--- no_error_log
mgmt-t011-secret



=== TEST 6: ACL: an unknown token is refused; the token is not logged
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8502" },
            prefix = "t011f",
            token = "wrong-t011-secret",
            backoff = { initial = 50, max = 200 },
        })
    }
    init_worker_by_lua_block {
        require("apisix.discovery.consul_kv").init_worker()
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local d = require("apisix.discovery.consul_kv")
            ngx.say("403 logged: ", (t.wait_log("t011f/: HTTP 403")))
            local n = 0
            for _ in pairs(d.all_nodes()) do n = n + 1 end
            ngx.say("services: ", n)
            local st = d.stats()
            ngx.say("token in stats: ",
                    require("cjson").encode(st):find("wrong-t011", 1, true) ~= nil)
        }
    }
--- response_body
403 logged: true
services: 0
token in stats: false
--- error_log eval
qr/\[error\].*ckv: http:\/\/127\.0\.0\.1:8502\/v1\/kv\/t011f\/: HTTP 403 \(the ACL token is unknown to Consul\)/
--- no_error_log
wrong-t011-secret



=== TEST 7: ACL: with the right token, nodes; the token is never logged
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8502" },
            prefix = "t011e",
            token = "reader-t011-secret",
            backoff = { initial = 50, max = 200 },
        })
    }
    init_worker_by_lua_block {
        require("apisix.discovery.consul_kv").init_worker()
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local d = require("apisix.discovery.consul_kv")
            local name = "http://127.0.0.1:8502/v1/kv/t011e/web/"
            ngx.say("nodes: ", (t.wait_for(function()
                return d.all_nodes()[name] ~= nil
            end)), " ", t.show(d.nodes(name)))
            t.put(8502, "t011e/web/10.0.0.2:80", '{"weight":2}',
                  { ["X-Consul-Token"] = "mgmt-t011-secret" })
            ngx.say("change: ", (t.wait_for(function()
                return #d.nodes(name) == 2
            end)), " ", t.show_sorted(d.nodes(name)))
            ngx.say("ready: ", (d.check_discovery_ready()))
            ngx.say("dump_data token: ", d.dump_data().config.token)
        }
    }
--- response_body
nodes: true 10.0.0.1:80 w=1
change: true 10.0.0.1:80 w=1, 10.0.0.2:80 w=2
ready: true
dump_data token: <redacted>
--- no_error_log
[error]
reader-t011-secret
mgmt-t011-secret
