-- A minimal HTTP/1.1 client over ngx.socket.tcp (cosockets), enough for the
-- Consul double: Content-Length and chunked bodies, keep-alive. Debian has no
-- lua-resty-http package; APISIX's module reads the whole body the same way
-- (lua-resty-http's read_body, then cjson.decode in lua-resty-consul).
local ngx = ngx
local tcp = ngx.socket.tcp
local concat = table.concat
local tonumber = tonumber
local lower = string.lower

local _M = {}

local function read_body(sock, headers)
    local len = headers["content-length"]
    if len then
        len = tonumber(len)
        if len == 0 then
            return ""
        end
        return sock:receive(len)
    end
    if headers["transfer-encoding"] and lower(headers["transfer-encoding"]) == "chunked" then
        local parts, n = {}, 0
        while true do
            local line, err = sock:receive("*l")
            if not line then
                return nil, err
            end
            local size = tonumber(line:match("^%x+"), 16)
            if not size then
                return nil, "bad chunk size: " .. line
            end
            if size == 0 then
                -- trailer: until an empty line
                repeat
                    line, err = sock:receive("*l")
                    if not line then
                        return nil, err
                    end
                until line == ""
                return concat(parts, "", 1, n)
            end
            local data
            data, err = sock:receive(size)
            if not data then
                return nil, err
            end
            n = n + 1
            parts[n] = data
            local crlf
            crlf, err = sock:receive(2)
            if not crlf then
                return nil, err
            end
        end
    end
    return nil, "no body framing"
end

--- request{host, port, method, path, body, timeout (ms)} -> status, headers, body
function _M.request(opts)
    local sock = tcp()
    local t = opts.timeout or 5000
    sock:settimeouts(2000, 5000, t)
    local ok, err = sock:connect(opts.host, opts.port)
    if not ok then
        return nil, "connect: " .. err
    end
    local body = opts.body or ""
    local req = (opts.method or "GET") .. " " .. opts.path .. " HTTP/1.1\r\n"
        .. "Host: " .. opts.host .. "\r\n"
        .. "Content-Length: " .. #body .. "\r\n\r\n" .. body
    ok, err = sock:send(req)
    if not ok then
        sock:close()
        return nil, "send: " .. err
    end
    local line
    line, err = sock:receive("*l")
    if not line then
        sock:close()
        return nil, "status: " .. err
    end
    local status = tonumber(line:match("^HTTP/%d%.%d (%d+)"))
    local headers = {}
    while true do
        line, err = sock:receive("*l")
        if not line then
            sock:close()
            return nil, "headers: " .. err
        end
        if line == "" then
            break
        end
        local k, v = line:match("^([^:]+):%s*(.*)$")
        if k then
            headers[lower(k)] = v
        end
    end
    local data
    data, err = read_body(sock, headers)
    if not data then
        sock:close()
        return nil, "body: " .. tostring(err)
    end
    if opts.close then
        sock:close()
    else
        sock:setkeepalive(60000, 16)
    end
    return status, headers, data
end

return _M
