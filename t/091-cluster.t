# Issue 16 with 2 workers sharing one watch: one Consul cluster behind
# several servers (failover and fail-back under one set of service names),
# a stale member beyond max_stale, and a token file rotated under traffic.
use lib 't/lib';
use Test::Nginx::Socket::Lua;
use TestCKV;
use File::Temp qw(tempdir);

# Every block stops listeners, installs faults or revokes tokens in the
# double: nothing to run against a real agent.
plan skip_all => "needs the double's listener, fault and ACL control"
    if $TestCKV::real_consul;

# One store and one index behind three listeners: the cluster's members.
consul_double(8500, '--max-wait', '2s',
              '--listen', '127.0.0.1:8501', '--listen', '127.0.0.1:8502');
# ACLs: two read tokens, the "old" and the "new" one of a rotation.
consul_double(8600, '--max-wait', '2s', '--token', 'mgmt-token',
              '--read-token', '11111111-0ld0-4000-8000-000000000001=t091c/',
              '--read-token', '22222222-new0-4000-8000-000000000002=t091c/');

our $TokenDir = tempdir(CLEANUP => 1);

# A TLS listener that requires client certificates from the test CA
# (Consul's verify_incoming), holding one node from the start.
our $Data = "$pwd/tests/data";
{
    open my $f, '>', "$TokenDir/seed.json" or die "$TokenDir/seed.json: $!";
    print $f '{"t091d/web/10.0.0.1:80": "{}"}';
    close $f;
}
consul_double(8700, '--max-wait', '2s', '--seed-file', "$TokenDir/seed.json",
              '--tls-cert', "$Data/mtls-server.pem", '--tls-key', "$Data/mtls-server-key.pem",
              '--tls-client-ca', "$Data/mtls-ca.pem");

chmod 0755, $TokenDir;
{
    open my $f, '>', "$TokenDir/token" or die "$TokenDir/token: $!";
    print $f "11111111-0ld0-4000-8000-000000000001\n";
    close $f;
    chmod 0600, "$TokenDir/token";
}

# 8501 lags 9 s behind its leader for ?stale reads (TEST 2; TEST 1 reads
# with default consistency, which a follower forwards to the leader).
consul_fault(8500, '{"kind":"follower","last_contact_ms":9000,"known_leader":false,'
                 . '"listener":"127.0.0.1:8501"}');

workers(2);
master_on();
plan tests => 5 + 5 + 5 + 4;
no_shuffle();
run_tests();

__DATA__

=== TEST 1: the active member stops: the next one serves the same names; fail-back when it returns
--- http_config
    lua_shared_dict ckv_t 1m;
    init_by_lua_block { require("resty.consul_kv") }
    init_worker_by_lua_block {
        local t = require("ckvtest")
        local kv = assert(require("resty.consul_kv").new({
            servers = { "http://127.0.0.1:8500", "http://127.0.0.1:8501",
                        "http://127.0.0.1:8502" },
            cluster = { failover_after = 2, failback_interval = 1 },
            prefix = "t091a", timeout = { connect = 200, read = 500, wait = 2 },
            backoff = { initial = 20, max = 200 },
        }))
        t.client = kv
        t.record_per_worker("ckv_t", "web", function()
            return t.show(kv:nodes("http://127.0.0.1:8500/v1/kv/t091a/web/"))
        end, 0.005, true)
        t.record_per_worker("ckv_t", "active", function()
            return kv:stats().servers[1].active_member
        end)
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local one = "10.0.0.1:80 w=1"
            local two = "10.0.0.1:80 w=1, 10.0.0.2:80 w=1"
            t.put(8500, "t091a/web/10.0.0.1:80", "{}")
            ngx.say("both workers: ", (t.wait_workers("ckv_t", "web", one, 2)))

            t.control(8501, "POST", "/_double/listener?addr=127.0.0.1:8500&state=down")
            t.put(8501, "t091a/web/10.0.0.2:80", "{}")
            ngx.say("change seen via 8501: ", (t.wait_workers("ckv_t", "web", two, 2)))
            ngx.say("active: ", select(2, t.wait_workers("ckv_t", "active",
                                                         "http://127.0.0.1:8501", 2)))

            t.control(8501, "POST", "/_double/listener?addr=127.0.0.1:8500&state=up")
            ngx.say("fail-back: ", select(2, t.wait_workers("ckv_t", "active",
                                                            "http://127.0.0.1:8500", 2)))
            t.delete(8500, "t091a/web/10.0.0.2:80")
            ngx.say("change seen via 8500: ", (t.wait_workers("ckv_t", "web", one, 2)))

            -- Every value each worker served, in order: never nil once
            -- the first nodes arrived, never under another name.
            local shm = ngx.shared.ckv_t
            for w = 0, 1 do
                local hist = shm:get("web:" .. w .. ":hist"):gsub("^nil | ", "")
                ngx.say("worker ", w, ": ", hist)
            end
            local st = t.client:stats()
            ngx.say("services: ", st.services, ", failovers: ", st.servers[1].failovers,
                    ", failbacks: ", st.servers[1].failbacks)
            -- The watching worker writes its log lines from a timer.
            ngx.say("logged: ", (t.wait_log("keeps failing; now watching"))
                                and (t.wait_log("is healthy again; now watching")))
        }
    }
--- response_body
both workers: true
change seen via 8501: true
active: w0=http://127.0.0.1:8501 w1=http://127.0.0.1:8501
fail-back: w0=http://127.0.0.1:8500 w1=http://127.0.0.1:8500
change seen via 8500: true
worker 0: 10.0.0.1:80 w=1 | 10.0.0.1:80 w=1, 10.0.0.2:80 w=1 | 10.0.0.1:80 w=1
worker 1: 10.0.0.1:80 w=1 | 10.0.0.1:80 w=1, 10.0.0.2:80 w=1 | 10.0.0.1:80 w=1
services: 1, failovers: 1, failbacks: 1
logged: true
--- error_log eval
[qr/\[warn\].*ckv: cluster http:\/\/127\.0\.0\.1:8500: http:\/\/127\.0\.0\.1:8500 keeps failing; now watching http:\/\/127\.0\.0\.1:8501 \(resuming at index \d+; service names unchanged\)/,
 qr/\[notice\].*ckv: cluster http:\/\/127\.0\.0\.1:8500: http:\/\/127\.0\.0\.1:8501 is healthy again; now watching http:\/\/127\.0\.0\.1:8500/]
--- no_error_log eval
qr/\[(?:alert|crit|emerg)\]/



=== TEST 2: a stale member beyond max_stale: its answer is not used, the next member's is
--- http_config
    lua_shared_dict ckv_t 1m;
    init_by_lua_block { require("resty.consul_kv") }
    init_worker_by_lua_block {
        local t = require("ckvtest")
        local kv = assert(require("resty.consul_kv").new({
            servers = { "http://127.0.0.1:8501", "http://127.0.0.1:8502" },
            cluster = { failback_interval = 0 },
            consistency = "stale", max_stale = 2,
            prefix = "t091b", timeout = { wait = 2 },
        }))
        t.client = kv
        t.record_per_worker("ckv_t", "web", function()
            return t.show(kv:nodes("http://127.0.0.1:8501/v1/kv/t091b/web/"))
        end)
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            t.put(8500, "t091b/web/10.0.0.1:80", "{}")
            ngx.say("both workers: ", (t.wait_workers("ckv_t", "web", "10.0.0.1:80 w=1", 2)))
            local ok, s = t.wait_for(function()
                local s = t.client:stats().servers[1]
                return s.active_member == "http://127.0.0.1:8502"
                       and s.errors_by_kind.too_stale >= 1 and s.known_leader_false >= 1, s
            end)
            ngx.say("moved off the stale member: ", ok)
            -- The watching worker writes its log lines from a timer.
            ngx.say("logged: ", t.wait_log("above max_stale (2000 ms), was not used")
                                and t.wait_log("X-Consul-KnownLeader: false"))
        }
    }
--- response_body
both workers: true
moved off the stale member: true
logged: true
--- error_log eval
[qr/\[warn\].*X-Consul-LastContact 9000 ms, above max_stale \(2000 ms\), was not used/,
 qr/\[warn\].*X-Consul-KnownLeader: false/]
--- no_error_log eval
qr/\[(?:error|alert|crit|emerg)\]/



=== TEST 3: token_file rewritten under traffic, then the old token revoked: nothing lost
--- http_config eval
"
    lua_shared_dict ckv_t 1m;
    init_by_lua_block { require('resty.consul_kv') }
    init_worker_by_lua_block {
        local t = require('ckvtest')
        local kv = assert(require('resty.consul_kv').new({
            servers = { 'http://127.0.0.1:8600' },
            token_file = '$::TokenDir/token',
            prefix = 't091c', timeout = { wait = 2 },
        }))
        t.client = kv
        t.record_per_worker('ckv_t', 'web', function()
            return t.show(kv:nodes('http://127.0.0.1:8600/v1/kv/t091c/web/'))
        end, 0.005, true)
    }
"
--- config eval
"
    location /t {
        content_by_lua_block {
            local t = require('ckvtest')
            local mgmt = { ['X-Consul-Token'] = 'mgmt-token' }
            t.put(8600, 't091c/web/10.0.0.1:80', '{}', mgmt)
            ngx.say('both workers: ', (t.wait_workers('ckv_t', 'web', '10.0.0.1:80 w=1', 2)))
            -- Rotate as Vault agent does: a new file renamed into place.
            t.write_file('$::TokenDir/token.tmp', '22222222-new0-4000-8000-000000000002\\n')
            os.execute('chmod 600 $::TokenDir/token.tmp')
            assert(os.rename('$::TokenDir/token.tmp', '$::TokenDir/token'))
            t.control(8600, 'POST', '/_double/acl/revoke?token=11111111-0ld0-4000-8000-000000000001')
            t.put(8600, 't091c/web/10.0.0.2:80', '{}', mgmt)
            ngx.say('change with the new token: ',
                    (t.wait_workers('ckv_t', 'web', '10.0.0.1:80 w=1, 10.0.0.2:80 w=1', 2)))
            local shm = ngx.shared.ckv_t
            for w = 0, 1 do
                local hist = shm:get('web:' .. w .. ':hist'):gsub('^nil | ', '')
                ngx.say('worker ', w, ': ', hist)
            end
            local ok = t.wait_for(function()
                return t.client:stats().servers[1].token_rotations == 1
            end)
            ngx.say('rotation counted: ', ok)
            -- The watching worker writes its log lines from a timer.
            ngx.say('logged: ', (t.wait_log('read a new token; it is used from this request on')))
        }
    }
"
--- response_body
both workers: true
change with the new token: true
worker 0: 10.0.0.1:80 w=1 | 10.0.0.1:80 w=1, 10.0.0.2:80 w=1
worker 1: 10.0.0.1:80 w=1 | 10.0.0.1:80 w=1, 10.0.0.2:80 w=1
rotation counted: true
logged: true
--- error_log eval
qr/\[notice\].*ckv: token_file .*token: read a new token; it is used from this request on/
--- no_error_log eval
[qr/\[(?:error|alert|crit|emerg)\]/, qr/11111111-0ld0|22222222-new0/]



=== TEST 4: mutual TLS: accepted with a client certificate, refused without one
--- http_config eval
"
    init_worker_by_lua_block {
        local t = require('ckvtest')
        local function client(with_cert)
            return assert(require('resty.consul_kv').new({
                servers = { 'https://127.0.0.1:8700' },
                prefix = 't091d', timeout = { connect = 200, read = 500, wait = 2 },
                backoff = { initial = 20, max = 200 },
                tls = { ca_file = '$::Data/mtls-ca.pem', server_name = 'consul.test',
                        cert_file = with_cert and '$::Data/mtls-client.pem' or nil,
                        key_file = with_cert and '$::Data/mtls-client-key.pem' or nil },
                share = { enabled = false },
            }))
        end
        t.with_cert, t.without_cert = client(true), client(false)
    }
"
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local name = "https://127.0.0.1:8700/v1/kv/t091d/web/"
            ngx.say("with a client certificate: ", t.show(select(2, t.wait_for(function()
                local n = t.with_cert:nodes(name)
                return n ~= nil, n
            end))))
            local ok, err = t.wait_for(function()
                local s = t.without_cert:stats().servers[1]
                return s.errors_total >= 2, s.last_error
            end)
            ngx.say("without: refused ", ok, ", nodes ", t.show(t.without_cert:nodes(name)))
            ngx.say("the error names the certificate: ",
                    err ~= nil and err:lower():find("certificate", 1, true) ~= nil)
            -- The worker writes its log lines from a timer.
            ngx.say("logged: ", (t.wait_log("https://127.0.0.1:8700/v1/kv/t091d/: ")))
        }
    }
--- response_body
with a client certificate: 10.0.0.1:80 w=1
without: refused true, nodes nil
the error names the certificate: true
logged: true
--- error_log eval
qr/\[error\].*ckv: https:\/\/127\.0\.0\.1:8700\/v1\/kv\/t091d\/: .*certificate.*keeping the last good nodes/i
--- no_error_log eval
[qr/\[(?:alert|crit|emerg)\]/]
