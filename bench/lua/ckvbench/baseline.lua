-- The Lua baseline for `make bench`: APISIX's consul_kv algorithm, written
-- for this benchmark (not APISIX's code) so that it runs without APISIX:
--
--  * nodes(name): a table lookup plus the original's
--    log.info("process id: ", ngx.worker.id(), ..., json.delay_encode(list, true))
--    where log.info is APISIX's core.log (a no-op function when the error_log
--    level hides info, but its arguments are still evaluated) and
--    delay_encode fills and returns one shared table, as APISIX's core.json;
--  * update_application(server_name_prefix, data): per entry ngx.re.match of
--    "(prefix/.*/)([a-zA-Z0-9.]+):([0-9]+)" ("jo"), skip_keys, base64 decode
--    and JSON decode of the value, check_status, then the rebuild of
--    `applications` (clear the server's old services, insert the new ones);
--  * the watcher (worker 0 only, like the original): a timer loop doing the
--    blocking query with cosockets, cjson.decode of the whole body and
--    update_application in the event loop, then a broadcast of the whole
--    table to the other workers. The broadcast is modelled on
--    lua-resty-worker-events (cjson-encoded payload in a shared dict, polled
--    by the other workers, which decode it); it has no 64 KB limit here,
--    unlike APISIX's event bus (#11049), so the baseline is if anything
--    favoured at 100k nodes.
local cjson      = require("cjson.safe")
local errlog     = require("ngx.errlog")
local http       = require("ckvbench.http")
local new_tab    = require("table.new")
local clear_tab  = require("table.clear")
local ngx        = ngx
local ngx_re_match = ngx.re.match
local ngx_decode_base64 = ngx.decode_base64
local ipairs, pairs, tonumber = ipairs, pairs, tonumber
local insert = table.insert

local _M = {}

---------------------------------------------------------------------------
-- APISIX core.log / core.json equivalents (behaviour, not code)
---------------------------------------------------------------------------
local levels = {
    stderr = ngx.STDERR, emerg = ngx.EMERG, alert = ngx.ALERT, crit = ngx.CRIT,
    error = ngx.ERR, warn = ngx.WARN, notice = ngx.NOTICE, info = ngx.INFO,
    debug = ngx.DEBUG,
}
local cur_level = errlog.get_sys_filter_level()
local function do_nothing() end
local log = {}
for name, level in pairs(levels) do
    if cur_level and level > cur_level then
        log[name] = do_nothing
    else
        log[name] = function(...) return ngx.log(level, ...) end
    end
end
_M.log = log

local delay_tab = setmetatable({ data = "", force = false }, {
    __tostring = function(self)
        return cjson.encode(self.data)
    end,
})
local function json_delay_encode(data, force)
    delay_tab.data = data
    delay_tab.force = force
    return delay_tab
end
local json_encode = cjson.encode
local json_decode = cjson.decode
_M.json_delay_encode = json_delay_encode

---------------------------------------------------------------------------
-- State
---------------------------------------------------------------------------
local applications
local consul_apps = {}
local default_service
local default_weight = 1
local default_prefix_rule = "(upstreams/.*/)([a-zA-Z0-9.]+):([0-9]+)"
local skip_keys_map = {}
local cjson_null = cjson.null

function _M.configure(prefix, weight)
    default_prefix_rule = "(" .. prefix .. "/.*/)([a-zA-Z0-9.]+):([0-9]+)"
    default_weight = weight or 1
end

function _M.set_applications(apps)
    applications = apps
end

function _M.all_nodes()
    return applications
end

local worker_id = ngx.worker.id

function _M.nodes(service_name)
    if not applications then
        log.error("application is nil, failed to fetch nodes for : ", service_name)
        return
    end
    local resp_list = applications[service_name]
    if not resp_list then
        log.error("fetch nodes failed by ", service_name, ", return default service")
        return default_service and { default_service }
    end
    log.info("process id: ", worker_id(), ", applications[", service_name, "] = ",
        json_delay_encode(resp_list, true))
    return resp_list
end

local function parse_instance(node, server_name_prefix)
    local key = node.Key
    if key == cjson_null or not key or #key == 0 then
        log.error("consul_key_empty, server_name_prefix: ", server_name_prefix,
            ", node: ", json_delay_encode(node, true))
        return false
    end
    local result = ngx_re_match(key, default_prefix_rule, "jo")
    if not result then
        log.error("server name parse error, server_name_prefix: ", server_name_prefix,
            ", node: ", json_delay_encode(node, true))
        return false
    end
    local sn, host, port = result[1], result[2], result[3]
    if sn and skip_keys_map[sn] then
        return false
    end
    local value = node.Value
    if value == cjson_null or not value or #value == 0 then
        log.error("error: consul_value_empty, server_name_prefix: ", server_name_prefix,
            ", node: ", json_delay_encode(node, true))
        return false
    end
    local metadata, err = json_decode(ngx_decode_base64(value))
    if err then
        log.error("invalid upstream value, server_name_prefix: ", server_name_prefix,
            ",err: ", err, ", node: ", json_delay_encode(node, true))
        return false
    elseif metadata.check_status == false or metadata.check_status == "false" then
        log.error("server node unhealthy, server_name_prefix: ", server_name_prefix,
            ", node: ", json_delay_encode(node, true))
        return false
    end
    return true, host, tonumber(port), metadata, sn
end

--- The rebuild. `eager_logs`: also pay the original's eagerly evaluated
--- log argument `core.json.encode(applications)` (an info log that is off).
function _M.update_application(server_name_prefix, data, eager_logs)
    if not applications then
        applications = {}
    end
    local up_apps = new_tab(0, #data)
    local weight = default_weight
    for _, node in ipairs(data) do
        local succ, ip, port, metadata, server_name = parse_instance(node, server_name_prefix)
        if succ then
            local sn = server_name_prefix .. server_name
            local nodes = up_apps[sn]
            if not nodes then
                nodes = new_tab(1, 0)
                up_apps[sn] = nodes
            end
            insert(nodes, {
                host = ip,
                port = port,
                weight = metadata and metadata.weight or weight,
            })
        end
    end
    local old_apps = consul_apps[server_name_prefix] or {}
    for k in pairs(old_apps) do
        applications[k] = nil
    end
    clear_tab(old_apps)
    for k, v in pairs(up_apps) do
        applications[k] = v
    end
    consul_apps[server_name_prefix] = up_apps
    if eager_logs then
        log.info("update applications: ", json_encode(applications))
    end
end

--- One full refresh from a response body, as connect() does after a change:
--- decode, (eager_logs: the notice log's json.encode of the decoded body),
--- update_application.
function _M.refresh_from_body(server_name_prefix, body, eager_logs)
    local data, err = json_decode(body)
    if not data then
        return nil, err
    end
    if eager_logs then
        log.notice("server_name: ", server_name_prefix, ", body: ", json_encode(data))
    end
    _M.update_application(server_name_prefix, data, eager_logs)
    return true
end

---------------------------------------------------------------------------
-- Watcher (worker 0) and broadcast
---------------------------------------------------------------------------
local BCAST_DICT = "ckvbench_events"

--- opts: host, port, prefix, wait (s), server_url, eager_logs
function _M.start(opts)
    _M.configure(opts.prefix, 1)
    local dict = ngx.shared[BCAST_DICT]
    local wid = ngx.worker.id()
    if wid ~= 0 then
        -- Follower: take the broadcast payload when its version moves.
        local seen = 0
        local function poll(premature)
            if premature then return end
            local v = dict:get("version") or 0
            if v ~= seen then
                local payload = dict:get("payload")
                local apps = payload and json_decode(payload)
                if apps then
                    applications = apps
                    seen = v
                end
            end
        end
        ngx.timer.every(0.01, poll)
        return
    end
    local server_name_key = opts.server_url .. "/v1/kv/"
    local index = 0
    local function connect(premature)
        if premature or ngx.worker.exiting() then
            return
        end
        local path = "/v1/kv/" .. opts.prefix .. "?recurse&wait=" .. opts.wait .. "s&index=" .. index
        local status, headers, body = http.request({
            host = opts.host, port = opts.port, path = path,
            timeout = (opts.wait + 10) * 1000,
        })
        if status == 200 then
            local new_index = headers["x-consul-index"]
            if new_index ~= tostring(index) then
                index = tonumber(new_index) or 0
                if body and #body > 0 then
                    local ok = _M.refresh_from_body(server_name_key, body, opts.eager_logs)
                    if ok then
                        -- the broadcast: whole table, encoded once
                        dict:set("payload", json_encode(applications))
                        dict:incr("version", 1, 0)
                    end
                end
            end
            ngx.timer.at(0, connect)
        else
            ngx.log(ngx.ERR, "baseline fetch failed: ", tostring(status), " ", tostring(headers))
            ngx.timer.at(1, connect)
        end
    end
    ngx.timer.at(0, connect)
end

return _M
