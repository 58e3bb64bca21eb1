-- Handlers for the nginx instances that bench/bench.py starts.
local cjson    = require("cjson.safe")
local clock    = require("ckvbench.clock")
local http     = require("ckvbench.http")
local baseline = require("ckvbench.baseline")
local bit      = require("bit")
local ngx      = ngx
local now_ns   = clock.now_ns
local band     = bit.band

local _M = {}

local CONF          -- set by init(): { mode, prefix, server_url, host, port, services, ... }
local dropin        -- apisix.discovery.consul_kv (ours) when mode == "ours"
local nodes_fn      -- the nodes() under test
local dict = ngx.shared.ckvbench

function _M.init(conf)
    CONF = conf
    if conf.mode == "ours" then
        require("apisix.core.config_local").set({ discovery = { consul_kv = conf.consul_kv } })
    end
end

function _M.service_name(i, server_url)
    return (server_url or CONF.server_url) .. "/v1/kv/" .. CONF.prefix .. "/svc" .. i .. "/"
end

-- Propagation poller: every ~1 ms, look at the service the driver is
-- changing and record (CLOCK_MONOTONIC) when this worker first sees the
-- node weight the driver wrote.
local function poller(premature)
    if premature then return end
    local wid = ngx.worker.id()
    local seen_k = -1
    local i = 0
    dict:set("pid" .. wid, ngx.worker.pid())
    while not ngx.worker.exiting() do
        local target = dict:get("target")
        local k = dict:get("k")
        if target and k ~= seen_k then
            local nodes = nodes_fn(target)
            if nodes then
                for _, n in ipairs(nodes) do
                    if n.weight == k then
                        local t = now_ns()
                        dict:set("t" .. wid .. ":" .. k, t)
                        dict:set("seen" .. wid, k)
                        seen_k = k
                        break
                    end
                end
            end
        end
        i = i + 1
        if i % 500 == 1 and dropin then
            local st = dropin.stats()
            if st then
                dict:set("role" .. wid, tostring(st.role))
            end
        end
        ngx.sleep(0.001)
    end
end

function _M.init_worker()
    if CONF.mode == "ours" then
        dropin = require("apisix.discovery.consul_kv")
        dropin.init_worker()
        nodes_fn = dropin.nodes
    elseif CONF.mode == "baseline" then
        baseline.start({
            host = CONF.host, port = CONF.port, prefix = CONF.prefix,
            wait = 60, server_url = CONF.server_url, eager_logs = false,
        })
        nodes_fn = baseline.nodes
        dict:set("pid" .. ngx.worker.id(), ngx.worker.pid())
        dict:set("role" .. ngx.worker.id(), ngx.worker.id() == 0 and "watcher" or "follower")
    else
        nodes_fn = function() return nil end
    end
    if CONF.poller then
        ngx.timer.at(0, poller)
    end
end

local function json_out(t)
    ngx.header["Content-Type"] = "application/json"
    ngx.say(cjson.encode(t))
end

-- GET /ready?services=N[&server=url]: how many of the N services every
-- worker... (this worker) sees.
function _M.ready()
    local n = tonumber(ngx.var.arg_services)
    local url = ngx.var.arg_server
    local seen = 0
    for i = 0, n - 1 do
        if nodes_fn(_M.service_name(i, url)) then
            seen = seen + 1
        end
    end
    json_out({ seen = seen, worker = ngx.worker.id() })
end

-- GET /roles?workers=W: pid and role of each worker (recorded by pollers).
function _M.roles()
    local w = tonumber(ngx.var.arg_workers)
    local out = {}
    for i = 0, w - 1 do
        out[#out + 1] = { worker = i, pid = dict:get("pid" .. i), role = dict:get("role" .. i) }
    end
    json_out(out)
end

-- GET /prop?changes=C&services=S&workers=W[&server=url]: the driver. For
-- each change: set the target, PUT a new weight for one node of a random
-- service, note when the PUT returned, wait until every worker saw it.
function _M.prop()
    local changes = tonumber(ngx.var.arg_changes)
    local services = tonumber(ngx.var.arg_services)
    local workers = tonumber(ngx.var.arg_workers)
    local url = ngx.var.arg_server
    local gap = tonumber(ngx.var.arg_gap_ms or 5) / 1000
    local lat, per_worker, put_ms, missed = {}, {}, {}, 0
    for w = 0, workers - 1 do per_worker[w + 1] = {} end
    -- weights written are unique over the whole run (k0 from the driver), so
    -- that a weight left by an earlier run is never mistaken for this change
    local k0 = tonumber(ngx.var.arg_k0)
    for c = 0, changes - 1 do
        local k = k0 + c
        local svc = math.random(0, services - 1)
        local j = math.random(0, 9)
        dict:set("target", _M.service_name(svc, url))
        dict:set("k", k)
        local key = CONF.prefix .. "/svc" .. svc .. "/10.0.0." .. (j + 1) .. ":" .. (8000 + j)
        local t0 = now_ns()
        local status, err = http.request({
            host = CONF.host, port = CONF.port, method = "PUT",
            path = "/v1/kv/" .. key, body = '{"weight":' .. k .. '}', close = true,
        })
        local t_put = now_ns()
        if status ~= 200 then
            return json_out({ error = "PUT failed: " .. tostring(status) .. " " .. tostring(err) })
        end
        put_ms[#put_ms + 1] = (t_put - t0) / 1e6
        local deadline = t_put + 10e9
        local done = false
        while now_ns() < deadline do
            done = true
            for w = 0, workers - 1 do
                if dict:get("seen" .. w) ~= k then
                    done = false
                    break
                end
            end
            if done then break end
            ngx.sleep(0.001)
        end
        if not done then
            missed = missed + 1
        else
            local worst = -1e18
            for w = 0, workers - 1 do
                local t = dict:get("t" .. w .. ":" .. k)
                dict:delete("t" .. w .. ":" .. k)
                local d = (t - t_put) / 1e6
                per_worker[w + 1][#per_worker[w + 1] + 1] = d
                if d > worst then worst = d end
            end
            lat[#lat + 1] = worst
        end
        ngx.sleep(gap)
    end
    json_out({ latencies_ms = lat, per_worker_ms = per_worker, put_ms = put_ms, missed = missed })
end

-- GET /req: one discovery lookup per request, for wrk.
local names_cache
function _M.req()
    if not names_cache then
        names_cache = {}
        for i = 0, CONF.services - 1 do
            names_cache[i + 1] = _M.service_name(i)
        end
    end
    local nodes = nodes_fn(names_cache[math.random(1, #names_cache)])
    ngx.print(nodes and "ok\n" or "miss\n")
end

-- GET /reqpath?services=N&iters=M&rounds=R: ns per nodes() call, in a tight
-- loop over a precomputed random sequence of service names.
local MASK = 65535
local function loop_index(names, idx, iters)
    local hits = 0
    local t0 = now_ns()
    for i = 1, iters do
        local n = names[idx[band(i, MASK) + 1]]
        if n then hits = hits + 1 end
    end
    return now_ns() - t0, hits
end
local function loop_floor(t, names, idx, iters)
    local hits = 0
    local t0 = now_ns()
    for i = 1, iters do
        local r = t[names[idx[band(i, MASK) + 1]]]
        if r then hits = hits + 1 end
    end
    return now_ns() - t0, hits
end
local function loop_fn(f, names, idx, iters)
    local hits = 0
    local t0 = now_ns()
    for i = 1, iters do
        local r = f(names[idx[band(i, MASK) + 1]])
        if r then hits = hits + 1 end
    end
    return now_ns() - t0, hits
end
local function median(a)
    table.sort(a)
    return a[math.floor((#a + 1) / 2)]
end

function _M.reqpath()
    local n = tonumber(ngx.var.arg_services)
    local iters = tonumber(ngx.var.arg_iters)
    local rounds = tonumber(ngx.var.arg_rounds)
    local names, floor = {}, {}
    for i = 0, n - 1 do
        local name = _M.service_name(i)
        names[i + 1] = name
        local nodes = dropin.nodes(name)
        if not nodes then
            return json_out({ error = "service missing: " .. name })
        end
        floor[name] = nodes
    end
    -- The APISIX baseline holds the same lists in its applications table.
    local apps = {}
    for k, v in pairs(floor) do apps[k] = v end
    baseline.set_applications(apps)
    local idx = {}
    math.randomseed(42)
    for i = 1, MASK + 1 do
        idx[i] = math.random(1, n)
    end
    local r = { index = {}, floor = {}, ours = {}, apisix = {} }
    local ours_nodes, base_nodes = dropin.nodes, baseline.nodes
    for _ = 1, rounds do
        local dt, h
        dt, h = loop_index(names, idx, iters); r.index[#r.index + 1] = dt / iters
        dt, h = loop_floor(floor, names, idx, iters); r.floor[#r.floor + 1] = dt / iters
        assert(h == iters)
        dt, h = loop_fn(ours_nodes, names, idx, iters); r.ours[#r.ours + 1] = dt / iters
        assert(h == iters)
        dt, h = loop_fn(base_nodes, names, idx, iters); r.apisix[#r.apisix + 1] = dt / iters
        assert(h == iters)
    end
    json_out({
        services = n, iters = iters, rounds = rounds,
        ns = { index = median(r.index), floor = median(r.floor),
               ours = median(r.ours), apisix = median(r.apisix) },
        all = r,
        same_tables = (dropin.nodes(names[1]) == floor[names[1]]),
        jit = { jit.status() },
    })
end

-- GET /refresh?file=F&reps=R&server=URL: the Lua baseline's full refresh
-- (decode + update_application) of one stored response body, CPU time.
function _M.refresh()
    local file = ngx.var.arg_file
    local reps = tonumber(ngx.var.arg_reps)
    local prefix = ngx.var.arg_prefix
    local server_name_key = ngx.var.arg_server .. "/v1/kv/"
    local f = assert(io.open(file, "rb"))
    local body = f:read("*a")
    f:close()
    baseline.configure(prefix, 1)
    local out = {}
    for _, eager in ipairs({ false, true }) do
        local cpu, wall, decode_cpu = {}, {}, {}
        assert(baseline.refresh_from_body(server_name_key, body, eager)) -- warm-up
        for _ = 1, reps do
            collectgarbage()
            local c0, w0 = clock.cpu_ns(), now_ns()
            assert(baseline.refresh_from_body(server_name_key, body, eager))
            cpu[#cpu + 1] = (clock.cpu_ns() - c0) / 1e6
            wall[#wall + 1] = (now_ns() - w0) / 1e6
        end
        for _ = 1, reps do
            collectgarbage()
            local c0 = clock.cpu_ns()
            local d = cjson.decode(body)
            decode_cpu[#decode_cpu + 1] = (clock.cpu_ns() - c0) / 1e6
            assert(d)
        end
        local services = 0
        for _ in pairs(baseline.all_nodes()) do services = services + 1 end
        out[eager and "as_shipped" or "core"] = {
            cpu_ms = median(cpu), wall_ms = median(wall),
            cjson_decode_cpu_ms = median(decode_cpu), services = services,
        }
    end
    -- The broadcast's cost as lua-resty-worker-events pays it: encode once in
    -- worker 0, decode in each other worker.
    local apps = baseline.all_nodes()
    local enc, dec = {}, {}
    local payload
    for _ = 1, reps do
        collectgarbage()
        local c0 = clock.cpu_ns()
        payload = cjson.encode(apps)
        enc[#enc + 1] = (clock.cpu_ns() - c0) / 1e6
        c0 = clock.cpu_ns()
        assert(cjson.decode(payload))
        dec[#dec + 1] = (clock.cpu_ns() - c0) / 1e6
    end
    out.broadcast = { encode_cpu_ms = median(enc), decode_cpu_ms = median(dec), bytes = #payload }
    out.bytes = #body
    json_out(out)
end

return _M
