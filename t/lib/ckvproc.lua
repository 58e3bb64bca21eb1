-- Process facts for multi-worker tests, read from /proc: the nginx master,
-- its workers, and the library's threads in each.
local _M = {}

local function read(path)
    local f = io.open(path, "r")
    if not f then
        return nil
    end
    local s = f:read("*a")
    f:close()
    return s
end

-- pid and parent pid of a process (nil when it is gone).
local function stat(pid)
    local s = read("/proc/" .. pid .. "/stat")
    if not s then
        return nil
    end
    -- "pid (comm) state ppid ...": comm may contain spaces; skip past ')'.
    local state, ppid = s:match("%) (%S) (%d+)")
    return state, tonumber(ppid)
end

function _M.master_pid()
    local _, ppid = stat("self")
    return ppid
end

local function list(cmd)
    local p = io.popen(cmd)
    local out = {}
    for line in p:lines() do
        out[#out + 1] = line
    end
    p:close()
    return out
end

-- Live (not zombie) children of the master.
function _M.workers()
    local master = _M.master_pid()
    local pids = {}
    for _, name in ipairs(list("ls /proc")) do
        local pid = tonumber(name)
        if pid then
            local state, ppid = stat(pid)
            if ppid == master and state ~= "Z" then
                pids[#pids + 1] = pid
            end
        end
    end
    table.sort(pids)
    return pids
end

-- Thread names of a process, sorted.
function _M.threads(pid)
    local names = {}
    for _, tid in ipairs(list("ls /proc/" .. pid .. "/task 2>/dev/null")) do
        local comm = read("/proc/" .. pid .. "/task/" .. tid .. "/comm")
        if comm then
            names[#names + 1] = comm:gsub("%s+$", "")
        end
    end
    table.sort(names)
    return names
end

-- Number of ckv-* threads across the given processes.
function _M.ckv_threads(pids)
    local n = 0
    for _, pid in ipairs(pids) do
        for _, name in ipairs(_M.threads(pid)) do
            if name:find("^ckv%-") then
                n = n + 1
            end
        end
    end
    return n
end

-- The shared directories of `group` (ckv.<uid>.<group>, plus the slots
-- +N that another configuration in the same group gets). Default: this
-- instance's group, made by resty.consul_kv in the master.
function _M.shm_dirs(group)
    group = group or require("resty.consul_kv").instance_group()
    return list("ls -d /dev/shm/ckv.*." .. group .. " /dev/shm/ckv.*." .. group .. "+* 2>/dev/null")
end

-- Every shared directory of ckv.
function _M.all_shm_dirs()
    return list("ls -d /dev/shm/ckv.* 2>/dev/null")
end

return _M
