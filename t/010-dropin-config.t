# The APISIX drop-in (apisix.discovery.consul_kv) in nginx with 2 workers
# against the Consul double: service names, defaults, default_service in
# every worker, skip_keys, check_status, host names and IPv6, malformed
# entries, and the control API.
use lib 't/lib';
use Test::Nginx::Socket::Lua;
use TestCKV;

consul_double(8500);
consul_double(8600);

workers(2);
master_on();
repeat_each(1);
no_shuffle();

# 2 per block (status, body) + one per error_log / no_error_log pattern +
# one per grep_error_log.
plan tests => repeat_each() * (blocks() * 2 + 23);
run_tests();

__DATA__

=== TEST 1: two servers, same key on both: two distinct service names
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8500", "http://127.0.0.1:8600" },
            prefix = "t010a",
            timeout = { wait = 5 },
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
            t.put(8500, "t010a/web/10.0.0.1:80", '{"weight":2}')
            t.put(8600, "t010a/web/10.0.0.1:80", '{"weight":7}')
            local a = "http://127.0.0.1:8500/v1/kv/t010a/web/"
            local b = "http://127.0.0.1:8600/v1/kv/t010a/web/"
            -- polled through all_nodes(): nodes() logs a miss
            local ok = t.wait_for(function()
                local all = d.all_nodes()
                return all[a] ~= nil and all[b] ~= nil
            end)
            ngx.say("both: ", ok)
            ngx.say("8500: ", t.show(d.nodes(a)))
            ngx.say("8600: ", t.show(d.nodes(b)))
            local names = {}
            for name in pairs(d.all_nodes()) do
                names[#names + 1] = name
            end
            table.sort(names)
            ngx.say(table.concat(names, "\n"))
            -- a change on one server touches only that server's service
            t.put(8600, "t010a/web/10.0.0.1:80", '{"weight":9}')
            ok = t.wait_for(function()
                return d.nodes(b)[1].weight == 9
            end)
            ngx.say("8600 changed: ", ok, ", 8500: ", t.show(d.nodes(a)))
        }
    }
--- response_body
both: true
8500: 10.0.0.1:80 w=2
8600: 10.0.0.1:80 w=7
http://127.0.0.1:8500/v1/kv/t010a/web/
http://127.0.0.1:8600/v1/kv/t010a/web/
8600 changed: true, 8500: 10.0.0.1:80 w=2



=== TEST 2: minimal config (servers only): prefix "upstreams", weight 1
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8500" },
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
            t.put(8500, "upstreams/t010b/10.0.0.3:8080", '{"max_fails":2}')
            t.put(8500, "upstreams/t010b/10.0.0.4:8080", '{"weight":5}')
            local name = "http://127.0.0.1:8500/v1/kv/upstreams/t010b/"
            local ok, nodes = t.wait_for(function()
                local n = d.nodes(name)
                return n ~= nil and #n == 2, n
            end)
            ngx.say(ok, " ", t.show_sorted(nodes))
            -- no default_service configured: unknown services are nil
            ngx.say(tostring(d.nodes("http://127.0.0.1:8500/v1/kv/upstreams/nope/")))
        }
    }
--- response_body
true 10.0.0.3:8080 w=1 max_fails=2, 10.0.0.4:8080 w=5
nil
--- error_log
fetch nodes failed by http://127.0.0.1:8500/v1/kv/upstreams/nope/, return default service
--- no_error_log
[crit]



=== TEST 3: default_service answers a missing service in every worker, logged once per worker
--- http_config
    lua_shared_dict ckv_t 1m;
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t010c",
            weight = 3,
            default_service = {
                host = "127.0.0.1",
                port = 20999,
                metadata = { fail_timeout = 1, weight = 1, max_fails = 4 },
            },
        })
    }
    init_worker_by_lua_block {
        local d = require("apisix.discovery.consul_kv")
        d.init_worker()
        require("ckvtest").record_per_worker("ckv_t", "missing", function()
            local n = d.nodes("http://127.0.0.1:8500/v1/kv/t010c/missing/")
            if n == nil then
                return "nil"
            end
            return #n .. " " .. n[1].host .. ":" .. n[1].port .. " w=" .. n[1].weight
                   .. " max_fails=" .. n[1].metadata.max_fails
        end)
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local ok, seen = t.wait_workers("ckv_t", "missing",
                                            "1 127.0.0.1:20999 w=3 max_fails=4", 2)
            ngx.say(ok, " ", seen)
        }
    }
--- response_body
true w0=1 127.0.0.1:20999 w=3 max_fails=4 w1=1 127.0.0.1:20999 w=3 max_fails=4
--- grep_error_log eval
qr/fetch nodes failed by \S+ return default service/
--- grep_error_log_out
fetch nodes failed by http://127.0.0.1:8500/v1/kv/t010c/missing/, return default service
fetch nodes failed by http://127.0.0.1:8500/v1/kv/t010c/missing/, return default service
--- no_error_log
[crit]



=== TEST 4: skip_keys matches "{prefix}/{service}/" exactly; a nested service is kept
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t010d",
            skip_keys = { "t010d/skipped/" },
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
            local base = "http://127.0.0.1:8500/v1/kv/"
            -- written first, so that once the later keys are seen, so is this
            t.put(8500, "t010d/skipped/10.0.0.1:80", "{}")
            t.put(8500, "t010d/skipped/inner/10.0.0.2:80", "{}")
            t.put(8500, "t010d/kept/10.0.0.3:80", "{}")
            local ok = t.wait_for(function()
                return d.nodes(base .. "t010d/kept/") ~= nil
                       and d.nodes(base .. "t010d/skipped/inner/") ~= nil
            end)
            ngx.say("seen: ", ok)
            ngx.say("skipped: ", t.show(d.nodes(base .. "t010d/skipped/")))
            ngx.say("nested: ", t.show(d.nodes(base .. "t010d/skipped/inner/")))
            ngx.say("kept: ", t.show(d.nodes(base .. "t010d/kept/")))
            local n = 0
            for _ in pairs(d.all_nodes()) do n = n + 1 end
            ngx.say("services: ", n)
        }
    }
--- response_body
seen: true
skipped: nil
nested: 10.0.0.2:80 w=1
kept: 10.0.0.3:80 w=1
services: 2
--- error_log
fetch nodes failed by http://127.0.0.1:8500/v1/kv/t010d/skipped/, return default service
--- no_error_log
[crit]



=== TEST 5: check_status false (boolean or string) drops a node
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t010e",
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
            local name = "http://127.0.0.1:8500/v1/kv/t010e/web/"
            t.put(8500, "t010e/web/10.0.0.1:80", '{"check_status":false}')
            t.put(8500, "t010e/web/10.0.0.2:80", '{"check_status":"false"}')
            t.put(8500, "t010e/web/10.0.0.3:80", '{"check_status":true,"weight":5}')
            t.put(8500, "t010e/web/10.0.0.4:80", '{"check_status":"true"}')
            local ok, nodes = t.wait_for(function()
                local n = d.nodes(name)
                return n ~= nil and #n >= 2, n
            end)
            ngx.say(ok, " ", t.show_sorted(nodes))
            -- a healthy node turning unhealthy leaves
            t.put(8500, "t010e/web/10.0.0.3:80", '{"check_status":false,"weight":5}')
            ok, nodes = t.wait_for(function()
                local n = d.nodes(name)
                return n ~= nil and #n == 1, n
            end)
            ngx.say(ok, " ", t.show_sorted(nodes))
            t.put(8500, "t010e/web/10.0.0.4:80", '{"check_status":"false"}')
            ok = t.wait_for(function() return d.nodes(name) == nil end)
            ngx.say("all unhealthy: service gone: ", ok)
        }
    }
--- response_body
true 10.0.0.3:80 w=5, 10.0.0.4:80 w=1
true 10.0.0.4:80 w=1
all unhealthy: service gone: true
--- error_log
fetch nodes failed by http://127.0.0.1:8500/v1/kv/t010e/web/, return default service
--- no_error_log
[crit]



=== TEST 6: host names with - and _, and bracketed IPv6 keys
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t010f",
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
            local name = "http://127.0.0.1:8500/v1/kv/t010f/web/"
            t.put(8500, "t010f/web/api-1_b.internal:8080", '{"weight":2}')
            t.put(8500, "t010f/web/[2001:db8::1]:8080", "{}")
            local ok, nodes = t.wait_for(function()
                local n = d.all_nodes()[name]
                return n ~= nil and #n == 2, n
            end)
            ngx.say(ok)
            local hosts = {}
            for _, n in ipairs(nodes) do
                hosts[#hosts + 1] = n.host .. " " .. n.port .. " " .. type(n.port)
            end
            table.sort(hosts)
            ngx.say(table.concat(hosts, "\n"))
        }
    }
--- response_body
true
[2001:db8::1] 8080 number
api-1_b.internal 8080 number



=== TEST 7: malformed entries are skipped with one logged reason each; good ones apply
--- skip_eval: 11: $TestCKV::real_consul
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t010g",
            share = { group = "t010g" },
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
            local base = "http://127.0.0.1:8500/v1/kv/t010g/"
            -- one write, so that all of it arrives in one Consul response
            t.control(8500, "PUT", "/_double/bulk", {
                ["t010g/api/10.0.0.2:81"] = "{}",
                ["t010g/web/10.0.0.1:80"] = '{"weight":2}',
                ["t010g/web/10.0.0.4:80"] = "",
                ["t010g/web/10.0.0.5:80"] = "not json",
                ["t010g/web/10.0.0.6:80"] = "[1,2]",
                ["t010g/web/10.0.0.7:99999"] = "{}",
                ["t010g/web/10.0.0.8:80"] = '{"weight":"heavy"}',
                ["t010g/web/10.0.0.9"] = "{}",
            })
            local ok = t.wait_for(function()
                local all = d.all_nodes()
                return all[base .. "web/"] ~= nil and all[base .. "api/"] ~= nil
            end)
            ngx.say("good entries applied: ", ok)
            ngx.say("web: ", t.show(d.nodes(base .. "web/")))
            ngx.say("api: ", t.show(d.nodes(base .. "api/")))
            -- another response with the same bad entries plus a new one that
            -- sorts last: once its reason is logged, the old ones would have
            -- been logged again before it
            t.put(8500, "t010g/zzz/10.0.0.1:0", "{}")
            ngx.say("new reason logged: ", (t.wait_log([[skipped key "t010g/zzz/10.0.0.1:0"]])))
        }
    }
--- response_body
good entries applied: true
web: 10.0.0.1:80 w=2
api: 10.0.0.2:81 w=1
new reason logged: true
--- grep_error_log eval
qr/skipped key "t010g\/[^"]+"/
--- grep_error_log_out
skipped key "t010g/web/10.0.0.4:80"
skipped key "t010g/web/10.0.0.5:80"
skipped key "t010g/web/10.0.0.6:80"
skipped key "t010g/web/10.0.0.7:99999"
skipped key "t010g/web/10.0.0.8:80"
skipped key "t010g/web/10.0.0.9"
skipped key "t010g/zzz/10.0.0.1:0"
--- error_log eval
[
qr/\[warn\].*skipped key "t010g\/web\/10\.0\.0\.4:80": empty value/,
qr/skipped key "t010g\/web\/10\.0\.0\.5:80": value is not valid JSON/,
qr/skipped key "t010g\/web\/10\.0\.0\.6:80": value is not a JSON object/,
qr/skipped key "t010g\/web\/10\.0\.0\.7:99999": port 99999 out of range/,
qr/skipped key "t010g\/web\/10\.0\.0\.8:80": weight must be an integer/,
qr/skipped key "t010g\/web\/10\.0\.0\.9": expected host:port/,
qr/skipped key "t010g\/zzz\/10\.0\.0\.1:0": port 0 out of range/,
]
--- no_error_log
[error]



=== TEST 8: control API: dump_data() redacts the token, /show_dump_file, version, readiness
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t010h",
            token = "tok-t010h-never-shown",
            dump = { path = ngx.config.prefix() .. "logs/t010h.dump" },
        })
    }
    init_worker_by_lua_block {
        require("apisix.discovery.consul_kv").init_worker()
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local cjson = require("cjson.safe")
            local d = require("apisix.discovery.consul_kv")
            local name = "http://127.0.0.1:8500/v1/kv/t010h/web/"
            ngx.say("version: ", d.version, " ", type(d.version))
            t.put(8500, "t010h/web/10.0.0.1:80", '{"weight":4}')
            ngx.say("ready: ", (t.wait_for(function()
                return d.check_discovery_ready() and d.all_nodes()[name] ~= nil
            end)))

            local dump = d.dump_data()
            ngx.say("dump_data token: ", dump.config.token)
            ngx.say("dump_data prefix: ", dump.config.prefix)
            ngx.say("dump_data services: ", t.show(dump.services[name]))
            ngx.say("token in dump_data: ",
                    cjson.encode(dump):find("tok-t010h", 1, true) ~= nil)

            local api = d.control_api()
            ngx.say("control_api: ", #api, " ", api[1].methods[1], " ", api[1].uris[1])
            local ok, status, body = t.wait_for(function()
                local s, b = api[1].handler()
                local doc = s == 200 and cjson.decode(b)
                return doc and doc.services and doc.services[name] ~= nil, s
            end)
            local s, b = api[1].handler()
            ngx.say("show_dump_file: ", ok, " ", s)
            local doc = cjson.decode(b)
            ngx.say("file: ", t.show(doc.services[name]), ", last_update ",
                    type(doc.last_update), ", expire ", doc.expire)
            ngx.say("same as the file: ",
                    b == t.read_file(ngx.config.prefix() .. "logs/t010h.dump"))
            ngx.say("token in file: ", b:find("tok-t010h", 1, true) ~= nil)
            ngx.say("mode: ", t.file_mode(ngx.config.prefix() .. "logs/t010h.dump"))
        }
    }
--- response_body
version: 0.3 number
ready: true
dump_data token: <redacted>
dump_data prefix: t010h
dump_data services: 10.0.0.1:80 w=4
token in dump_data: false
control_api: 3 GET /show_dump_file
show_dump_file: true 200
file: 10.0.0.1:80 w=4, last_update number, expire 0
same as the file: true
token in file: false
mode: 600
--- no_error_log
[error]
tok-t010h



=== TEST 9: control API without dump: 503; not ready while Consul is unreachable
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8599" },
            prefix = "t010i",
            timeout = { connect = 200 },
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
            local s, b = d.control_api()[1].handler()
            ngx.say(s, " ", b)
            ngx.say(d.check_discovery_ready())
            -- the failure is reported, and readiness does not change
            ngx.say("logged: ", (t.wait_log("127.0.0.1:8599/v1/kv/t010i/")))
            ngx.say(d.check_discovery_ready())
        }
    }
--- response_body
503 dump params is nil
falseconsul_kv: no data from Consul yet
logged: true
falseconsul_kv: no data from Consul yet
--- error_log eval
qr/\[error\].*ckv: http:\/\/127\.0\.0\.1:8599\/v1\/kv\/t010i\/: .*keeping the last good nodes, retry 1 in/
--- no_error_log
[crit]
