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

local function json_out(t)
    ngx.header["Content-Type"] = "application/json"
    ngx.say(cjson.encode(t))
end

function _M.init(conf)
    CONF = conf
    if conf.mode == "ours" or conf.mode == "peer" then
        -- ours: t/lib's stub; peer: bench/lua/peer's (the nginx path decides)
        require("apisix.core.config_local").set({ discovery = { consul_kv = conf.consul_kv } })
        -- loaded in the master, as APISIX loads its discovery modules in
        -- init_by_lua: the drop-in makes its instance's share group there
        -- (loaded first in a worker, each worker would watch on its own)
        require("apisix.discovery.consul_kv")
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
    -- a sighting whose steps are not complete yet: the leader serves a
    -- snapshot before it has published it (published_us still 0)
    local pending_k, pending_real
    local function record_steps(k, t_real)
        local st = dropin.stats()
        local steps = st and st.last_change_steps
        if steps and steps.headers_us > 0 and steps.published_us == 0 then
            return false
        end
        if steps then
            steps.seen_us = t_real
            dict:set("steps" .. wid .. ":" .. k, cjson.encode(steps))
        end
        return true
    end
    while not ngx.worker.exiting() do
        local target = dict:get("target")
        local k = dict:get("k")
        if pending_k and record_steps(pending_k, pending_real) then
            dict:set("seen" .. wid, pending_k)
            pending_k = nil
        end
        if target and k ~= seen_k then
            local nodes = nodes_fn(target)
            if nodes then
                for _, n in ipairs(nodes) do
                    if n.weight == k then
                        local t = now_ns()
                        local t_real = clock.now_real_us()
                        dict:set("t" .. wid .. ":" .. k, t)
                        seen_k = k
                        -- where the change's time went (after the sighting
                        -- is timed: this costs nothing measured)
                        if dropin and not record_steps(k, t_real) then
                            pending_k, pending_real = k, t_real
                        else
                            dict:set("seen" .. wid, k)
                        end
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

-- Event-loop gap: how late a 1 ms ngx.sleep wakes, in ms. The samples of
-- each window (named by the driver in the dict's "gapwin") are summarised
-- into the dict as "gap:<window>:<worker>" when the window changes.
local function gap_summary(samples)
    table.sort(samples)
    local n = #samples
    local function at(p) return samples[math.max(1, math.ceil(n * p))] end
    local sum = 0
    for i = 1, n do sum = sum + samples[i] end
    return { n = n, p50 = at(0.5), p99 = at(0.99), p999 = at(0.999), max = samples[n],
             mean = sum / n }
end

local function gap_thread(premature)
    if premature then return end
    local wid = ngx.worker.id()
    local win, samples = nil, {}
    while not ngx.worker.exiting() do
        local w = dict:get("gapwin")
        if w ~= win then
            if win and #samples > 0 then
                dict:set("gap:" .. win .. ":" .. wid, cjson.encode(gap_summary(samples)))
            end
            win, samples = w, {}
        end
        local t0 = now_ns()
        ngx.sleep(0.001)
        if win then
            samples[#samples + 1] = (now_ns() - t0) / 1e6 - 1
        end
    end
end

function _M.init_worker()
    local wid = ngx.worker.id()
    dict:set("pid" .. wid, ngx.worker.pid())
    if CONF.mode == "ours" then
        dropin = require("apisix.discovery.consul_kv")
        dropin.init_worker()
        nodes_fn = dropin.nodes
        ngx.timer.every(0.5, function(premature)
            local st = not premature and dropin.stats()
            if st then
                dict:set("role" .. wid, tostring(st.role))
            end
        end)
    elseif CONF.mode == "peer" then
        -- APISIX's own module (APISIX_PEER_DIR), with bench/lua/peer's stubs
        require("apisix.events").init_worker(CONF.events_interval)
        local peer = require("apisix.discovery.consul_kv")
        peer.init_worker()
        nodes_fn = peer.nodes
        dict:set("role" .. wid, wid == 0 and "watcher" or "follower")
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
    if CONF.gap then
        ngx.timer.at(0, gap_thread)
    end
end

-- GET /gapstats?windows=a,b&workers=W: the summaries the gap threads wrote.
function _M.gapstats()
    local w = tonumber(ngx.var.arg_workers)
    local out = {}
    for win in ngx.var.arg_windows:gmatch("[^,]+") do
        out[win] = {}
        for i = 0, w - 1 do
            local v = dict:get("gap:" .. win .. ":" .. i)
            out[win][i + 1] = v and cjson.decode(v) or cjson.null
        end
    end
    json_out(out)
end

-- GET /gapwin?name=X: starts gap window X in every worker ("" ends it).
function _M.gapwin()
    local name = ngx.var.arg_name
    if name == "" then
        dict:delete("gapwin")
    else
        dict:set("gapwin", name)
    end
    json_out({ ok = true })
end

-- GET /gc: a full Lua GC in this worker; the Lua heap before and after (KiB).
function _M.gc()
    local before = collectgarbage("count")
    collectgarbage("collect")
    collectgarbage("collect")
    json_out({ worker = ngx.worker.id(), before_kb = before, after_kb = collectgarbage("count") })
end

-- GET /touch?services=N: nodes() of every service once, in this worker.
function _M.touch()
    local n = tonumber(ngx.var.arg_services)
    local seen = 0
    for i = 0, n - 1 do
        if nodes_fn(_M.service_name(i)) then
            seen = seen + 1
        end
    end
    json_out({ seen = seen, worker = ngx.worker.id() })
end

-- GET /peersync?reps=R: CPU of APISIX's connect() for one full response
-- (1 worker; the module watches nothing else): the fetch through
-- lua-resty-consul (HTTP read + JSON decode), the eager log encodes,
-- update_application and the events post. Also the fetch alone.
function _M.peersync()
    local reps = tonumber(ngx.var.arg_reps)
    local peer = require("apisix.discovery.consul_kv")
    local consul = require("resty.consul")
    local c = CONF.consul_kv
    local function server()
        return {
            host = CONF.host, port = CONF.port, connect_timeout = 60000, read_timeout = 60000,
            consul_key = "/kv/" .. c.prefix, server_name_key = CONF.server_url .. "/v1/kv/",
            weight = 1, keepalive = false, default_args = { recurse = true }, index = 0,
            fetch_interval = 3600,
        }
    end
    local function median(a)
        table.sort(a)
        return a[math.floor((#a + 1) / 2)]
    end
    local all, fetch = {}, {}
    for _ = 1, reps + 1 do
        local s = server()
        collectgarbage()
        local c0 = clock.cpu_ns()
        local client = consul:new({ host = s.host, port = s.port, connect_timeout = 60000,
                                    read_timeout = 60000, default_args = s.default_args })
        local res, err = client:get(s.consul_key)
        fetch[#fetch + 1] = (clock.cpu_ns() - c0) / 1e6
        if not res or res.status ~= 200 then
            return json_out({ error = "fetch: " .. tostring(err or res.status) })
        end
        res = nil
        collectgarbage()
        c0 = clock.cpu_ns()
        peer.connect(false, s)
        all[#all + 1] = (clock.cpu_ns() - c0) / 1e6
    end
    table.remove(all, 1)   -- warm-up
    table.remove(fetch, 1)
    local services = 0
    for _ in pairs(peer.all_nodes()) do services = services + 1 end
    json_out({ cpu_ms = median(all), fetch_cpu_ms = median(fetch), reps = reps,
               services = services, all_ms = all })
end

-- GET /ready?services=N[&server=url]: how many of the N services every
-- worker... (this worker) sees.
-- With sample=1 only the first, the last and 62 names spread between are
-- asked (a first sync is applied at once in every implementation), so that
-- memory "after the first sync" is not "after serving every service".
function _M.ready()
    local n = tonumber(ngx.var.arg_services)
    local url = ngx.var.arg_server
    local seen = 0
    if ngx.var.arg_sample == "1" and n > 64 then
        for k = 0, 63 do
            local i = math.floor(k * (n - 1) / 63)
            if nodes_fn(_M.service_name(i, url)) then
                seen = seen + 1
            end
        end
        json_out({ seen = seen == 64 and n or seen, worker = ngx.worker.id() })
        return
    end
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
    local per = tonumber(ngx.var.arg_per or 10)
    local lat, per_worker, put_ms, missed = {}, {}, {}, 0
    local steps_of = {}
    for w = 0, workers - 1 do per_worker[w + 1] = {}; steps_of[w + 1] = {} end
    -- weights written are unique over the whole run (k0 from the driver), so
    -- that a weight left by an earlier run is never mistaken for this change
    local k0 = tonumber(ngx.var.arg_k0)
    for c = 0, changes - 1 do
        local k = k0 + c
        local svc = math.random(0, services - 1)
        local j = math.random(0, per - 1)
        dict:set("target", _M.service_name(svc, url))
        dict:set("k", k)
        local key = CONF.prefix .. "/svc" .. svc .. "/10.0.0." .. (j + 1) .. ":" .. (8000 + j)
        local t0 = now_ns()
        local status, err = http.request({
            host = CONF.host, port = CONF.port, method = "PUT",
            path = "/v1/kv/" .. key, body = '{"weight":' .. k .. '}', close = true,
        })
        local t_put = now_ns()
        local t_put_real = clock.now_real_us()
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
                local steps = dict:get("steps" .. w .. ":" .. k)
                if steps then
                    dict:delete("steps" .. w .. ":" .. k)
                    local st = cjson.decode(steps)
                    st.change = c
                    st.put_us = t_put_real
                    steps_of[w + 1][#steps_of[w + 1] + 1] = st
                end
                if d > worst then worst = d end
            end
            lat[#lat + 1] = worst
        end
        ngx.sleep(gap)
    end
    json_out({ latencies_ms = lat, per_worker_ms = per_worker, put_ms = put_ms, missed = missed,
               steps = steps_of })
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
