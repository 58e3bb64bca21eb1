-- Monotonic and CPU clocks through LuaJIT FFI (clock_gettime).
-- CLOCK_MONOTONIC is one clock for every process of the machine, so times
-- taken in different nginx workers and in the Python driver compare.
local ffi = require("ffi")
local C = ffi.C
local tonumber = tonumber

pcall(ffi.cdef, [[
typedef struct { long tv_sec; long tv_nsec; } ckvbench_timespec;
int clock_gettime(int clk_id, ckvbench_timespec *tp);
]])

local ts = ffi.new("ckvbench_timespec")

local _M = {}

--- CLOCK_MONOTONIC, nanoseconds (a double: exact below 2^53 ns = 104 days).
function _M.now_ns()
    C.clock_gettime(1, ts)
    return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
end

--- CLOCK_REALTIME, microseconds: the clock of ckv's `last_change_steps`.
function _M.now_real_us()
    C.clock_gettime(0, ts)
    return tonumber(ts.tv_sec) * 1e6 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

--- CLOCK_THREAD_CPUTIME_ID, nanoseconds of CPU used by this thread.
function _M.cpu_ns()
    C.clock_gettime(3, ts)
    return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
end

return _M
