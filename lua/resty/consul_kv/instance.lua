-- The share group of this nginx instance, made in the nginx master.
--
-- The processes of one nginx instance share one watch when they name the
-- same share group. The group must be unique to this instance and
-- unguessable (a pid is neither: two containers both run nginx as pid 1), so
-- it is 128 random bits, made when this module is loaded in the nginx master
-- (init_by_lua). Workers inherit it through fork. Loaded first in a worker,
-- the module has no group: each worker then watches on its own.
--
-- A HUP reload replaces the master's Lua VM and runs init_by_lua again,
-- which makes a new group: the new workers never join the old ones. The
-- group before it is remembered in the master's own environment (which
-- outlives the VM and which nginx does not pass to workers or to a new
-- binary) and handed to libckv as share.previous_group: until the new
-- group's leader has Consul's answer, the new workers serve the old group's
-- latest snapshot (read-only, and only with the same configuration), so a
-- reload leaves no gap, even while Consul is down.
local ffi = require("ffi")

local io_open    = io.open
local os_getenv  = os.getenv
local str_format = string.format
local str_byte   = string.byte
local concat     = table.concat
local ngx        = ngx

local GROUP_ENV = "CKV_INSTANCE_GROUP"
local GROUP_BYTES = 16

local function random_hex(bytes)
    local f, err = io_open("/dev/urandom", "rb")
    if not f then
        return nil, err
    end
    local raw = f:read(bytes)
    f:close()
    if raw == nil or #raw ~= bytes then
        return nil, "/dev/urandom: short read"
    end
    local hex = {}
    for i = 1, bytes do
        hex[i] = str_format("%02x", str_byte(raw, i))
    end
    return concat(hex)
end

-- The group this nginx made before this (re)load. A value that was already
-- in the environment nginx was started with (see /proc/self/environ, which
-- setenv() does not change) came from outside and does not count.
local function previous_group()
    local group = os_getenv(GROUP_ENV)
    if group == nil or #group ~= 2 * GROUP_BYTES or not group:find("^%x+$") then
        return nil
    end
    local f = io_open("/proc/self/environ", "rb")
    if not f then
        return nil
    end
    local start_env = f:read("*a")
    f:close()
    if start_env == nil
       or ("\0" .. start_env):find("\0" .. GROUP_ENV .. "=", 1, true) then
        return nil
    end
    return group
end

local function keep_group(group)
    if not pcall(function() return ffi.C.setenv end) then
        ffi.cdef("int setenv(const char *name, const char *value, int overwrite);")
    end
    ffi.C.setenv(GROUP_ENV, group, 1)
end

local _M = {
    -- 32 hex characters, or nil when not loaded in the master
    group = nil,
    -- the group before the last HUP reload (32 hex characters), or nil
    previous_group = nil,
    loaded_in_master = ngx ~= nil and ngx.get_phase ~= nil
                       and ngx.get_phase() == "init",
}

if _M.loaded_in_master then
    local group, err = random_hex(GROUP_BYTES)
    if group then
        _M.previous_group = previous_group()
        keep_group(group)
        _M.group = group
    else
        ngx.log(ngx.WARN, "ckv: cannot make this instance's share group (",
                err, "): every worker will watch Consul on its own")
    end
end

return _M
