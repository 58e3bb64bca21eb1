# One Consul connection per server per nginx instance, seen from the kernel's
# socket table rather than from the double's counters, so that it runs the
# same against the double and against a real Consul (the real-Consul stage).
use lib 't/lib';
use Test::Nginx::Socket::Lua;
use TestCKV;

consul_double(8500, '--max-wait', '2s');
consul_double(8600, '--max-wait', '2s');

workers(4);
master_on();
plan tests => blocks() * 3;
no_shuffle();
run_tests();

__DATA__

=== TEST 1: 4 workers, 2 servers: one TCP connection to each server, one leader, every change seen
--- http_config
    # Loaded by the master: its random instance group lets the 4 workers share.
    init_by_lua_block { require("resty.consul_kv") }
    init_worker_by_lua_block {
        require("ckvtest").client = assert(require("resty.consul_kv").new({
            servers = { "http://127.0.0.1:8500", "http://127.0.0.1:8600" },
            prefix = "t090a", timeout = { wait = 2 },
        }))
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local proc = require("ckvproc")
            local kv = t.client

            -- ESTABLISHED TCP connections from the workers to 127.0.0.1:port.
            local function connections(port)
                local mine = {}
                for _, pid in ipairs(proc.workers()) do
                    local ls = io.popen("ls -l /proc/" .. pid .. "/fd 2>/dev/null")
                    for line in ls:lines() do
                        local inode = line:match("socket:%[(%d+)%]")
                        if inode then mine[inode] = true end
                    end
                    ls:close()
                end
                local want, n = string.format("0100007F:%04X", port), 0
                for line in io.lines("/proc/net/tcp") do
                    local remote, st, inode = line:match(
                        "^%s*%d+:%s+%x+:%x+%s+(%x+:%x+)%s+(%x+)%s+%S+%s+%S+%s+%S+%s+%S+%s+%S+%s+(%d+)")
                    if remote == want and st == "01" and mine[inode] then n = n + 1 end
                end
                return n
            end

            t.put(8500, "t090a/web/10.0.0.1:80", "{}")
            t.put(8600, "t090a/web/10.0.0.2:80", "{}")
            local a = "http://127.0.0.1:8500/v1/kv/t090a/web/"
            local b = "http://127.0.0.1:8600/v1/kv/t090a/web/"
            ngx.say("nodes from both servers: ", (t.wait_for(function()
                return kv:nodes(a) ~= nil and kv:nodes(b) ~= nil
            end)))
            for _, port in ipairs({ 8500, 8600 }) do
                local n
                t.wait_for(function() n = connections(port); return n == 1 end)
                ngx.say(port, ": connections from 4 workers = ", n)
            end
            local runtime, follow
            t.wait_for(function()
                local th = {}
                for _, pid in ipairs(proc.workers()) do
                    for _, name in ipairs(proc.threads(pid)) do
                        th[name] = (th[name] or 0) + 1
                    end
                end
                runtime, follow = th["ckv-runtime"] or 0, th["ckv-follow"] or 0
                return runtime == 4 and follow == 3
            end)
            ngx.say("ckv-runtime threads: ", runtime, ", ckv-follow threads: ", follow)
            t.put(8500, "t090a/web/10.0.0.3:80", '{"weight":2}')
            ngx.say("change seen: ", (t.wait_for(function()
                return #(kv:nodes(a) or {}) == 2
            end)), " ", t.show_sorted(kv:nodes(a)))
            for _, port in ipairs({ 8500, 8600 }) do
                local n
                t.wait_for(function() n = connections(port); return n == 1 end)
                ngx.say(port, " after the change: ", n)
            end
        }
    }
--- response_body
nodes from both servers: true
8500: connections from 4 workers = 1
8600: connections from 4 workers = 1
ckv-runtime threads: 4, ckv-follow threads: 3
change seen: true 10.0.0.1:80 w=1, 10.0.0.3:80 w=2
8500 after the change: 1
8600 after the change: 1
