--
-- ckv: configuration schema of `discovery.consul_kv`.
--
-- APISIX's `apisix/cli/schema.lua` validates `discovery.<kind>` against
-- `apisix.discovery.<kind>.schema` at `apisix start`. This table accepts the
-- same configs as APISIX's own consul_kv schema (same properties, types,
-- defaults and limits), with two differences:
--
--   * `servers` items may also be `https://host:port` (APISIX: `http://` only);
--   * the optional ckv fields `tls`, `max_response_bytes`, `on_empty_prefix`, `gzip`,
--     `backoff` and `share` are described.
--
-- libckv checks the config again, more strictly (see src/config/): server
-- URLs in full, `timeout.wait` <= 600, `default_service.host`/`port` present,
-- and upper limits on the timeouts.
--
-- Copyright the ckv authors. Licensed under the Apache License, Version 2.0.
--
return {
    type = "object",
    properties = {
        -- Consul agents, each an independent source: http://host:port or
        -- https://host:port, no path and no trailing "/".
        servers = {
            type = "array",
            minItems = 1,
            items = {
                type = "string",
                pattern = [[^https?://[^/?#@]+$]],
            }
        },
        -- ACL token, sent as X-Consul-Token.
        token = {type = "string", default = ""},
        -- Seconds between polls when keepalive is false.
        fetch_interval = {type = "integer", minimum = 1, default = 3},
        -- true: blocking queries; false: poll every fetch_interval.
        keepalive = {
            type = "boolean",
            default = true
        },
        prefix = {type = "string", default = "upstreams"},
        -- Node weight when the KV value has none.
        weight = {type = "integer", minimum = 1, default = 1},
        timeout = {
            type = "object",
            properties = {
                connect = {type = "integer", minimum = 1, default = 2000}, -- ms
                read = {type = "integer", minimum = 1, default = 2000},    -- ms
                wait = {type = "integer", minimum = 1, default = 60}       -- s
            },
            default = {
                connect = 2000,
                read = 2000,
                wait = 60,
            }
        },
        -- Exact "<prefix>/<service>/" strings whose nodes are ignored.
        skip_keys = {
            type = "array",
            minItems = 1,
            items = {
                type = "string",
            }
        },
        dump = {
            type = "object",
            properties = {
                path = {type = "string", minLength = 1},
                load_on_init = {type = "boolean", default = true},
                expire = {type = "integer", default = 0}, -- s, 0 = never
            },
            required = {"path"},
        },
        -- Answered for a service that is not in Consul.
        default_service = {
            type = "object",
            properties = {
                host = {type = "string"},
                port = {type = "integer"},
                metadata = {
                    type = "object",
                    properties = {
                        fail_timeout = {type = "integer", default = 1},
                        weight = {type = "integer", default = 1},
                        max_fails = {type = "integer", default = 1}
                    },
                    default = {
                        fail_timeout = 1,
                        weight = 1,
                        max_fails = 1
                    }
                }
            }
        },

        -- ckv only: everything below is optional.

        -- For https:// servers.
        tls = {
            type = "object",
            properties = {
                -- PEM file of CA certificates; default: the system roots.
                ca_file = {type = "string", minLength = 1},
                verify = {type = "boolean", default = true},
            },
        },
        -- A Consul response larger than this is refused (default 64 MiB).
        max_response_bytes = {type = "integer", minimum = 1024, default = 67108864},
        -- When a server's whole prefix is gone: "clear" drops its services,
        -- "keep" keeps the last ones and logs a warning.
        on_empty_prefix = {
            type = "string",
            enum = {"clear", "keep"},
            default = "clear",
        },
        -- Ask Consul to gzip responses: saves bandwidth to a remote agent,
        -- costs CPU on both ends (off: the agent is normally local).
        gzip = {type = "boolean", default = false},
        -- Retry delay after a failed request: doubled per failure with
        -- jitter, capped at max, reset after a success (ms).
        backoff = {
            type = "object",
            properties = {
                initial = {type = "integer", minimum = 1, default = 1000},
                -- must be >= initial
                max = {type = "integer", minimum = 1, default = 30000},
            },
        },
        -- One watch shared by the processes of an nginx instance.
        share = {
            type = "object",
            properties = {
                enabled = {type = "boolean", default = true},
                -- absolute path
                dir = {type = "string", minLength = 1, default = "/dev/shm"},
                -- default: the nginx instance's random group, made by
                -- resty.consul_kv in the master (README "Lua API")
                group = {
                    anyOf = {
                        {type = "string", pattern = [[^[A-Za-z0-9._-]{1,64}$]]},
                        {type = "integer", minimum = 0},
                    },
                },
                -- the group before a HUP reload, set by resty.consul_kv:
                -- its snapshot is served until the new group has one
                previous_group = {
                    anyOf = {
                        {type = "string", pattern = [[^[A-Za-z0-9._-]{1,64}$]]},
                        {type = "integer", minimum = 0},
                    },
                },
            },
        },
    },

    required = {"servers"}
}
