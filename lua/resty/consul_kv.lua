-- resty.consul_kv: Consul KV service discovery for OpenResty, backed by
-- libckv. One Consul watch per server per nginx instance, whatever the worker
-- count; every worker reads an immutable snapshot without waiting.
--
--   local consul_kv = require("resty.consul_kv")
--   local kv = assert(consul_kv.new({ servers = { "http://127.0.0.1:8500" } }))
--   local nodes = kv:nodes("http://127.0.0.1:8500/v1/kv/upstreams/web/")
--
-- nodes(name) returns the same Lua table for a service until that service
-- changes, so callers can compare by identity. Treat it as read-only.
local ffi    = require("ffi")
local cjson  = require("cjson.safe")
local clib   = require("resty.consul_kv.clib")

local C            = clib.C
local ffi_new      = ffi.new
local ffi_gc       = ffi.gc
local ffi_string   = ffi.string
local json_decode  = cjson.decode
local json_encode  = cjson.encode
local setmetatable = setmetatable
local pairs        = pairs
local next         = next
local tonumber     = tonumber
local type         = type
local error        = error
local ngx          = ngx
local ngx_log      = ngx and ngx.log

local OK               = C.CKV_OK
local ERR_NOT_FOUND    = C.CKV_ERR_NOT_FOUND
local ERR_TOO_SMALL    = C.CKV_ERR_BUFFER_TOO_SMALL
local ERR_EMPTY        = C.CKV_ERR_EMPTY

-- Scratch out-parameters, shared by every handle in this VM: calls never
-- yield, so no two calls use them at once.
local out_handle = ffi_new("ckv_handle *[1]")
local out_len    = ffi_new("size_t[1]")
local out_gen    = ffi_new("uint64_t[1]")
local out_level  = ffi_new("int32_t[1]")

local buf_size = 16384
local buf      = ffi_new("uint8_t[?]", buf_size)

local function grow(need)
    if need > buf_size then
        buf_size = need
        buf = ffi_new("uint8_t[?]", buf_size)
    end
end

-- Each reader below retries with a bigger scratch buffer until the output
-- fits (the library reports the size it needs).
local function read_nodes(h, name)
    while true do
        local rc = C.ckv_nodes(h, name, #name, buf, buf_size, out_len, out_gen)
        if rc ~= ERR_TOO_SMALL then
            return rc
        end
        grow(tonumber(out_len[0]))
    end
end

local function read_all_nodes(h)
    while true do
        local rc = C.ckv_all_nodes(h, buf, buf_size, out_len, out_gen)
        if rc ~= ERR_TOO_SMALL then
            return rc
        end
        grow(tonumber(out_len[0]))
    end
end

local function read_stats(h)
    while true do
        local rc = C.ckv_stats(h, buf, buf_size, out_len)
        if rc ~= ERR_TOO_SMALL then
            return rc
        end
        grow(tonumber(out_len[0]))
    end
end

-- Decodes the JSON the last call left in the scratch buffer.
local function decode_out(what)
    local v, err = json_decode(ffi_string(buf, out_len[0]))
    if v == nil then
        return nil, "cannot decode " .. what .. ": " .. err
    end
    return v
end

local function status_message(rc)
    return ffi_string(C.ckv_status_str(rc))
end

-- Finalizer as a closure over C, so that the library namespace stays alive
-- as long as any handle does.
local function free_handle(h)
    C.ckv_free(h)
end

local _M = {
    _VERSION = "0.1.0",
    library_version = clib.version,
    library_path = clib.path,
}
local mt = { __index = _M }

-- Unknown names are cached too (as false); past this many, they are
-- forgotten so that unknown names from traffic cannot grow the cache
-- without bound.
local MAX_NEGATIVE = 10000

--- Starts watching. `conf` is APISIX's consul_kv table (or a JSON string);
--- opts.log_interval (seconds, default 0.1; 0 disables) drains the library's
--- log records into the nginx error log from a timer.
function _M.new(conf, opts)
    local json
    if type(conf) == "string" then
        json = conf
    elseif type(conf) == "table" then
        local err
        json, err = json_encode(conf)
        if not json then
            return nil, "cannot encode config: " .. err
        end
    else
        error("conf must be a table or a JSON string", 2)
    end
    if opts ~= nil and type(opts) ~= "table" then
        error("opts must be a table", 2)
    end

    local errbuf = ffi_new("uint8_t[1024]")
    out_len[0] = 1024
    local rc = C.ckv_init(json, #json, out_handle, errbuf, out_len)
    if rc ~= OK then
        return nil, ffi_string(errbuf, out_len[0])
    end
    local h = ffi_gc(out_handle[0], free_handle)

    local self = setmetatable({
        h = h,
        gen_ptr = C.ckv_generation_ptr(h),
        -- name -> node table (or false: unknown), valid for generation `seen`
        cache = {},
        seen = -1,
        -- after a change: name -> { node table, service generation } from
        -- before it, reused when the service itself did not change
        previous = {},
        generations = setmetatable({}, { __mode = "k" }),
        negative = 0,
        all = nil,
        all_gen = nil,
        closed = false,
    }, mt)

    local interval = opts and opts.log_interval
    if interval == nil then
        interval = 0.1
    end
    if interval > 0 and ngx and ngx.timer then
        self:drain_logs()
        local ok, err = ngx.timer.every(interval, function(premature)
            self:drain_logs()
            if premature then
                -- The worker is exiting: stop threads, release the watch.
                self:close()
            end
        end)
        if not ok then
            ngx_log(ngx.WARN, "ckv: cannot start log timer: ", err)
        end
    end
    return self
end

-- The snapshot moved: start a new cache; entries move to `previous` and are
-- revalidated one by one as they are asked for.
local function new_generation(self, gen)
    local previous = self.previous
    if next(previous) == nil then
        -- Usual case: everything was revalidated since the last change.
        self.previous = self.cache
    else
        for name, nodes in pairs(self.cache) do
            previous[name] = nodes
        end
    end
    self.cache = {}
    self.negative = 0
    self.seen = gen
end

local function forget_unknown(self)
    local cache = self.cache
    for k, v in pairs(cache) do
        if v == false then
            cache[k] = nil
        end
    end
    self.negative = 0
end

-- A name not in the cache for the current generation.
local function miss(self, name)
    local h = self.h
    local cache = self.cache
    local rc = C.ckv_service_generation(h, name, #name, out_gen)
    if rc == ERR_NOT_FOUND then
        self.previous[name] = nil
        if self.negative >= MAX_NEGATIVE then
            forget_unknown(self)
        end
        self.negative = self.negative + 1
        cache[name] = false
        return nil
    end
    if rc ~= OK then
        return nil, status_message(rc)
    end
    local sgen = tonumber(out_gen[0])
    local old = self.previous[name]
    if old ~= nil then
        self.previous[name] = nil
        if old and self.generations[old] == sgen then
            cache[name] = old
            return old
        end
    end
    rc = read_nodes(h, name)
    if rc == ERR_NOT_FOUND then
        cache[name] = false
        return nil
    end
    if rc ~= OK then
        return nil, status_message(rc)
    end
    local nodes, err = decode_out("nodes")
    if not nodes then
        return nil, err
    end
    -- Keyed by the table itself (weak keys): no field added to what the
    -- caller sees.
    self.generations[nodes] = tonumber(out_gen[0])
    cache[name] = nodes
    return nodes
end

--- The nodes of `name` (`{server}/v1/kv/{prefix}/{service}/`), or nil when
--- the service is unknown. Steady state: one pointer read, two table
--- lookups, no call into the library.
function _M.nodes(self, name)
    local gen = self.gen_ptr[0]
    if gen ~= self.seen then
        new_generation(self, gen)
    end
    local nodes = self.cache[name]
    if nodes then
        return nodes
    end
    if nodes == false then
        return nil
    end
    return miss(self, name)
end

--- Every service: { [name] = nodes }. Decoded again only after a change.
function _M.all_nodes(self)
    local gen = self.gen_ptr[0]
    if self.all_gen == gen then
        return self.all
    end
    local rc = read_all_nodes(self.h)
    if rc ~= OK then
        return nil, status_message(rc)
    end
    local all, err = decode_out("services")
    if not all then
        return nil, err
    end
    self.all, self.all_gen = all, gen
    return all
end

--- Watch statistics (a table; see README "stats").
function _M.stats(self)
    local rc = read_stats(self.h)
    if rc ~= OK then
        return nil, status_message(rc)
    end
    return decode_out("stats")
end

--- The snapshot generation counter (changes on every published change).
function _M.generation(self)
    return self.gen_ptr[0]
end

--- Writes queued library log records to the nginx error log.
function _M.drain_logs(self)
    if self.closed then
        return
    end
    local h = self.h
    while true do
        local rc = C.ckv_log_next(h, buf, buf_size, out_len, out_level)
        if rc ~= OK then
            if rc ~= ERR_EMPTY then
                ngx_log(ngx.ERR, "ckv: cannot read log records: ", status_message(rc))
            end
            return
        end
        ngx_log(out_level[0], ffi_string(buf, out_len[0]))
    end
end

--- Stops the watch and the library's threads. Node tables already returned
--- stay valid (they are plain Lua tables); later nodes() calls serve the last
--- snapshot. Idempotent.
function _M.close(self)
    if self.closed then
        return true
    end
    local rc = C.ckv_shutdown(self.h, 2000)
    self:drain_logs()
    self.closed = true
    if rc ~= OK then
        return nil, status_message(rc)
    end
    return true
end

return _M
