-- apisix.cli.util for the bench: consul_kv only calls it for its dump file,
-- which the bench does not configure.
local function unused()
    return nil, "apisix.cli.util is a bench stub (no dump configured)"
end
return { read_file = unused, write_file = unused, trim = function(s) return s end }
