# One Consul watch per nginx instance, whatever the worker count; takeover
# when the watching worker dies; no leftovers after a reload.
use lib 't/lib';
use Test::Nginx::Socket::Lua;
use TestCKV;

consul_double(8500, '--max-wait', '2s');
consul_double(8600, '--max-wait', '2s');

workers(4);
master_on();
plan tests => 3 + 4 + 6 + 4;
no_shuffle();
run_tests();

__DATA__

=== TEST 1: 4 workers, 2 servers: exactly one long poll per server, one watcher thread set
--- skip_eval: 3: $TestCKV::real_consul
--- http_config
    init_by_lua_block { require("resty.consul_kv") }  # the instance's share group
    init_worker_by_lua_block {
        require("ckvtest").client = assert(require("resty.consul_kv").new({
            servers = { "http://127.0.0.1:8500", "http://127.0.0.1:8600" },
            prefix = "t050a", timeout = { wait = 2 },
            share = { group = "t050a" },
        }))
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local proc = require("ckvproc")
            local kv = t.client
            t.put(8500, "t050a/web/10.0.0.1:80", "{}")
            t.put(8600, "t050a/web/10.0.0.2:80", "{}")
            local ok = t.wait_for(function()
                return kv:nodes("http://127.0.0.1:8500/v1/kv/t050a/web/") ~= nil
                   and kv:nodes("http://127.0.0.1:8600/v1/kv/t050a/web/") ~= nil
            end)
            ngx.say("nodes from both servers: ", ok)
            for _, port in ipairs({ 8500, 8600 }) do
                local polls
                local one = t.wait_for(function()
                    local per = t.double_stats(port).blocking_per_path or {}
                    polls = per["/v1/kv/t050a/"] or 0
                    return polls == 1
                end)
                ngx.say(port, ": long polls from 4 workers = ", polls)
            end
            local workers = proc.workers()
            ngx.say("workers: ", #workers)
            local runtime, follow = 0, 0
            for _, pid in ipairs(workers) do
                for _, name in ipairs(proc.threads(pid)) do
                    if name == "ckv-runtime" then runtime = runtime + 1 end
                    if name == "ckv-follow" then follow = follow + 1 end
                end
            end
            ngx.say("ckv-runtime threads: ", runtime, ", ckv-follow threads: ", follow)
            local st = kv:stats()
            ngx.say("leader is a worker: ", st.leader_pid > 0)
        }
    }
--- response_body
nodes from both servers: true
8500: long polls from 4 workers = 1
8600: long polls from 4 workers = 1
workers: 4
ckv-runtime threads: 4, ckv-follow threads: 3
leader is a worker: true



=== TEST 2: kill -9 of the watching worker: another takes over within 1 s, nothing lost
--- skip_eval: 4: $TestCKV::real_consul
--- http_config
    init_by_lua_block { require("resty.consul_kv") }  # the instance's share group
    init_worker_by_lua_block {
        require("ckvtest").client = assert(require("resty.consul_kv").new({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t050b", timeout = { wait = 2 },
            share = { group = "t050b" },
        }))
    }
--- config
    location = /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local kv = t.client
            local name = "http://127.0.0.1:8500/v1/kv/t050b/web/"
            t.put(8500, "t050b/web/10.0.0.1:80", "{}")
            assert(t.wait_for(function() return kv:nodes(name) ~= nil end))
            local st = kv:stats()
            if st.role ~= "follower" then
                -- This worker serves the client, so it must not be the one
                -- killed: it steps down (close releases leadership) and
                -- rejoins as a follower.
                -- Another worker may win the lock, or the new handle may:
                -- then step down again.
                local rejoined = false
                for _ = 1, 20 do
                    assert(kv:close())
                    ngx.sleep(0.1)
                    kv = assert(require("resty.consul_kv").new({
                        servers = { "http://127.0.0.1:8500" },
                        prefix = "t050b", timeout = { wait = 2 },
                        share = { group = "t050b" },
                    }))
                    t.client = kv
                    rejoined = t.wait_for(function()
                        st = kv:stats()
                        return st.role == "follower" and st.leader_pid ~= 0
                               and kv:nodes(name) ~= nil
                    end, 1)
                    if rejoined then
                        break
                    end
                end
                if not rejoined then
                    ngx.say("could not step down")
                    return
                end
            end
            local before = kv:nodes(name)
            local old = st.leader_pid
            os.execute("kill -9 " .. old)
            ngx.update_time()
            local t0 = ngx.now()
            local kept = true
            local ok = t.wait_for(function()
                if kv:nodes(name) ~= before then
                    kept = false
                end
                local s = kv:stats()
                return s.leader_pid ~= old and s.leader_pid ~= 0
            end, 3)
            ngx.update_time()
            local took = ngx.now() - t0
            t.put(8500, "t050b/web/10.0.0.2:80", "{}")
            local arrives = t.wait_for(function()
                local n = kv:nodes(name)
                return n ~= nil and #n == 2
            end, 3)
            local one = t.wait_for(function()
                local per = t.double_stats(8500).blocking_per_path or {}
                return per["/v1/kv/t050b/"] == 1
            end, 5)
            ngx.say("new leader: ", ok, ", within 1 s: ", took < 1)
            ngx.say("nodes kept meanwhile: ", kept and before ~= nil)
            ngx.say("a later change arrives: ", arrives)
            ngx.say("one long poll again: ", one)
        }
    }
--- response_body
new leader: true, within 1 s: true
nodes kept meanwhile: true
a later change arrives: true
one long poll again: true
--- error_log
exited on signal 9
--- no_error_log
[error]



=== TEST 3: HUP reload: old workers leave no watcher, thread or shared directory behind
--- skip_eval: 6: $TestCKV::real_consul
--- http_config
    lua_shared_dict ckv_t 1m;
    init_by_lua_block { require("resty.consul_kv") }  # the instance's share group
    init_worker_by_lua_block {
        require("ckvtest").client = assert(require("resty.consul_kv").new({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t050c", timeout = { wait = 2 },
            share = { group = "t050c" },
        }))
    }
--- config
    location = /hup {
        content_by_lua_block {
            local t = require("ckvtest")
            local proc = require("ckvproc")
            t.put(8500, "t050c/web/10.0.0.1:80", "{}")
            assert(t.wait_for(function()
                return t.client:nodes("http://127.0.0.1:8500/v1/kv/t050c/web/") ~= nil
            end))
            local old = proc.workers()
            ngx.shared.ckv_t:set("old", table.concat(old, " "))
            os.execute("kill -HUP " .. proc.master_pid())
            -- Reply once the new workers exist, so the next request reaches one.
            local fresh = t.wait_for(function()
                local seen = {}
                for _, pid in ipairs(old) do seen[pid] = true end
                local n = 0
                for _, pid in ipairs(proc.workers()) do
                    if not seen[pid] then n = n + 1 end
                end
                return n == 4
            end, 10)
            ngx.say("reloaded: ", fresh)
        }
    }
    location = /check {
        content_by_lua_block {
            local t = require("ckvtest")
            local proc = require("ckvproc")
            local old = {}
            for pid in ngx.shared.ckv_t:get("old"):gmatch("%d+") do
                old[tonumber(pid)] = true
            end
            if old[ngx.worker.pid()] then
                ngx.say("old worker")
                return
            end
            -- An old worker relaying this request stays until it answers.
            local relay = tonumber(ngx.var.arg_relay)
            local gone = t.wait_for(function()
                local n = 0
                for _, pid in ipairs(proc.workers()) do
                    if old[pid] and pid ~= relay then return false end
                    if not old[pid] then n = n + 1 end
                end
                return n == 4
            end, 10)
            ngx.say("old workers gone, 4 new: ", gone)
            local one = t.wait_for(function()
                local per = t.double_stats(8500).blocking_per_path or {}
                return per["/v1/kv/t050c/"] == 1
            end, 5)
            ngx.say("one long poll: ", one)
            local threads
            t.wait_for(function()
                threads = proc.ckv_threads(proc.workers())
                return threads == 7
            end, 5)
            ngx.say("ckv threads (4 runtime + 3 follow): ", threads)
            local dirs = proc.shm_dirs("t050c")
            ngx.say("shared directories: ", #dirs)
            local n = t.client:nodes("http://127.0.0.1:8500/v1/kv/t050c/web/")
            ngx.say("nodes served by a new worker: ", n ~= nil and #n == 1)
        }
    }
    location = /after {
        content_by_lua_block {
            -- Over fresh connections until a new worker answers (this
            -- request may have reached an old worker on a kept-alive one).
            for _ = 1, 50 do
                local sock = ngx.socket.tcp()
                sock:settimeout(30000)
                assert(sock:connect("127.0.0.1", $TEST_NGINX_SERVER_PORT))
                sock:send("GET /check?relay=" .. ngx.worker.pid()
                          .. " HTTP/1.0\r\nHost: x\r\n\r\n")
                local resp = sock:receive("*a") or ""
                sock:close()
                local body = resp:match("\r\n\r\n(.*)$") or ""
                if body ~= "old worker\n" then
                    ngx.print(body)
                    return
                end
                ngx.sleep(0.05)
            end
            ngx.say("only old workers answered")
        }
    }
--- request eval
["GET /hup", "GET /after"]
--- response_body eval
["reloaded: true\n",
"old workers gone, 4 new: true
one long poll: true
ckv threads (4 runtime + 3 follow): 7
shared directories: 1
nodes served by a new worker: true
"]
--- no_error_log
[error]
--- timeout: 30



=== TEST 4: kill -9 of a follower: it is respawned and rejoins; the watcher is undisturbed
--- skip_eval: 4: $TestCKV::real_consul
--- http_config
    init_by_lua_block { require("resty.consul_kv") }  # the instance's share group
    init_worker_by_lua_block {
        require("ckvtest").client = assert(require("resty.consul_kv").new({
            servers = { "http://127.0.0.1:8500" },
            prefix = "t050d", timeout = { wait = 2 },
            share = { group = "t050d" },
        }))
    }
--- config
    location = /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local proc = require("ckvproc")
            local kv = t.client
            local name = "http://127.0.0.1:8500/v1/kv/t050d/web/"
            t.put(8500, "t050d/web/10.0.0.1:80", "{}")
            assert(t.wait_for(function() return kv:nodes(name) ~= nil end))
            assert(t.wait_for(function() return proc.ckv_threads(proc.workers()) == 7 end))
            local leader = kv:stats().leader_pid
            local victim
            for _, pid in ipairs(proc.workers()) do
                if pid ~= leader and pid ~= ngx.worker.pid() then
                    victim = pid
                    break
                end
            end
            os.execute("kill -9 " .. victim)
            local respawned = t.wait_for(function()
                local ws = proc.workers()
                for _, pid in ipairs(ws) do
                    if pid == victim then return false end
                end
                return #ws == 4 and proc.ckv_threads(ws) == 7
            end, 5)
            ngx.say("respawned and rejoined: ", respawned)
            ngx.say("same watcher: ", kv:stats().leader_pid == leader)
            local per = t.double_stats(8500).blocking_per_path or {}
            ngx.say("long polls: ", per["/v1/kv/t050d/"])
            t.put(8500, "t050d/web/10.0.0.2:80", "{}")
            local arrives = t.wait_for(function()
                local n = kv:nodes(name)
                return n ~= nil and #n == 2
            end)
            ngx.say("later change arrives: ", arrives)
        }
    }
--- response_body
respawned and rejoined: true
same watcher: true
long polls: 1
later change arrives: true
--- error_log
exited on signal 9
--- no_error_log
[error]
