-- apisix.core.config_local for the bench: ckvbench.run puts the config.yaml
-- equivalent here in init_by_lua, before the discovery module is loaded.
local conf = {}
return {
    set = function(new)
        for k in pairs(conf) do conf[k] = nil end
        for k, v in pairs(new) do conf[k] = v end
    end,
    local_conf = function() return conf end,
}
