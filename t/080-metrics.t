# Metrics (Prometheus text 0.0.4) from every worker, read with
# prometheus_client's parser; the drop-in's control routes; the retry line
# in APISIX's words, with ckv's real delay, rate-limited.
use lib 't/lib';
use Test::Nginx::Socket::Lua;
use TestCKV;

# The reference parser (scripts/prom-venv.sh makes its venv once, cached).
$ENV{CKV_PROM_PYTHON} = `bash scripts/prom-venv.sh`;
chomp $ENV{CKV_PROM_PYTHON};
# By absolute path: the server root may be anywhere (TEST_NGINX_SERVROOT).
$ENV{CKV_PROM_PARSE} = "$TestCKV::pwd/scripts/prom_parse.py";
die "no prometheus_client venv\n" unless -x $ENV{CKV_PROM_PYTHON};

consul_double(8500, '--max-wait', '2s');

workers(2);
master_on();
no_shuffle();
# 3 per block: status, body, one error_log or no_error_log pattern.
plan tests => repeat_each() * blocks() * 3;
run_tests();

__DATA__

=== TEST 1: both workers render the leader's figures; a real parser reads them
--- main_config
    env CKV_PROM_PYTHON;
    env CKV_PROM_PARSE;
--- http_config
    lua_shared_dict ckv_t 4m;
    init_by_lua_block { require("resty.consul_kv") }
    init_worker_by_lua_block {
        local t = require("ckvtest")
        local kv = assert(require("resty.consul_kv").new({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t080a", timeout = { wait = 2 },
        }))
        t.client = kv
        -- Everything but this worker's own propagation histogram.
        t.record_per_worker("ckv_t", "m", function()
            local text = assert(kv:metrics())
            return (text:gsub("\nckv_propagation_seconds[^\n]*", ""))
        end)
        t.record_per_worker("ckv_t", "role", function() return kv:stats().role end)
        t.record_per_worker("ckv_t", "prop", function()
            return kv:metrics():match("\nckv_propagation_seconds_count{[^}]*} (%d+)")
        end)
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local shm = ngx.shared.ckv_t
            t.put(8500, "t080a/web/10.0.0.1:80", "{}")
            t.put(8500, "t080a/web/10.0.0.2:80", '{"weight":2}')
            t.put(8500, "t080a/api/10.0.0.3:80", "{}")
            ngx.say("roles: ", (select(2, t.wait_worker_values("ckv_t", "role", 2,
                                                             "follower leader"))))
            -- Both workers show the same text once the leader's stats file
            -- has the last request (it is rewritten within 250 ms).
            local same, text = t.wait_for(function()
                local a, b = shm:get("m:0"), shm:get("m:1")
                return a ~= nil and a == b and a:find('ckv_nodes{server="http://127.0.0.1:8500"} 3', 1, true) ~= nil, a
            end)
            ngx.say("workers agree: ", same)
            local path = ngx.config.prefix() .. "logs/t080a.prom"
            t.write_file(path, text)
            local p = io.popen(os.getenv("CKV_PROM_PYTHON") .. " "
                               .. os.getenv("CKV_PROM_PARSE") .. " < " .. path)
            local parsed = p:read("*a")
            p:close()
            local leader = t.client:stats().leader_pid
            local function has(line)
                ngx.say(line:gsub(tostring(leader), "LEADER"), ": ",
                        parsed:find(line .. "\n", 1, true) ~= nil)
            end
            local s = "server='http://127.0.0.1:8500'"
            has("# ckv_server_up gauge")
            has("ckv_server_up{" .. s .. "} 1.0")
            has("ckv_services{" .. s .. "} 2.0")
            has("ckv_nodes{" .. s .. "} 3.0")
            has("# ckv_errors counter")
            has("ckv_errors_total{kind='timeout'," .. s .. "} 0.0")
            has("ckv_errors_total{kind='too_large'," .. s .. "} 0.0")
            has("ckv_ready{} 1.0")
            has("ckv_leader{pid='" .. leader .. "'} 1.0")
            has("# ckv_apply_seconds histogram")
            local applied = tonumber(parsed:match("ckv_apply_seconds_count{} (%d+)"))
            ngx.say("responses applied: ", applied ~= nil and applied >= 1)
            local idx = tonumber(parsed:match("ckv_last_index{" .. s .. "} (%d+)"))
            ngx.say("last index > 0: ", idx ~= nil and idx > 0)
            ngx.say("families parsed: ", select(2, parsed:gsub("\n# ", "")) + 1 >= 14)
            -- Each worker measured its own propagation of those changes.
            ngx.say("propagation seen in both: ", (t.wait_for(function()
                local a, b = tonumber(shm:get("prop:0")), tonumber(shm:get("prop:1"))
                return a and b and a >= 1 and b >= 1
            end)))
        }
    }
--- response_body
roles: follower leader
workers agree: true
# ckv_server_up gauge: true
ckv_server_up{server='http://127.0.0.1:8500'} 1.0: true
ckv_services{server='http://127.0.0.1:8500'} 2.0: true
ckv_nodes{server='http://127.0.0.1:8500'} 3.0: true
# ckv_errors counter: true
ckv_errors_total{kind='timeout',server='http://127.0.0.1:8500'} 0.0: true
ckv_errors_total{kind='too_large',server='http://127.0.0.1:8500'} 0.0: true
ckv_ready{} 1.0: true
ckv_leader{pid='LEADER'} 1.0: true
# ckv_apply_seconds histogram: true
responses applied: true
last index > 0: true
families parsed: true
propagation seen in both: true



=== TEST 2: the drop-in's control routes: stats (JSON, token redacted) and metrics
--- main_config
    env CKV_PROM_PYTHON;
    env CKV_PROM_PARSE;
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t080b",
            token = "tok-t080b-never-shown",
            timeout = { wait = 2 },
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
            t.put(8500, "t080b/web/10.0.0.1:80", "{}")
            t.wait_for(function() return d.check_discovery_ready() end)
            local routes, names = {}, {}
            for _, r in ipairs(d.control_api()) do
                routes[r.uris[1]] = r
                names[#names + 1] = r.methods[1] .. " " .. r.uris[1]
            end
            -- As APISIX's control router calls them: handler(api_ctx); it
            -- keeps a Content-Type the handler set (before any output).
            local mcode, text = routes["/v1/discovery/consul_kv/metrics"].handler({})
            local content_type = ngx.header["Content-Type"]
            local code, stats = routes["/v1/discovery/consul_kv/stats"].handler({})
            ngx.say(table.concat(names, "\n"))
            ngx.say("stats: ", code, " ", type(stats), " ready=", stats.ready,
                    " token=", stats.config.token)
            ngx.say("token in stats: ", cjson.encode(stats):find("tok-t080b", 1, true) ~= nil)
            ngx.say("metrics: ", mcode, " ", content_type)
            ngx.say("token in metrics: ", text:find("tok-t080b", 1, true) ~= nil)
            local path = ngx.config.prefix() .. "logs/t080b.prom"
            t.write_file(path, text)
            local p = io.popen(os.getenv("CKV_PROM_PYTHON") .. " "
                               .. os.getenv("CKV_PROM_PARSE") .. " < " .. path)
            local parsed = p:read("*a")
            p:close()
            ngx.say("parsed: ", parsed:find("ckv_ready{} 1.0\n", 1, true) ~= nil)
        }
    }
--- response_body
GET /show_dump_file
GET /v1/discovery/consul_kv/stats
GET /v1/discovery/consul_kv/metrics
stats: 200 table ready=true token=<redacted>
token in stats: false
metrics: 200 text/plain; version=0.0.4; charset=utf-8
token in metrics: false
parsed: true



=== TEST 3: "retry connecting consul after N seconds" at warn, N = ckv's real delay
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8599" },
            prefix = "t080c",
            timeout = { connect = 200 },
            backoff = { initial = 300, max = 1200 },
        })
    }
    init_worker_by_lua_block {
        require("apisix.discovery.consul_kv").init_worker()
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            -- Three retries: ckv's record, then APISIX's line, each time.
            local ok, seen = t.wait_for(function()
                local log = t.read_file(t.error_log_path()) or ""
                local c, a = {}, {}
                for d in log:gmatch("keeping the last good nodes, retry %d+ in ([%d.]+)s") do
                    c[#c + 1] = tostring(tonumber(d))
                end
                for d in log:gmatch("%[warn%][^\n]*retry connecting consul after ([%d.]+) seconds") do
                    a[#a + 1] = d
                end
                return #c >= 3 and #a >= 3, { c, a }
            end, 8)
            local ckv, apisix = seen[1], seen[2]
            ngx.say("three retries: ", ok)
            local n = math.min(#ckv, #apisix, 3)
            ngx.say("same delays: ", table.concat(ckv, " ", 1, n) == table.concat(apisix, " ", 1, n))
            local grows = tonumber(apisix[1]) <= 0.3 and tonumber(apisix[3]) > 0.3
            ngx.say("real, growing delays: ", grows, " (", table.concat(apisix, " ", 1, n), ")")
        }
    }
--- response_body_like
three retries: true
same delays: true
real, growing delays: true \([\d.]+ [\d.]+ [\d.]+\)
--- error_log eval
qr/\[warn\].*retry connecting consul after 0\.\d seconds/



=== TEST 4: the retry line is rate-limited with ckv's own retry records
--- http_config
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8599" },
            prefix = "t080d",
            timeout = { connect = 50 },
            backoff = { initial = 1, max = 2 },
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
            ngx.say("suppressed: ", (t.wait_log("similar messages suppressed (retries)", 8)))
            local log = t.read_file(t.error_log_path())
            local _, ckv = log:gsub("keeping the last good nodes, retry %d+ in", "")
            local _, apisix = log:gsub("retry connecting consul after [%d.]+ seconds", "")
            local tries = d.stats().servers[1].requests_total
            ngx.say("one APISIX line per admitted ckv record: ", ckv == apisix)
            ngx.say("far fewer lines than retries: ", apisix < tries / 2, " ",
                    apisix <= 30)
        }
    }
--- response_body
suppressed: true
one APISIX line per admitted ckv record: true
far fewer lines than retries: true true
--- no_error_log
[crit]
