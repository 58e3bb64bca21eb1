-- Extra nginx instances started from inside a test, for what separates or
-- joins instances (share groups, reloads, containers). Each runs the nginx
-- binary of the test, with its own prefix under the test's servroot, the
-- same Lua paths and modules, and no server{} (it listens on nothing).
--
--   require("ckvinstance").run(function(start)
--       local a = start("a", { http = "...", workers = 2 })
--       local ok, states = a:wait_states(function(s) ... end)
--   end)  -- stops them
--
-- Inside the instance, call require("ckvinstance").report(fn) from
-- init_worker_by_lua: every 10 ms each worker writes "<pid> <fn()>" to
-- {prefix}/state.<worker id>, which the test reads with :states().
local ckvtest = require("ckvtest")

local _M = {}
local mt = { __index = _M }

local function sh(cmd)
    local p = assert(io.popen(cmd .. " 2>&1"))
    local out = p:read("*a")
    p:close()
    return out
end

-- The nginx binary and the load_module/user lines of the running instance,
-- so that a new instance loads what this one loads.
local function running_nginx()
    local bin = sh("readlink /proc/" .. ngx.worker.pid() .. "/exe"):gsub("%s+$", "")
    local conf = assert(ckvtest.read_file(ngx.config.prefix() .. "conf/nginx.conf"))
    local lines = {}
    for line in conf:gmatch("[^\n]+") do
        if line:find("^%s*load_module%s") or line:find("^%s*user%s") then
            lines[#lines + 1] = line
        end
    end
    return bin, table.concat(lines, "\n")
end

local function conf_text(main, workers, daemon, http)
    return main .. "\n" .. [[
daemon ]] .. daemon .. [[;
master_process on;
worker_processes ]] .. workers .. [[;
pid logs/nginx.pid;
error_log logs/error.log info;
events { worker_connections 64; }
http {
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    lua_package_path "]] .. package.path .. [[";
    lua_package_cpath "]] .. package.cpath .. [[";
]] .. http .. [[

}
]]
end

-- Live (not zombie) process?
local function alive(pid)
    local s = ckvtest.read_file("/proc/" .. pid .. "/stat")
    return s ~= nil and s:match("%) (%S) ") ~= "Z"
end

-- Children of `pid`, from /proc.
local function children(pid)
    local out = {}
    for name in sh("ls /proc"):gmatch("%d+") do
        local s = ckvtest.read_file("/proc/" .. name .. "/stat")
        if s and tonumber(s:match("%) %S (%d+)")) == pid then
            out[#out + 1] = tonumber(name)
        end
    end
    return out
end

--- Starts instance `name`. opts: http (text inside http{}), workers
--- (default 1), pid_namespace (true: the master runs as pid 1 of a new pid
--- namespace, as in a container; /dev/shm stays shared), env ("NAME=value"
--- for nginx's environment). Waits until the
--- master runs; returns the instance or raises an error with nginx's output.
function _M.start(name, opts)
    local prefix = ngx.config.prefix() .. "instances/" .. name .. "/"
    sh("rm -rf '" .. prefix .. "' && mkdir -p '" .. prefix .. "conf' '"
       .. prefix .. "logs' '" .. prefix .. "tmp'")
    local bin, main = running_nginx()
    local daemon = opts.pid_namespace and "off" or "on"
    ckvtest.write_file(prefix .. "conf/nginx.conf",
                       conf_text(main, opts.workers or 1, daemon, opts.http))
    local self = setmetatable({ name = name, prefix = prefix }, mt)
    -- The worker's descriptors (listening sockets included) must not leak
    -- into the new instance; bash closes them before exec.
    local close_fds = [[for fd in $(ls /proc/$$/fd); do ]]
        .. [[[ "$fd" -gt 2 ] && eval "exec $fd>&-"; done; ]]
    local run = bin .. " -p " .. prefix .. " -c conf/nginx.conf -e logs/error.log"
    if opts.env then
        run = "env " .. opts.env .. " " .. run
    end
    if opts.pid_namespace then
        -- unshare stays as the parent; if it dies, nginx gets QUIT.
        local cmd = close_fds .. "exec unshare --pid --fork --kill-child=SIGQUIT " .. run
        sh("bash -c '" .. cmd:gsub("'", [['\'']]) .. "' >" .. prefix
           .. "logs/stdout 2>&1 </dev/null & echo $! >" .. prefix .. "unshare.pid")
        local unshare = tonumber(ckvtest.read_file(prefix .. "unshare.pid"))
        local ok = ckvtest.wait_for(function()
            self.master = children(unshare)[1]
            return self.master ~= nil and #children(self.master) == (opts.workers or 1)
        end, 5)
        if not ok then
            error("instance " .. name .. " did not start: "
                  .. tostring(ckvtest.read_file(prefix .. "logs/stdout"))
                  .. tostring(ckvtest.read_file(prefix .. "logs/error.log")))
        end
    else
        local out = sh("bash -c '" .. (close_fds .. "exec " .. run):gsub("'", [['\'']])
                       .. "' </dev/null")
        local pid = tonumber(ckvtest.read_file(prefix .. "logs/nginx.pid") or "")
        if not pid then
            error("instance " .. name .. " did not start: " .. out)
        end
        self.master = pid
    end
    return self
end

--- Runs fn(start), where start(name, opts) starts an instance as
--- _M.start does; stops every instance started so when fn returns or
--- raises, and then says "failed: <error>" in the response if it raised.
function _M.run(fn)
    local started = {}
    local ok, err = pcall(fn, function(name, opts)
        local inst = _M.start(name, opts)
        started[#started + 1] = inst
        return inst
    end)
    for _, inst in ipairs(started) do
        inst:stop()
    end
    if not ok then
        ngx.say("failed: ", err)
    end
end

--- Reloads the configuration (HUP); new workers get a new Lua VM.
function _M.reload(self)
    sh("kill -HUP " .. self.master)
end

--- Stops the instance (QUIT), waits until its master is gone, and removes
--- its prefix (the test runner removes only what it made in servroot).
function _M.stop(self)
    if self.master and alive(self.master) then
        sh("kill -QUIT " .. self.master)
        if not ckvtest.wait_for(function() return not alive(self.master) end, 10) then
            return false
        end
    end
    sh("rm -rf '" .. self.prefix .. "'")
    os.remove(ngx.config.prefix() .. "instances")
    return true
end

--- { [worker id] = { pid = n, state = "..." } } as last written.
function _M.states(self)
    local out = {}
    for id in sh("ls " .. self.prefix):gmatch("state%.(%d+)") do
        local line = ckvtest.read_file(self.prefix .. "state." .. id)
        local pid, state = (line or ""):match("^(%d+) (.*)$")
        if pid then
            out[tonumber(id)] = { pid = tonumber(pid), state = state }
        end
    end
    return out
end

--- Waits (up to `timeout` s, default 5) until check(states) is true;
--- returns ok and the states.
function _M.wait_states(self, check, timeout)
    local states
    local ok = ckvtest.wait_for(function()
        states = self:states()
        return check(states)
    end, timeout)
    return ok, states
end

--- Inside an instance: every 10 ms, writes "<pid> <tostring(fn())>" to
--- {prefix}/state.<worker id> (atomically, by rename).
function _M.report(fn)
    local path = ngx.config.prefix() .. "state." .. ngx.worker.id()
    local function write(premature)
        if premature then
            return
        end
        local ok, v = pcall(fn)
        ckvtest.write_file(path .. ".tmp", ngx.worker.pid() .. " "
                           .. (ok and tostring(v) or ("error: " .. tostring(v))))
        os.rename(path .. ".tmp", path)
    end
    write()
    assert(ngx.timer.every(0.01, write))
end

return _M
