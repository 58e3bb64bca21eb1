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

return _M
