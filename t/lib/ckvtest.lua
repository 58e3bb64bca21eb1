-- Lua helpers for ckv's Test::Nginx suites: talk to the Consul test double
-- over a cosocket, and wait for a condition with a deadline (no fixed sleeps).
local cjson = require("cjson.safe")

local _M = {}

-- One HTTP/1.0 exchange with the double on 127.0.0.1:port.
function _M.http(port, method, path, body, headers)
    local sock = ngx.socket.tcp()
    sock:settimeout(5000)
    local ok, err = sock:connect("127.0.0.1", port)
    if not ok then
        return nil, "connect " .. port .. ": " .. err
    end
    body = body or ""
    local req = { method, " ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n",
                  "Content-Length: ", #body, "\r\n" }
    for k, v in pairs(headers or {}) do
        req[#req + 1] = k .. ": " .. v .. "\r\n"
    end
    req[#req + 1] = "\r\n"
    req[#req + 1] = body
    ok, err = sock:send(req)
    if not ok then
        return nil, err
    end
    local resp, rerr, partial = sock:receive("*a")
    sock:close()
    resp = resp or partial
    if not resp then
        return nil, rerr
    end
    local status = tonumber(resp:match("^HTTP/%S+ (%d+)"))
    local rbody = resp:match("\r\n\r\n(.*)$") or ""
    return status, rbody
end

local function must(port, method, path, body, headers)
    local status, rbody = _M.http(port, method, path, body, headers)
    if status ~= 200 then
        error(method .. " " .. path .. " on " .. port .. ": "
              .. tostring(status) .. " " .. tostring(rbody), 2)
    end
    return rbody
end

function _M.put(port, key, value, headers)
    return must(port, "PUT", "/v1/kv/" .. key, value, headers)
end

function _M.delete(port, key, recurse, headers)
    return must(port, "DELETE", "/v1/kv/" .. key .. (recurse and "?recurse" or ""),
                nil, headers)
end

-- Control endpoints of the double (/_double/...).
function _M.control(port, method, path, body)
    return must(port, method, path, body and (type(body) == "table"
                                              and cjson.encode(body) or body))
end

function _M.fault(port, spec)
    if spec then
        return _M.control(port, "PUT", "/_double/fault", spec)
    end
    return _M.control(port, "DELETE", "/_double/fault")
end

function _M.double_stats(port)
    return cjson.decode(_M.control(port, "GET", "/_double/stats"))
end

-- Calls fn() every few milliseconds until it returns a truthy first value
-- or `timeout` seconds pass. Returns ok plus fn's second value.
function _M.wait_for(fn, timeout)
    local deadline = ngx.now() + (timeout or 5)
    while true do
        local ok, v = fn()
        if ok then
            return true, v
        end
        ngx.update_time()
        if ngx.now() > deadline then
            return false, v
        end
        ngx.sleep(0.005)
    end
end

-- Nodes rendered compactly for response_body comparisons.
function _M.show(nodes)
    if nodes == nil then
        return "nil"
    end
    local parts = {}
    for _, n in ipairs(nodes) do
        local s = n.host .. ":" .. n.port .. " w=" .. n.weight
        for _, f in ipairs({ "max_fails", "fail_timeout", "priority" }) do
            if n[f] ~= nil then
                s = s .. " " .. f .. "=" .. n[f]
            end
        end
        if n.metadata then
            s = s .. " metadata=" .. cjson.encode(n.metadata)
        end
        parts[#parts + 1] = s
    end
    return table.concat(parts, ", ")
end

-- ---- helpers for the drop-in and multi-worker suites (t/010..t/049) ----

-- Configures apisix.core.config_local (the stub) with discovery.consul_kv =
-- conf, then loads the drop-in, as APISIX's init_by_lua does (apisix ->
-- apisix.upstream -> apisix.discovery.init): the master then makes the
-- instance's share group. Call from init_by_lua.
function _M.dropin_conf(conf)
    require("apisix.core.config_local").set({ discovery = { consul_kv = conf } })
    require("apisix.discovery.consul_kv")
end

-- Every `interval` seconds (default 0.01) stores tostring(fn()) in the
-- shared dict `dict` under "<label>:<worker id>". With `history`, also keeps
-- the sequence of distinct values seen, joined by " | ", under
-- "<label>:<worker id>:hist". Call from init_worker_by_lua.
function _M.record_per_worker(dict, label, fn, interval, history)
    local shm = ngx.shared[dict]
    local key = label .. ":" .. ngx.worker.id()
    local last
    local function record(premature)
        if premature then
            return
        end
        local ok, v = pcall(fn)
        v = ok and tostring(v) or ("error: " .. tostring(v))
        shm:set(key, v)
        if history and v ~= last then
            local h = shm:get(key .. ":hist")
            shm:set(key .. ":hist", h and (h .. " | " .. v) or v)
        end
        last = v
    end
    record()
    assert(ngx.timer.every(interval or 0.01, record))
end

-- Waits until every worker 0..n-1 recorded `expected` under `label`.
-- Returns ok and the values seen, "w0=... w1=...".
function _M.wait_workers(dict, label, expected, n, timeout)
    local shm = ngx.shared[dict]
    return _M.wait_for(function()
        local all, seen = true, {}
        for i = 0, n - 1 do
            local v = shm:get(label .. ":" .. i)
            seen[#seen + 1] = "w" .. i .. "=" .. tostring(v)
            if v ~= expected then
                all = false
            end
        end
        return all, table.concat(seen, " ")
    end, timeout)
end

-- The values workers 0..n-1 recorded under `label`, sorted and joined by
-- " " ("nil" for a worker that recorded nothing yet).
function _M.worker_values(dict, label, n)
    local shm = ngx.shared[dict]
    local values = {}
    for i = 0, n - 1 do
        values[#values + 1] = tostring(shm:get(label .. ":" .. i))
    end
    table.sort(values)
    return table.concat(values, " ")
end

-- Waits until worker_values(dict, label, n) is `expected` (e.g. "follower
-- leader"); returns ok and the values last seen.
function _M.wait_worker_values(dict, label, n, expected, timeout)
    return _M.wait_for(function()
        local values = _M.worker_values(dict, label, n)
        return values == expected, values
    end, timeout)
end

function _M.read_file(path)
    local f, err = io.open(path, "rb")
    if not f then
        return nil, err
    end
    local data = f:read("*a")
    f:close()
    return data
end

function _M.write_file(path, data)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
end

-- The nginx error log of this instance (the same file under test-nginx and
-- the compat runner: {prefix}/logs/error.log).
function _M.error_log_path()
    return ngx.config.prefix() .. "logs/error.log"
end

-- Waits until the error log contains `needle` (a plain substring).
function _M.wait_log(needle, timeout)
    return _M.wait_for(function()
        local data = _M.read_file(_M.error_log_path())
        return data ~= nil and data:find(needle, 1, true) ~= nil
    end, timeout)
end

-- Permission bits of a file, in octal ("600"), from stat(1).
function _M.file_mode(path)
    local p = io.popen("stat -c %a '" .. path .. "'")
    local out = p:read("*a")
    p:close()
    return (out:gsub("%s+$", ""))
end

-- Nodes rendered sorted (host:port), for comparisons that must not depend
-- on node order.
function _M.show_sorted(nodes)
    if nodes == nil then
        return "nil"
    end
    local copy = {}
    for i, n in ipairs(nodes) do
        copy[i] = n
    end
    table.sort(copy, function(a, b)
        return a.host .. ":" .. a.port < b.host .. ":" .. b.port
    end)
    return _M.show(copy)
end

return _M
