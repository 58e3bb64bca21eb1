-- Test stub of APISIX's apisix.core.config_local: tests put the config.yaml
-- equivalent here in init_by_lua, before the discovery module is loaded.
local _M = {}

local conf = {}

function _M.set(new)
    for k in pairs(conf) do
        conf[k] = nil
    end
    for k, v in pairs(new) do
        conf[k] = v
    end
end

function _M.local_conf()
    return conf
end

return _M
