-- Prints lua/apisix/discovery/consul_kv/schema.lua as flat JSON for
-- tests/config_docs.rs: {"<dotted path>": {type, default, minimum, maximum,
-- minLength, minItems, enum, required}, ...}. Object defaults
-- ({connect = 2000, ...}) are kept as objects. Usage: luajit this.lua SCHEMA
local schema = dofile(assert(arg[1], "usage: schema_to_json.lua SCHEMA"))

local function encode(v)
    local t = type(v)
    if t == "nil" then
        return "null"
    elseif t == "boolean" then
        return tostring(v)
    elseif t == "number" then
        assert(v == math.floor(v), "only integers are expected")
        return string.format("%d", v)
    elseif t == "string" then
        return '"' .. v:gsub('[%c"\\]', function(c)
            return string.format("\\u%04x", c:byte())
        end) .. '"'
    end
    assert(t == "table", "cannot encode " .. t)
    if #v > 0 or next(v) == nil then
        local items = {}
        for i, x in ipairs(v) do items[i] = encode(x) end
        return "[" .. table.concat(items, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    local items = {}
    for i, k in ipairs(keys) do items[i] = encode(tostring(k)) .. ":" .. encode(v[k]) end
    return "{" .. table.concat(items, ",") .. "}"
end

local out = {}
local function walk(node, prefix)
    local required = {}
    for _, name in ipairs(node.required or {}) do required[name] = true end
    for name, prop in pairs(node.properties or {}) do
        local path = prefix == "" and name or (prefix .. "." .. name)
        out[path] = {
            type = prop.type,
            default = prop.default,
            minimum = prop.minimum,
            maximum = prop.maximum,
            minLength = prop.minLength,
            minItems = prop.minItems,
            enum = prop.enum,
            required = required[name] or nil,
        }
        if prop.properties then walk(prop, path) end
    end
end
walk(schema, "")
io.write(encode(out), "\n")
