-- apisix.events for the bench: a broadcast between the workers of one nginx
-- (written for the bench). APISIX 3.8.0 uses lua-resty-events by default: a
-- post() is encoded once and pushed through a broker in worker 0 to every
-- worker, which decodes it and runs the handlers registered for its source
-- and event. Here the encoded event goes into the `worker-events` shared
-- dict under a sequence number, and every worker polls the sequence every
-- `interval` seconds (1 ms by default, standing for the socket push) and
-- decodes each new event. Unlike lua-resty-events, an event is not capped
-- at 64 KB (APISIX #11049), so 100k nodes work here where APISIX's
-- broadcast would fail: the stub favours APISIX.
local cjson = require("cjson.safe")
local ngx   = ngx

local _M = {}

local dict = ngx.shared["worker-events"]
local handlers = {}   -- source -> event -> { callback, ... }
local seen = 0

local function dispatch(ev)
    local by_event = handlers[ev.source]
    local list = by_event and by_event[ev.event]
    if list then
        for _, cb in ipairs(list) do
            cb(ev.data, ev.event, ev.source, ev.pid)
        end
    end
end

local function poll()
    local last = dict:get("seq") or 0
    while seen < last do
        seen = seen + 1
        local payload = dict:get("ev:" .. seen)
        local ev = payload and cjson.decode(payload)
        if ev then
            dispatch(ev)
        end
    end
end

--- Starts this worker's poller; call once per worker before use.
function _M.init_worker(interval)
    interval = interval or 0.001
    seen = dict:get("seq") or 0
    local function loop(premature)
        if premature then return end
        while not ngx.worker.exiting() do
            poll()
            ngx.sleep(interval)
        end
    end
    ngx.timer.at(0, loop)
end

function _M.event_list(_, source, ...)
    local list = { _source = source }
    for _, name in ipairs({ ... }) do
        list[name] = name
    end
    return list
end

function _M.register(_, callback, source, ...)
    handlers[source] = handlers[source] or {}
    for _, event in ipairs({ ... }) do
        local l = handlers[source][event] or {}
        handlers[source][event] = l
        l[#l + 1] = callback
    end
end

function _M.post(_, source, event, data)
    local payload, err = cjson.encode({ source = source, event = event, data = data,
                                        pid = ngx.worker.pid() })
    if not payload then
        return nil, err
    end
    -- stored before the sequence moves, so a poller never sees a number
    -- without its event (one poster: worker 0)
    local n = dict:incr("next", 1, 0)
    local ok, serr = dict:set("ev:" .. n, payload, 60)
    if not ok then
        return nil, serr
    end
    dict:set("seq", n)
    poll()  -- the poster's own handlers, as lua-resty-events does
    return true
end

return _M
