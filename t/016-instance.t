# The identity of an nginx instance (its share group): a random group made
# by the master when resty.consul_kv is loaded in init_by_lua, the same in
# every worker, different in another instance with the same config (even
# when both masters are pid 1 of their own container), new at every HUP
# reload (the new workers serve the previous group's snapshot until their
# own leader has Consul's answer); a group named in the config wins.
use lib 't/lib';
use Test::Nginx::Socket::Lua;
use TestCKV;

consul_double(8500);

workers(2);
master_on();
repeat_each(1);
no_shuffle();

# 3 per block (status, body, one error_log or no_error_log pattern), plus
# TEST 3's second pattern.
plan tests => repeat_each() * (blocks() * 3 + 1);
run_tests();

__DATA__

=== TEST 1: loaded in init_by_lua: one group for every worker, passed to the library
--- http_config
    lua_shared_dict ckv_t 1m;
    init_by_lua_block {
        require("resty.consul_kv")
    }
    init_worker_by_lua_block {
        local t = require("ckvtest")
        local consul_kv = require("resty.consul_kv")
        local conf = {
            servers = { "http://127.0.0.1:8500" },
            prefix = "t016a",
            timeout = { wait = 2 },
        }
        local kv = assert(consul_kv.new(conf))
        t.conf_untouched = conf.share == nil
        t.record_per_worker("ckv_t", "group", consul_kv.instance_group)
        t.record_per_worker("ckv_t", "role", function() return kv:stats().role end)
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local _, roles = t.wait_worker_values("ckv_t", "role", 2, "follower leader")
            ngx.say("roles: ", roles)
            local a, b = t.worker_values("ckv_t", "group", 2):match("^(%S+) (%S+)$")
            ngx.say("same group in both workers: ", a == b)
            ngx.say("32 hex digits: ", #a == 32 and a:find("^%x+$") ~= nil)
            ngx.say("caller's conf untouched: ", t.conf_untouched)
            -- kept in the master's environment, which workers do not get
            ngx.say("not in a worker's environment: ", os.getenv("CKV_INSTANCE_GROUP") == nil)
        }
    }
--- response_body
roles: follower leader
same group in both workers: true
32 hex digits: true
caller's conf untouched: true
not in a worker's environment: true



=== TEST 2: the APISIX drop-in, loaded in init_by_lua as APISIX does: one watch for both workers
--- http_config
    lua_shared_dict ckv_t 1m;
    init_by_lua_block {
        require("ckvtest").dropin_conf({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t016b",
            timeout = { wait = 2 },
        })
    }
    init_worker_by_lua_block {
        local t = require("ckvtest")
        local d = require("apisix.discovery.consul_kv")
        d.init_worker()
        t.record_per_worker("ckv_t", "role", function() return d.stats().role end)
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local _, roles = t.wait_worker_values("ckv_t", "role", 2, "follower leader")
            ngx.say("roles: ", roles)
        }
    }
--- response_body
roles: follower leader



=== TEST 3: first loaded in a worker: no group, one info line on how to share
--- http_config
    init_worker_by_lua_block {
        local consul_kv = require("resty.consul_kv")
        local t = require("ckvtest")
        t.client = assert(consul_kv.new({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t016c",
            timeout = { wait = 2 },
        }))
        -- a second handle in the same worker logs nothing more
        t.other = assert(consul_kv.new({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t016c2",
            timeout = { wait = 2 },
        }))
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            ngx.say("group: ", tostring(require("resty.consul_kv").instance_group()))
            t.put(8500, "t016c/web/10.0.0.1:80", "{}")
            local served = t.wait_for(function()
                return t.client:nodes("http://127.0.0.1:8500/v1/kv/t016c/web/") ~= nil
            end)
            ngx.say("nodes served: ", served)
            local log = t.read_file(t.error_log_path())
            local _, n = log:gsub("first loaded in a worker", "")
            ngx.say("info lines (one per worker): ", n)
        }
    }
--- response_body
group: nil
nodes served: true
info lines (one per worker): 2
--- error_log
first loaded in a worker, not in init_by_lua, so this worker watches Consul on its own
--- no_error_log
[error]



=== TEST 4: two instances with the same config, each nginx as pid 1 of its own container (pid namespace, shared /dev/shm), one started with the other's group in its environment: two groups, two watches
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local instance = require("ckvinstance")
            -- the config as a JSON string: the group is added to it too
            local http = [=[
    init_by_lua_block { require("resty.consul_kv") }
    init_worker_by_lua_block {
        local consul_kv = require("resty.consul_kv")
        local kv = assert(consul_kv.new('{"servers":["http://127.0.0.1:8500"],'
                                        .. '"prefix":"t016d","timeout":{"wait":2}}'))
        local previous = require("resty.consul_kv.instance").previous_group
        require("ckvinstance").report(function()
            return tostring(consul_kv.instance_group()) .. " " .. tostring(previous)
                   .. " " .. kv:stats().role
        end)
    }
]=]
            instance.run(function(start)
                local function leader(states)
                    return states[0] ~= nil and states[0].state:find(" leader$") ~= nil
                end
                local a = start("a", { http = http, pid_namespace = true })
                local _, sa = a:wait_states(leader)
                -- b is started with a's group in its environment, where the
                -- module remembers it for the next reload: a value nginx was
                -- started with is not taken (b would read a's snapshots)
                local ga = sa[0] and sa[0].state:match("^%S+")
                local b = start("b", { http = http, pid_namespace = true,
                                   env = "CKV_INSTANCE_GROUP=" .. tostring(ga) })
                local sb
                local both = t.wait_for(function()
                    local oka, okb
                    oka, sa = a:wait_states(leader, 0)
                    okb, sb = b:wait_states(leader, 0)
                    return oka and okb
                end)
                ngx.say("each instance has its own leader: ", both,
                        both and "" or (" (" .. tostring(sa[0] and sa[0].state) .. " / "
                                        .. tostring(sb[0] and sb[0].state) .. ")"))
                local gb = sb[0] and sb[0].state:match("^%S+")
                ngx.say("workers of both are pid 2: ", sa[0].pid == 2 and sb[0].pid == 2)
                ngx.say("groups differ: ", ga ~= gb and #ga == 32 and #gb == 32)
                -- nor is it taken as the group before a reload
                ngx.say("b has no previous group: ", sb[0].state:match("^%S+ (%S+)"))
            end)
        }
    }
--- response_body
each instance has its own leader: true
workers of both are pid 2: true
groups differ: true
b has no previous group: nil
--- timeout: 30



=== TEST 5: a HUP reload makes a new group; the new workers serve the previous group's nodes from their first request, with Consul hanging
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local instance = require("ckvinstance")
            t.put(8500, "t016e/web/10.0.0.1:80", "{}")
            local http = [=[
    init_by_lua_block { require("resty.consul_kv") }
    init_worker_by_lua_block {
        local consul_kv = require("resty.consul_kv")
        local kv = assert(consul_kv.new({ servers = { "http://127.0.0.1:8500" },
                                          prefix = "t016e", timeout = { wait = 2 } }))
        local name = "http://127.0.0.1:8500/v1/kv/t016e/web/"
        local function count()
            local nodes = kv:nodes(name)
            return nodes and #nodes or 0
        end
        -- what this worker serves right after new(), before any request
        local first = count()
        require("ckvinstance").report(function()
            return table.concat({ consul_kv.instance_group(), first, count(),
                                  kv:stats().source }, " ")
        end)
    }
]=]
            local function parse(states, id)
                local s = states[id]
                if not s then
                    return {}
                end
                local group, first, now, source = s.state:match("^(%S+) (%d+) (%d+) (%S+)$")
                return { pid = s.pid, group = group, first = tonumber(first),
                         now = tonumber(now), source = source }
            end
            local function group_dirs(group)
                local p = io.popen("ls -d /dev/shm/ckv.*." .. group .. " 2>/dev/null")
                local out = p:read("*a")
                p:close()
                local _, n = out:gsub("\n", "")
                return n
            end
            instance.run(function(start)
                local a = start("hup", { http = http, workers = 2 })
                local b0, b1
                local ok1 = a:wait_states(function(states)
                    b0, b1 = parse(states, 0), parse(states, 1)
                    return b0.group ~= nil and b0.group == b1.group and #b0.group == 32
                           and b0.now == 1 and b1.now == 1
                end)
                ngx.say("before: one group, the node served: ", ok1)
                -- Consul stops answering this prefix before the reload.
                t.fault(8500, [[{"kind":"hang","path_prefix":"t016e"}]])
                a:reload()
                local a0, a1
                local ok2 = a:wait_states(function(states)
                    a0, a1 = parse(states, 0), parse(states, 1)
                    return a0.pid ~= b0.pid and a1.pid ~= b1.pid
                           and a0.pid ~= b1.pid and a1.pid ~= b0.pid
                           and a0.group ~= nil and a1.group ~= nil
                end)
                ngx.say("after: two new workers: ", ok2)
                ngx.say("one group in both: ", a0.group == a1.group)
                ngx.say("a new group: ", a0.group ~= b0.group)
                ngx.say("nodes served right after new(): ", a0.first, " ", a1.first)
                ngx.say("source: ", a0.source, " ", a1.source)
                ngx.say("the old group's directory is gone with its workers: ",
                        (t.wait_for(function() return group_dirs(b0.group) == 0 end)))
                ngx.say("the new group has one: ", group_dirs(a0.group))
            end)
            t.fault(8500)
        }
    }
--- response_body
before: one group, the node served: true
after: two new workers: true
one group in both: true
a new group: true
nodes served right after new(): 1 1
source: previous previous
the old group's directory is gone with its workers: true
the new group has one: 1
--- timeout: 30



=== TEST 6: a group named in the config wins: two instances naming one group share one watch
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local instance = require("ckvinstance")
            local http = [=[
    init_by_lua_block { require("resty.consul_kv") }
    init_worker_by_lua_block {
        local consul_kv = require("resty.consul_kv")
        local kv = assert(consul_kv.new({ servers = { "http://127.0.0.1:8500" },
                                          prefix = "t016f", timeout = { wait = 2 },
                                          share = { group = "GROUP" } }))
        require("ckvinstance").report(function()
            return kv:stats().role
        end)
    }
]=]
            -- unique to this run: another test run may share /dev/shm
            http = http:gsub("GROUP", "t016-" .. ngx.worker.pid())
            instance.run(function(start)
                local a = start("named-a", { http = http })
                local b = start("named-b", { http = http })
                local roles
                local shared = t.wait_for(function()
                    local sa, sb = a:states()[0], b:states()[0]
                    if not (sa and sb) then
                        return false
                    end
                    roles = { sa.state, sb.state }
                    table.sort(roles)
                    return roles[1] == "follower" and roles[2] == "leader"
                end)
                ngx.say("one leader, one follower across the instances: ", shared)
            end)
        }
    }
--- response_body
one leader, one follower across the instances: true
--- timeout: 30
