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
--
-- Require this module in init_by_lua: the nginx master then makes the
-- instance's share group (resty.consul_kv.instance), and all its workers
-- share one watch.
local ffi      = require("ffi")
local cjson    = require("cjson.safe")
local clib     = require("resty.consul_kv.clib")
local instance = require("resty.consul_kv.instance")

local libckv       = clib.libckv
local ffi_new      = ffi.new
local ffi_gc       = ffi.gc
local ffi_string   = ffi.string
local json_decode  = cjson.decode
local json_encode  = cjson.encode
local WEAK_VALUES  = { __mode = "v" }
local setmetatable = setmetatable
local pairs        = pairs
local next         = next
local tonumber     = tonumber
local type         = type
local error        = error
local pcall        = pcall
local ngx          = ngx
local ngx_log      = ngx and ngx.log

local OK               = libckv.CKV_OK
local ERR_NOT_FOUND    = libckv.CKV_ERR_NOT_FOUND
local ERR_TOO_SMALL    = libckv.CKV_ERR_BUFFER_TOO_SMALL
local ERR_EMPTY        = libckv.CKV_ERR_EMPTY

-- Scratch out-parameters, shared by every handle in this VM: calls never
-- yield, so no two calls use them at once.
local out_handle = ffi_new("ckv_handle *[1]")
local out_len    = ffi_new("size_t[1]")
local out_gen    = ffi_new("uint64_t[1]")
local out_level  = ffi_new("int32_t[1]")

-- Output lands in this scratch buffer. A larger output (the library says
-- how large) goes into a buffer made for that one call, so a big read does
-- not keep its memory once its result is copied out.
local SCRATCH_SIZE = 16384
local scratch      = ffi_new("uint8_t[?]", SCRATCH_SIZE)

-- Calls read(h, buf, cap, arg) until the output fits; returns the status
-- and, on success, the output as a Lua string.
local function read_string(read, h, arg)
    local buf, cap = scratch, SCRATCH_SIZE
    while true do
        local rc = read(h, buf, cap, arg)
        if rc == OK then
            return OK, ffi_string(buf, out_len[0])
        end
        if rc ~= ERR_TOO_SMALL then
            return rc
        end
        cap = tonumber(out_len[0])
        buf = ffi_new("uint8_t[?]", cap)
    end
end

local function nodes_into(h, buf, cap, name)
    return libckv.ckv_nodes(h, name, #name, buf, cap, out_len, out_gen)
end

local function all_nodes_into(h, buf, cap)
    return libckv.ckv_all_nodes(h, buf, cap, out_len, out_gen)
end

local function stats_into(h, buf, cap)
    return libckv.ckv_stats(h, buf, cap, out_len)
end

local function metrics_into(h, buf, cap)
    return libckv.ckv_metrics(h, buf, cap, out_len)
end

local function log_record_into(h, buf, cap)
    return libckv.ckv_log_next(h, buf, cap, out_len, out_level)
end

local function decode(what, json)
    local v, err = json_decode(json)
    if v == nil then
        return nil, "cannot decode " .. what .. ": " .. err
    end
    return v
end

local function status_message(rc)
    return ffi_string(libckv.ckv_status_str(rc))
end

-- Finalizer as a closure over libckv, so that the library namespace stays
-- alive as long as any handle does.
local function free_handle(h)
    libckv.ckv_free(h)
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

--- The share group new() gives a config that names none: 32 hex characters
--- when this module was loaded in init_by_lua, nil when it was first loaded
--- in a worker.
function _M.instance_group()
    return instance.group
end

local standalone_logged = false

-- `conf` with share.group set to the instance's group (and
-- share.previous_group to the one before the last reload), unless the caller
-- named a group, turned sharing off, or gave a `share` that libckv refuses
-- anyway. The caller's table is left as it is (APISIX shows it in its
-- control API).
local function with_instance_group(conf)
    local share = conf.share
    if share == nil then
        share = {}
    elseif type(share) ~= "table" or share.group ~= nil
           or share.enabled == false then
        return conf
    end
    if instance.group == nil then
        if not instance.loaded_in_master and not standalone_logged and ngx_log then
            standalone_logged = true
            ngx_log(ngx.INFO, "ckv: resty.consul_kv was first loaded in a ",
                    "worker, not in init_by_lua, so this worker watches ",
                    "Consul on its own; require(\"resty.consul_kv\") in ",
                    "init_by_lua (or set share.group) to share one watch ",
                    "among the workers of this nginx instance")
        end
        return conf
    end
    local copy, share_copy = {}, {}
    for k, v in pairs(conf) do
        copy[k] = v
    end
    for k, v in pairs(share) do
        share_copy[k] = v
    end
    share_copy.group = instance.group
    share_copy.previous_group = instance.previous_group
    copy.share = share_copy
    return copy
end

local function encode_config(conf)
    local json, err = json_encode(conf)
    if not json then
        return nil, "cannot encode config: " .. err
    end
    return json
end

-- The config as JSON for ckv_init, with the instance's group added.
local function config_json(conf)
    if type(conf) ~= "string" then
        return encode_config(with_instance_group(conf))
    end
    -- JSON text is passed as it is unless the group must be added; anything
    -- but a JSON object goes to libckv, which says what is wrong with it.
    local decoded = json_decode(conf)
    if type(decoded) ~= "table" or decoded[1] ~= nil then
        return conf
    end
    local with_group = with_instance_group(decoded)
    if with_group == decoded then
        return conf
    end
    return encode_config(with_group)
end

local KNOWN_OPTS = { log_interval = true, on_log = true }

local function check_opts(opts)
    if opts == nil then
        return
    end
    if type(opts) ~= "table" then
        error("opts must be a table", 3)
    end
    for k in pairs(opts) do
        if not KNOWN_OPTS[k] then
            error("unknown option opts." .. tostring(k), 3)
        end
    end
    if opts.on_log ~= nil and type(opts.on_log) ~= "function" then
        error("opts.on_log must be a function", 3)
    end
    local interval = opts.log_interval
    if interval ~= nil then
        if type(interval) ~= "number" then
            error("opts.log_interval must be a number", 3)
        end
        -- (NaN fails both comparisons)
        if not (interval == 0 or (interval >= 0.001 and interval <= 3600)) then
            error("opts.log_interval must be 0 (no log timer) or from "
                  .. "0.001 to 3600 seconds", 3)
        end
    end
end

--- Starts watching. `conf` is APISIX's consul_kv table (or a JSON string);
--- opts.log_interval (seconds, default 0.1; 0 disables) drains the library's
--- log records into the nginx error log from a timer; opts.on_log(level,
--- message), if given, is called (from that drain, in Lua) after each record
--- is logged.
function _M.new(conf, opts)
    if type(conf) ~= "string" and type(conf) ~= "table" then
        error("conf must be a table or a JSON string", 2)
    end
    check_opts(opts)
    local json, err = config_json(conf)
    if not json then
        return nil, err
    end

    local errbuf = ffi_new("uint8_t[1024]")
    out_len[0] = 1024
    local rc = libckv.ckv_init(json, #json, out_handle, errbuf, out_len)
    if rc ~= OK then
        return nil, ffi_string(errbuf, out_len[0])
    end
    local h = ffi_gc(out_handle[0], free_handle)

    local self = setmetatable({
        h = h,
        gen_ptr = libckv.ckv_generation_ptr(h),
        on_log = opts and opts.on_log,
        -- name -> node table (or false: unknown), valid for generation `seen`.
        -- Weak values: a node table nobody holds any more (no upstream, no
        -- request) is collected and decoded again when next asked for, so
        -- the worker's memory follows the services in use, not every name
        -- ever asked for. A table a caller holds stays, and so keeps its
        -- identity (APISIX compares upstream nodes by identity first).
        cache = setmetatable({}, WEAK_VALUES),
        seen = -1,
        -- after a change: name -> { node table, service generation } from
        -- before it, reused when the service itself did not change
        previous = setmetatable({}, WEAK_VALUES),
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
        local ok, terr = ngx.timer.every(interval, function(premature)
            self:drain_logs()
            if premature then
                -- The worker is exiting: stop threads, release the watch.
                self:close()
            end
        end)
        if not ok then
            ngx_log(ngx.WARN, "ckv: cannot start log timer: ", terr)
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
    self.cache = setmetatable({}, WEAK_VALUES)
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
    local rc = libckv.ckv_service_generation(h, name, #name, out_gen)
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
    local json
    rc, json = read_string(nodes_into, h, name)
    if rc == ERR_NOT_FOUND then
        cache[name] = false
        return nil
    end
    if rc ~= OK then
        return nil, status_message(rc)
    end
    local nodes, err = decode("nodes", json)
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
    local rc, json = read_string(all_nodes_into, self.h)
    if rc ~= OK then
        return nil, status_message(rc)
    end
    local all, err = decode("services", json)
    if not all then
        return nil, err
    end
    self.all, self.all_gen = all, gen
    return all
end

--- Watch statistics (a table; see README "stats").
function _M.stats(self)
    local rc, json = read_string(stats_into, self.h)
    if rc ~= OK then
        return nil, status_message(rc)
    end
    return decode("stats", json)
end

--- The watch statistics in Prometheus' text format 0.0.4 (a string; see
--- README "Metrics"), and its Content-Type. Every worker of an instance
--- reports the leader's figures.
function _M.metrics(self)
    local rc, text = read_string(metrics_into, self.h)
    if rc ~= OK then
        return nil, status_message(rc)
    end
    return text, "text/plain; version=0.0.4; charset=utf-8"
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
        local rc, record = read_string(log_record_into, h)
        if rc ~= OK then
            if rc ~= ERR_EMPTY then
                ngx_log(ngx.ERR, "ckv: cannot read log records: ",
                        status_message(rc))
            end
            return
        end
        local level = out_level[0]
        ngx_log(level, record)
        local on_log = self.on_log
        if on_log then
            local ok, err = pcall(on_log, level, record)
            if not ok then
                ngx_log(ngx.ERR, "ckv: opts.on_log failed: ", err)
            end
        end
    end
end

--- Stops the watch and the library's threads. Node tables already returned
--- stay valid (they are plain Lua tables); later nodes() calls serve the last
--- snapshot. Idempotent.
function _M.close(self)
    if self.closed then
        return true
    end
    local rc = libckv.ckv_shutdown(self.h, 2000)
    self:drain_logs()
    self.closed = true
    if rc ~= OK then
        return nil, status_message(rc)
    end
    return true
end

return _M
