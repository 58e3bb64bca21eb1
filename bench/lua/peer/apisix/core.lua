-- The parts of APISIX's apisix.core that APISIX's own consul_kv module
-- calls, for `make bench` (written for the bench, not APISIX's code). The
-- behaviour that costs time is kept: a log function is a no-op when the
-- error_log level hides it (its arguments are still evaluated by the
-- caller), json.delay_encode fills one shared table whose __tostring
-- encodes, json.encode(data, true) first copies the whole table turning
-- every value JSON cannot hold (and every table seen twice) into its
-- tostring(), then encodes with cjson (forward slashes not escaped).
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

-- APISIX's settings, where this lua-cjson has them (Debian's has neither)
if cjson.encode_escape_forward_slash then cjson.encode_escape_forward_slash(false) end
if cjson.decode_array_with_array_mt then cjson.decode_array_with_array_mt(true) end

local plain = { string = true, number = true, boolean = true, ["nil"] = true }
local seen = {}

local function copy_for_json(v)
    if type(v) ~= "table" then
        return plain[type(v)] and v or tostring(v)
    end
    local t = {}
    for k, x in pairs(v) do
        local key = plain[type(k)] and k or tostring(k)
        if type(x) == "table" then
            if seen[x] then
                t[key] = tostring(x)
            else
                seen[x] = true
                t[key] = copy_for_json(x)
            end
        else
            t[key] = plain[type(x)] and x or tostring(x)
        end
    end
    return t
end

local function encode(data, force)
    if force then
        require("table.clear")(seen)
        data = copy_for_json(data)
    end
    return cjson.encode(data)
end

local delay_tab = setmetatable({ data = "", force = false }, {
    __tostring = function(self) return encode(self.data, self.force) end,
})

local json = {
    encode = encode,
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
