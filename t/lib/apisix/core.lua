-- Test stub of the parts of APISIX's apisix.core that the drop-in uses:
-- log, json, table, string and schema. Only for t/*.t; APISIX brings its own.
local cjson = require("cjson.safe")
local ngx   = ngx

local log = {}
for name, level in pairs({
    emerg = ngx.EMERG, alert = ngx.ALERT, crit = ngx.CRIT,
    error = ngx.ERR, warn = ngx.WARN, notice = ngx.NOTICE,
    info = ngx.INFO, debug = ngx.DEBUG,
}) do
    log[name] = function(...)
        return ngx.log(level, ...)
    end
end

local json = {
    encode = function(data) return cjson.encode(data) end,
    decode = function(str) return cjson.decode(str) end,
    delay_encode = function(data)
        return setmetatable({}, { __tostring = function() return cjson.encode(data) end })
    end,
}

local function deepcopy(orig)
    if type(orig) ~= "table" then
        return orig
    end
    local copy = {}
    for k, v in pairs(orig) do
        copy[k] = deepcopy(v)
    end
    return copy
end

local tab = {
    new = require("table.new"),
    clear = require("table.clear"),
    insert = table.insert,
    deepcopy = deepcopy,
}

local str = {
    has_prefix = function(s, p) return s:sub(1, #p) == p end,
    has_suffix = function(s, p) return p == "" or s:sub(-#p) == p end,
}

-- A small JSON-schema checker (type, properties, required, items, minItems,
-- minimum, maximum, minLength, enum, anyOf), enough to exercise schema.lua
-- the way APISIX's jsonschema does for these keywords. Fills defaults.
local function is_type(v, t)
    if t == "integer" then
        return type(v) == "number" and v == math.floor(v)
    elseif t == "number" then
        return type(v) == "number"
    elseif t == "string" then
        return type(v) == "string"
    elseif t == "boolean" then
        return type(v) == "boolean"
    elseif t == "array" then
        return type(v) == "table" and (next(v) == nil or v[1] ~= nil)
    elseif t == "object" then
        return type(v) == "table" and (next(v) == nil or v[1] == nil)
    end
    return true
end

local check

check = function(s, v, path)
    if s.anyOf then
        for _, sub in ipairs(s.anyOf) do
            if check(sub, v, path) then
                return true
            end
        end
        return false, path .. ": matches none of anyOf"
    end
    if s.type and not is_type(v, s.type) then
        return false, path .. ": wrong type: expected " .. s.type .. ", got " .. type(v)
    end
    if s.enum then
        local found = false
        for _, e in ipairs(s.enum) do
            if e == v then found = true end
        end
        if not found then
            return false, path .. ": not one of the allowed values"
        end
    end
    if type(v) == "number" then
        if s.minimum and v < s.minimum then
            return false, path .. ": expected >= " .. s.minimum
        end
        if s.maximum and v > s.maximum then
            return false, path .. ": expected <= " .. s.maximum
        end
    end
    if type(v) == "string" and s.minLength and #v < s.minLength then
        return false, path .. ": string too short"
    end
    if type(v) == "table" then
        if s.minItems and #v < s.minItems then
            return false, path .. ": expect array to have at least " .. s.minItems .. " items"
        end
        if s.items then
            for i, item in ipairs(v) do
                local ok, err = check(s.items, item, path .. "[" .. i .. "]")
                if not ok then return false, err end
            end
        end
        if s.required then
            for _, r in ipairs(s.required) do
                if v[r] == nil then
                    return false, path .. ": property " .. r .. " is required"
                end
            end
        end
        if s.properties then
            for k, sub in pairs(s.properties) do
                if v[k] == nil and sub.default ~= nil then
                    v[k] = deepcopy(sub.default)
                end
                if v[k] ~= nil then
                    local ok, err = check(sub, v[k], path .. "." .. k)
                    if not ok then return false, err end
                end
            end
        end
    end
    return true
end

local schema = {
    check = function(s, v)
        return check(s, v, "conf")
    end,
}

-- APISIX's core.response.set_header(name, value): sets a response header.
local response = {
    set_header = function(name, value)
        ngx.header[name] = value
    end,
}

return {
    log = log,
    response = response,
    json = json,
    table = tab,
    string = str,
    schema = schema,
}
