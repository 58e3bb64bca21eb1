# resty.consul_kv's arguments and memory: misuse of new() raises an error
# naming the argument, at the caller's line; a large read does not keep its
# buffer once its result is copied out.
use lib 't/lib';
use Test::Nginx::Socket::Lua;
use TestCKV;

consul_double(8500);

repeat_each(1);
no_shuffle();

# 3 per block (status, body, no_error_log).
plan tests => repeat_each() * (blocks() * 3);
run_tests();

__DATA__

=== TEST 1: bad conf and opts: exact messages, raised at the caller's line
--- config
    location /t {
        content_by_lua_block {
            local consul_kv = require("resty.consul_kv")
            local conf = { servers = { "http://127.0.0.1:8500" }, prefix = "t017a" }
            local function try(c, opts)
                local ok, err = pcall(function()
                    local kv = consul_kv.new(c, opts)  -- not a tail call
                    return kv
                end)
                if ok then
                    err:close()
                    return "ok"
                end
                -- the position is the caller's (this chunk), not the module's
                local at, msg = err:match("^(.-):%d+: (.*)$")
                return (at and at:find("^content_by_lua%(") and "caller: "
                        or tostring(at) .. ": ") .. tostring(msg or err)
            end
            ngx.say(try(42))
            ngx.say(try(conf, "fast"))
            ngx.say(try(conf, { log_intervl = 1 }))
            ngx.say(try(conf, { log_interval = "1" }))
            ngx.say(try(conf, { log_interval = -1 }))
            ngx.say(try(conf, { log_interval = 0.0001 }))
            ngx.say(try(conf, { log_interval = 3601 }))
            ngx.say(try(conf, { log_interval = 0 / 0 }))
            ngx.say(try(conf, { log_interval = 0 }))
            ngx.say(try(conf, { log_interval = 0.001 }))
            ngx.say(try(conf, {}))
            -- a bad config is a runtime error: nil and a message
            local kv, err = consul_kv.new({ servers = {} })
            ngx.say(tostring(kv), ", ", err ~= nil and err:find("servers") ~= nil)
        }
    }
--- response_body
caller: conf must be a table or a JSON string
caller: opts must be a table
caller: unknown option opts.log_intervl
caller: opts.log_interval must be a number
caller: opts.log_interval must be 0 (no log timer) or from 0.001 to 3600 seconds
caller: opts.log_interval must be 0 (no log timer) or from 0.001 to 3600 seconds
caller: opts.log_interval must be 0 (no log timer) or from 0.001 to 3600 seconds
caller: opts.log_interval must be 0 (no log timer) or from 0.001 to 3600 seconds
ok
ok
ok
nil, true



=== TEST 2: a service larger than the scratch buffer: read whole, and its buffer is not kept
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local consul_kv = require("resty.consul_kv")
            local name = "http://127.0.0.1:8500/v1/kv/t017b/big/"
            -- 4 nodes with 200 KiB of metadata each: 800 KiB of JSON
            local pad = string.rep("x", 200 * 1024)
            for i = 1, 4 do
                t.put(8500, "t017b/big/10.0.0." .. i .. ":80",
                      '{"weight":1,"metadata":{"pad":"' .. pad .. '"}}')
            end
            pad = nil
            collectgarbage()
            collectgarbage()
            local before = collectgarbage("count")

            local kv = assert(consul_kv.new({ servers = { "http://127.0.0.1:8500" },
                                              prefix = "t017b", timeout = { wait = 2 } },
                                            { log_interval = 0 }))
            local nodes
            t.wait_for(function()
                nodes = kv:nodes(name)
                return nodes ~= nil and #nodes == 4
            end)
            ngx.say("nodes: ", nodes and #nodes, ", metadata bytes: ",
                    nodes and #nodes[4].metadata.pad)
            local all = kv:all_nodes()
            ngx.say("all_nodes: ", #all[name])
            assert(kv:close())
            kv, nodes, all = nil, nil, nil
            collectgarbage()
            collectgarbage()
            local kept = collectgarbage("count") - before
            ngx.say("memory kept after reading 800 KiB twice, under 64 KiB: ", kept < 64,
                    kept < 64 and "" or (" (" .. math.floor(kept) .. " KiB)"))
        }
    }
--- response_body
nodes: 4, metadata bytes: 204800
all_nodes: 4
memory kept after reading 800 KiB twice, under 64 KiB: true
