-- Drop-in replacement for APISIX's apisix.discovery.consul_kv, backed by
-- libckv (see README "APISIX"). Same configuration, service names, node
-- tables and control API; the Consul watch runs in a Rust thread, once per
-- nginx instance, instead of in worker 0's event loop.
--
-- Uses only APISIX 3.x APIs: apisix.core (log, json, table, schema) and
-- apisix.core.config_local.
local require      = require
local local_conf   = require("apisix.core.config_local").local_conf()
local core         = require("apisix.core")
local schema       = require("apisix.discovery.consul_kv.schema")
local consul_kv    = require("resty.consul_kv")
local io_open      = io.open
local error        = error
local type         = type
local tonumber     = tonumber
local ngx          = ngx
local log          = core.log

local client
local conf
local default_nodes      -- { default_service } or nil; one table, reused
local dump_path
local missing_logged = {} -- service name -> true once its miss was logged

local _M = {
    version = 0.3,
}


-- APISIX logs a missing service on every request; once per name is enough
-- to act on, and keeps the error log usable under traffic.
local function log_missing(service_name)
    if missing_logged[service_name] then
        return
    end
    missing_logged[service_name] = true
    log.error("fetch nodes failed by ", service_name, ", return default service")
end


function _M.nodes(service_name)
    local nodes = client:nodes(service_name)
    if nodes ~= nil then
        return nodes
    end
    log_missing(service_name)
    return default_nodes
end


function _M.all_nodes()
    return client:all_nodes()
end


local function redacted_conf()
    local copy = core.table.deepcopy(conf)
    if copy.token and copy.token ~= "" then
        copy.token = "<redacted>"
    end
    return copy
end


function _M.dump_data()
    return { config = redacted_conf(), services = client:all_nodes() }
end


local function show_dump_file()
    if not dump_path then
        return 503, "dump params is nil"
    end
    local f, err = io_open(dump_path, "r")
    if not f then
        return 503, err
    end
    local data = f:read("*a")
    f:close()
    return 200, data
end


-- ckv extension: the watch statistics as JSON (the token is shown as
-- "<redacted>"). APISIX's control router encodes a table body as JSON.
local function show_stats()
    if not client then
        return 503, { error_msg = "consul_kv: not started" }
    end
    local stats, err = client:stats()
    if not stats then
        return 503, { error_msg = "consul_kv: " .. err }
    end
    return 200, stats
end


-- ckv extension: the same figures for Prometheus (text format 0.0.4).
local function show_metrics()
    if not client then
        return 503, { error_msg = "consul_kv: not started" }
    end
    local text, content_type = client:metrics()
    if not text then
        return 503, { error_msg = "consul_kv: " .. content_type }
    end
    core.response.set_header("Content-Type", content_type)
    return 200, text
end


function _M.control_api()
    return {
        {
            methods = { "GET" },
            uris = { "/show_dump_file" },
            handler = show_dump_file,
        },
        {
            methods = { "GET" },
            uris = { "/v1/discovery/consul_kv/stats" },
            handler = show_stats,
        },
        {
            methods = { "GET" },
            uris = { "/v1/discovery/consul_kv/metrics" },
            handler = show_metrics,
        },
    }
end


-- APISIX's module logs "retry connecting consul after N seconds" at warn
-- before each retry, and operators alert on it. ckv's own retry record ends
-- with "retry <attempt> in <delay>s" (the delay it really waits); each one
-- the library lets through its rate limit gets the same line in APISIX's
-- words, with that delay.
local RETRY_TAIL = "; keeping the last good nodes, retry %d+ in (%d+%.?%d*)s$"

local function apisix_retry_line(_, message)
    local delay = message:match(RETRY_TAIL)
    if delay then
        log.warn("retry connecting consul after ", tonumber(delay), " seconds")
    end
end


--- For /status/ready: true once every server answered once (or a fresh
--- dump is served).
function _M.check_discovery_ready()
    local stats = client and client:stats()
    if stats and stats.ready then
        return true
    end
    return false, "consul_kv: no data from Consul yet"
end


--- Watch statistics (ckv extension): per-server state, index, errors.
function _M.stats()
    return client and client:stats()
end


function _M.init_worker()
    conf = local_conf.discovery and local_conf.discovery.consul_kv
    if type(conf) ~= "table" then
        error("discovery.consul_kv is not configured")
    end
    local ok, err = core.schema.check(schema, conf)
    if not ok then
        error("invalid discovery.consul_kv configuration: " .. err)
    end

    if conf.default_service then
        -- As APISIX: the configured weight applies to the default node.
        local node = core.table.deepcopy(conf.default_service)
        node.weight = conf.weight
        default_nodes = { node }
    end
    dump_path = conf.dump and conf.dump.path

    local err2
    client, err2 = consul_kv.new(conf, { on_log = apisix_retry_line })
    if not client then
        error("consul_kv: " .. err2)
    end
    log.info("consul_kv: libckv ", consul_kv.library_version, " from ",
             consul_kv.library_path, ", worker ", ngx.worker.id())
end


-- ckv extension: stop the watch before the worker exits (optional; the
-- library also stops when the worker's timers are cancelled at exit).
function _M.exit_worker()
    if client then
        client:close()
    end
end


return _M
