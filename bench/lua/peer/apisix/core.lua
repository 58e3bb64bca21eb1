-- The parts of APISIX's apisix.core that APISIX's own consul_kv module
-- calls, for `make bench` (written for the bench, not APISIX's code). The
-- behaviour that costs time is kept: a log function is a no-op when the
-- error_log level hides it (its arguments are still evaluated by the
-- caller), json.delay_encode fills one shared table whose __tostring
-- encodes, json.encode is cjson's.
local cjson  = require("cjson.safe")
local errlog = require("ngx.errlog")
local ngx    = ngx

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

local delay_tab = setmetatable({ data = "", force = false }, {
    __tostring = function(self) return cjson.encode(self.data) end,
})

local json = {
    encode = function(data) return cjson.encode(data) end,
    decode = function(str) return cjson.decode(str) end,
    delay_encode = function(data, force)
        delay_tab.data = data
        delay_tab.force = force
        return delay_tab
    end,
}

local tab = {
    new = require("table.new"),
    clear = require("table.clear"),
    insert = table.insert,
}

local str = {
    has_suffix = function(s, p) return p == "" or s:sub(-#p) == p end,
}

return { log = log, json = json, table = tab, string = str }
