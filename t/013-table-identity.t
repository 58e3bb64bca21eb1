# nodes() returns the same Lua table for a service until that service
# changes, and a change to one service does not rebuild another's table:
# APISIX's compare_upstream_node then takes its old == new fast path.
# Checked in both workers, for the drop-in and for the plain binding.
use lib 't/lib';
use Test::Nginx::Socket::Lua;
use TestCKV;

consul_double(8500);
consul_double(8600);

workers(2);
master_on();
repeat_each(1);
no_shuffle();

# 3 per block: status, body, no_error_log.
plan tests => repeat_each() * (blocks() * 3);
run_tests();

__DATA__

=== TEST 1: drop-in: same table until the service changes; other services keep theirs (both workers)
--- http_config
    lua_shared_dict ckv_t 1m;
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8500", "http://127.0.0.1:8600" },
            prefix = "t013a",
            timeout = { wait = 5 },
        })
    }
    init_worker_by_lua_block {
        local t = require("ckvtest")
        local d = require("apisix.discovery.consul_kv")
        d.init_worker()
        local web = "http://127.0.0.1:8500/v1/kv/t013a/web/"
        local api = "http://127.0.0.1:8500/v1/kv/t013a/api/"
        local other = "http://127.0.0.1:8600/v1/kv/t013a/web/"
        -- Each worker remembers the first table it got for each service and
        -- records, per service, how many distinct tables it has seen (a new
        -- table while the content is unchanged would be a rebuild).
        local seen = {}
        local function track(label, name)
            local all = d.all_nodes()
            if all[name] == nil then
                return "absent"
            end
            local n = d.nodes(name)
            local s = seen[label]
            if s == nil then
                s = { tables = {}, count = 0 }
                seen[label] = s
            end
            if not s.tables[n] then
                s.tables[n] = true
                s.count = s.count + 1
            end
            return s.count .. " " .. t.show_sorted(n)
        end
        t.record_per_worker("ckv_t", "web", function() return track("web", web) end)
        t.record_per_worker("ckv_t", "api", function() return track("api", api) end)
        t.record_per_worker("ckv_t", "other", function() return track("other", other) end)
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local d = require("apisix.discovery.consul_kv")
            local web = "http://127.0.0.1:8500/v1/kv/t013a/web/"
            local api = "http://127.0.0.1:8500/v1/kv/t013a/api/"
            local function both(label, expected)
                local ok, seen = t.wait_workers("ckv_t", label, expected, 2)
                ngx.say(label, ": ", ok, " ", seen)
            end

            t.put(8500, "t013a/api/10.0.0.9:81", "{}")
            t.put(8600, "t013a/web/10.0.0.7:80", "{}")
            t.put(8500, "t013a/web/10.0.0.1:80", "{}")
            both("web", "1 10.0.0.1:80 w=1")
            both("api", "1 10.0.0.9:81 w=1")
            both("other", "1 10.0.0.7:80 w=1")

            -- in this worker too, calls in a row give one table
            local w1, a1 = d.nodes(web), d.nodes(api)
            ngx.say("same web table: ", d.nodes(web) == w1 and d.nodes(web) == w1)

            -- web changes: a new web table, the same api table
            t.put(8500, "t013a/web/10.0.0.2:80", '{"weight":2}')
            both("web", "2 10.0.0.1:80 w=1, 10.0.0.2:80 w=2")
            ngx.say("web rebuilt: ", d.nodes(web) ~= w1,
                    ", api kept: ", d.nodes(api) == a1)
            local w2 = d.nodes(web)
            ngx.say("new web table stable: ", d.nodes(web) == w2)

            -- a change on the other server and an identical re-PUT
            t.put(8600, "t013a/web/10.0.0.8:80", "{}")
            both("other", "2 10.0.0.7:80 w=1, 10.0.0.8:80 w=1")
            t.put(8500, "t013a/web/10.0.0.1:80", "{}")
            -- a later change elsewhere, to know the re-PUT was processed
            t.put(8500, "t013a/zzz/10.0.0.1:80", "{}")
            ngx.say("later change seen: ", (t.wait_for(function()
                return d.all_nodes()["http://127.0.0.1:8500/v1/kv/t013a/zzz/"] ~= nil
            end)))
            ngx.say("web kept: ", d.nodes(web) == w2, ", api kept: ", d.nodes(api) == a1)
            both("web", "2 10.0.0.1:80 w=1, 10.0.0.2:80 w=2")
            both("api", "1 10.0.0.9:81 w=1")
        }
    }
--- response_body
web: true w0=1 10.0.0.1:80 w=1 w1=1 10.0.0.1:80 w=1
api: true w0=1 10.0.0.9:81 w=1 w1=1 10.0.0.9:81 w=1
other: true w0=1 10.0.0.7:80 w=1 w1=1 10.0.0.7:80 w=1
same web table: true
web: true w0=2 10.0.0.1:80 w=1, 10.0.0.2:80 w=2 w1=2 10.0.0.1:80 w=1, 10.0.0.2:80 w=2
web rebuilt: true, api kept: true
new web table stable: true
other: true w0=2 10.0.0.7:80 w=1, 10.0.0.8:80 w=1 w1=2 10.0.0.7:80 w=1, 10.0.0.8:80 w=1
later change seen: true
web kept: true, api kept: true
web: true w0=2 10.0.0.1:80 w=1, 10.0.0.2:80 w=2 w1=2 10.0.0.1:80 w=1, 10.0.0.2:80 w=2
api: true w0=1 10.0.0.9:81 w=1 w1=1 10.0.0.9:81 w=1



=== TEST 2: plain binding: same table until the service changes; other services keep theirs
--- http_config
    init_worker_by_lua_block {
        local consul_kv = require("resty.consul_kv")
        require("ckvtest").client = assert(consul_kv.new({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t013b",
            timeout = { wait = 5 },
        }))
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local kv = t.client
            local web = "http://127.0.0.1:8500/v1/kv/t013b/web/"
            local api = "http://127.0.0.1:8500/v1/kv/t013b/api/"
            t.put(8500, "t013b/api/10.0.0.9:81", "{}")
            t.put(8500, "t013b/web/10.0.0.1:80", "{}")
            ngx.say("seen: ", (t.wait_for(function()
                return kv:nodes(web) ~= nil and kv:nodes(api) ~= nil
            end)))
            local w1, a1, g1 = kv:nodes(web), kv:nodes(api), kv:generation()
            ngx.say("same: ", kv:nodes(web) == w1, " ", kv:nodes(api) == a1)
            t.put(8500, "t013b/web/10.0.0.1:80", '{"weight":5}')
            ngx.say("changed: ", (t.wait_for(function()
                return kv:nodes(web)[1].weight == 5
            end)))
            ngx.say("generation moved: ", kv:generation() ~= g1)
            ngx.say("web rebuilt: ", kv:nodes(web) ~= w1, ", api kept: ", kv:nodes(api) == a1)
            ngx.say("old web table untouched: ", t.show(w1))
        }
    }
--- response_body
seen: true
same: true true
changed: true
generation moved: true
web rebuilt: true, api kept: true
old web table untouched: 10.0.0.1:80 w=1



=== TEST 3: plain binding: a table nobody holds is collected and decoded again; a held one keeps its identity
--- http_config
    init_worker_by_lua_block {
        local consul_kv = require("resty.consul_kv")
        require("ckvtest").client = assert(consul_kv.new({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t013c",
            timeout = { wait = 5 },
        }))
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local kv = t.client
            local web = "http://127.0.0.1:8500/v1/kv/t013c/web/"
            local api = "http://127.0.0.1:8500/v1/kv/t013c/api/"
            t.put(8500, "t013c/api/10.0.0.9:81", "{}")
            t.put(8500, "t013c/web/10.0.0.1:80", '{"weight":3}')
            ngx.say("seen: ", (t.wait_for(function()
                return kv:nodes(web) ~= nil and kv:nodes(api) ~= nil
            end)))
            -- Only a weak reference to web's table; api's is held.
            local probe = setmetatable({ kv:nodes(web) }, { __mode = "v" })
            local held = kv:nodes(api)
            collectgarbage("collect")
            collectgarbage("collect")
            ngx.say("unheld table collected: ", probe[1] == nil)
            ngx.say("decoded again: ", t.show(kv:nodes(web)))
            ngx.say("held table kept: ", kv:nodes(api) == held)
        }
    }
--- response_body
seen: true
unheld table collected: true
decoded again: 10.0.0.1:80 w=3
held table kept: true
