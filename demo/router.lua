-- The demo's router: /svc/<name>/ is proxied to a node of the Consul service
-- upstreams/<name>/, as discovered by the APISIX drop-in
-- (apisix.discovery.consul_kv). Weighted round-robin with a counter shared by
-- the workers, so the split is exact whatever worker takes the request.
local discovery = require("apisix.discovery.consul_kv")
local config_local = require("apisix.core.config_local")
local balancer = require("ngx.balancer")

local _M = {}

local base  -- "http://127.0.0.1:8500/v1/kv/upstreams/"

local function service_name(svc)
    if not base then
        local conf = config_local.local_conf().discovery.consul_kv
        base = conf.servers[1] .. "/v1/kv/" .. conf.prefix .. "/"
    end
    return base .. svc .. "/"
end

-- access phase: choose the peer.
function _M.pick(svc)
    local nodes = discovery.nodes(service_name(svc))
    if not nodes or #nodes == 0 then
        ngx.status = 503
        ngx.say("no nodes for service ", svc)
        return ngx.exit(503)
    end
    local total = 0
    for _, n in ipairs(nodes) do
        total = total + (n.weight or 1)
    end
    local i = ngx.shared.demo_rr:incr(svc, 1, 0)
    local k = (i - 1) % total
    for _, n in ipairs(nodes) do
        k = k - (n.weight or 1)
        if k < 0 then
            ngx.ctx.peer = n
            break
        end
    end
end

-- balancer phase: hand the chosen peer to nginx.
function _M.balance()
    local n = ngx.ctx.peer
    local ok, err = balancer.set_current_peer(n.host, n.port)
    if not ok then
        ngx.log(ngx.ERR, "set_current_peer ", n.host, ":", n.port, ": ", err)
        return ngx.exit(502)
    end
end

-- "pid=<worker pid> nodes=host:port,host:port" as this worker sees them.
function _M.show_nodes(svc)
    local nodes = discovery.nodes(service_name(svc)) or {}
    local parts = {}
    for _, n in ipairs(nodes) do
        parts[#parts + 1] = n.host .. ":" .. n.port
    end
    ngx.say("pid=", ngx.worker.pid(), " nodes=", table.concat(parts, ","))
end

-- "pid=<worker pid> role=leader|follower"
function _M.show_role()
    local stats = discovery.stats() or {}
    ngx.say("pid=", ngx.worker.pid(), " role=", tostring(stats.role))
end

return _M
