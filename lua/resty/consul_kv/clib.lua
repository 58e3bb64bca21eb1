-- Finds and loads libckv.so on package.cpath, once per LuaJIT VM, and checks
-- that its ABI is the one cdefs.lua was generated for. `libckv` is the
-- library's FFI namespace (call its functions as libckv.ckv_nodes(...)); it
-- is not ffi.C, which holds the symbols of the process itself.
local ffi    = require("ffi")
local cdefs  = require("resty.consul_kv.cdefs")

local ffi_load   = ffi.load
local ffi_string = ffi.string
local io_open    = io.open
local concat     = table.concat
local error      = error
local tostring   = tostring

local function find_shared_lib(name)
    local tried = {}
    for template in package.cpath:gmatch("[^;]+") do
        local path = template:gsub("%?", name)
        local f = io_open(path, "r")
        if f then
            f:close()
            return path
        end
        tried[#tried + 1] = path
    end
    return nil, tried
end

local path, tried = find_shared_lib("libckv")
if not path then
    error("could not find libckv.so on lua_package_cpath; tried:\n    "
          .. concat(tried, "\n    "), 2)
end

local libckv = ffi_load(path)

local abi = libckv.ckv_abi_version()
if abi ~= cdefs.ABI_VERSION then
    error("libckv at " .. path .. " has ABI version " .. tostring(abi)
          .. " but this Lua binding was written for "
          .. tostring(cdefs.ABI_VERSION) .. "; install matching versions", 2)
end

return {
    libckv  = libckv,
    path    = path,
    version = ffi_string(libckv.ckv_version()),
    cdefs   = cdefs,
}
