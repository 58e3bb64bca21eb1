# The drop-in's dump file with 2 workers: written (0600, APISIX's format)
# while Consul answers, loaded at start while Consul is down; expired and
# corrupt dumps are ignored.
use lib 't/lib';
use Test::Nginx::Socket::Lua;
use TestCKV;

consul_double(8500);

# Outside the server root, which is recreated for every block: block 2
# loads what block 1 wrote.
my $tmp = $ENV{TMPDIR} || '/tmp';
our $Dump    = "$tmp/ckv-t012-$>.dump";
our $Expired = "$tmp/ckv-t012-$>-expired.dump";
our $Corrupt = "$tmp/ckv-t012-$>-corrupt.dump";

workers(2);
master_on();
repeat_each(1);
no_shuffle();

# 2 per block (status, body) + one per error_log / no_error_log pattern.
plan tests => repeat_each() * (blocks() * 2 + 11);
run_tests();

__DATA__

=== TEST 1: the dump is written (atomically, mode 0600) and follows changes
--- http_config eval
"
    init_by_lua_block {
        local path = '$::Dump'
        os.remove(path)
        require('ckvtest').dropin_conf({
            servers = { 'http://127.0.0.1:8500' },
            prefix = 't012',
            share = { group = 't012-1' },
            token = 'tok-t012-secret',
            dump = { path = path, load_on_init = false },
        })
    }
    init_worker_by_lua_block {
        require('apisix.discovery.consul_kv').init_worker()
    }
"
--- config eval
"
    location /t {
        content_by_lua_block {
            local t = require('ckvtest')
            local cjson = require('cjson.safe')
            local d = require('apisix.discovery.consul_kv')
            local path = '$::Dump'
            local web = 'http://127.0.0.1:8500/v1/kv/t012/web/'
            local api = 'http://127.0.0.1:8500/v1/kv/t012/api/'
            t.put(8500, 't012/web/10.0.0.1:80', '{}')
            t.put(8500, 't012/web/10.0.0.2:80', '{\"weight\":2}')
            t.put(8500, 't012/web/10.0.0.3:80', '{}')
            t.put(8500, 't012/api/10.0.0.9:81', '{}')
            local function dumped(n_web)
                return t.wait_for(function()
                    local data = t.read_file(path)
                    local doc = data and cjson.decode(data)
                    return doc and doc.services[web] and doc.services[api]
                           and #doc.services[web] == n_web, doc
                end)
            end
            local ok, doc = dumped(3)
            ngx.say('written: ', ok)
            ngx.say('web: ', t.show_sorted(doc.services[web]))
            ngx.say('api: ', t.show_sorted(doc.services[api]))
            ngx.say('last_update is now: ', math.abs(doc.last_update - ngx.time()) < 10)
            ngx.say('expire: ', doc.expire)
            ngx.say('mode: ', t.file_mode(path))
            ngx.say('token in file: ', t.read_file(path):find('tok-t012', 1, true) ~= nil)
            t.delete(8500, 't012/web/10.0.0.3:80')
            ok, doc = dumped(2)
            ngx.say('rewritten: ', ok, ' ', t.show_sorted(doc.services[web]))
            ngx.say('mode: ', t.file_mode(path))
            local tmp = path:gsub('[^/]+\$', function(f)
                return '.' .. f .. '.tmp.' .. d.stats().leader_pid
            end)
            ngx.say('temp file left: ', io.open(tmp) ~= nil)
        }
    }
"
--- response_body
written: true
web: 10.0.0.1:80 w=1, 10.0.0.2:80 w=2, 10.0.0.3:80 w=1
api: 10.0.0.9:81 w=1
last_update is now: true
expire: 0
mode: 600
token in file: false
rewritten: true 10.0.0.1:80 w=1, 10.0.0.2:80 w=2
mode: 600
temp file left: false
--- no_error_log
[error]
tok-t012-secret



=== TEST 2: Consul down at start: every worker serves the dump from init_worker on
--- http_config eval
"
    lua_shared_dict ckv_t 1m;
    init_by_lua_block {
        require('ckvtest').dropin_conf({
            servers = { 'http://127.0.0.1:8599' },
            prefix = 't012',
            share = { group = 't012-2' },
            timeout = { connect = 200 },
            backoff = { initial = 50, max = 200 },
            dump = { path = '$::Dump', load_on_init = true },
        })
    }
    init_worker_by_lua_block {
        local t = require('ckvtest')
        local d = require('apisix.discovery.consul_kv')
        d.init_worker()
        -- the first record is taken here, in init_worker, before any timer
        t.record_per_worker('ckv_t', 'web', function()
            -- the names are the dump's: block 1 watched 127.0.0.1:8500
            return t.show_sorted(d.all_nodes()['http://127.0.0.1:8500/v1/kv/t012/web/'])
        end, 0.01, true)
    }
"
--- config eval
"
    location /t {
        content_by_lua_block {
            local t = require('ckvtest')
            local d = require('apisix.discovery.consul_kv')
            local shm = ngx.shared.ckv_t
            -- the other worker may still be in init_worker
            t.wait_for(function()
                return shm:get('web:0:hist') and shm:get('web:1:hist')
            end)
            ngx.say('w0: ', shm:get('web:0:hist'))
            ngx.say('w1: ', shm:get('web:1:hist'))
            ngx.say('api: ', t.show(d.nodes('http://127.0.0.1:8500/v1/kv/t012/api/')))
            local st = d.stats()
            ngx.say('source: ', st.source, ', ready: ', d.check_discovery_ready())
            -- Consul stays unreachable: the dumped nodes stay
            ngx.say('retrying: ', (t.wait_for(function()
                return d.stats().servers[1].errors_total >= 3
            end)))
            ngx.say('w0: ', shm:get('web:0:hist'))
            ngx.say('w1: ', shm:get('web:1:hist'))
        }
    }
"
--- response_body
w0: 10.0.0.1:80 w=1, 10.0.0.2:80 w=2
w1: 10.0.0.1:80 w=1, 10.0.0.2:80 w=2
api: 10.0.0.9:81 w=1
source: dump, ready: true
retrying: true
w0: 10.0.0.1:80 w=1, 10.0.0.2:80 w=2
w1: 10.0.0.1:80 w=1, 10.0.0.2:80 w=2
--- error_log eval
[
qr/\[notice\].*ckv: loaded 2 services \(3 nodes\) from dump \Q$::Dump\E/,
qr/\[error\].*ckv: http:\/\/127\.0\.0\.1:8599\/v1\/kv\/t012\/: .*keeping the last good nodes/,
]
--- no_error_log
[crit]



=== TEST 3: an expired dump is ignored
--- http_config eval
"
    init_by_lua_block {
        local cjson = require('cjson')
        local path = '$::Expired'
        require('ckvtest').write_file(path, cjson.encode({
            services = {
                ['http://127.0.0.1:8599/v1/kv/t012x/web/'] = {
                    { host = '10.0.0.1', port = 80, weight = 1 },
                },
            },
            last_update = os.time() - 100,
            expire = 1,
        }))
        require('ckvtest').dropin_conf({
            servers = { 'http://127.0.0.1:8599' },
            prefix = 't012x',
            share = { group = 't012-3' },
            timeout = { connect = 200 },
            backoff = { initial = 50, max = 200 },
            dump = { path = path, load_on_init = true, expire = 1 },
        })
    }
    init_worker_by_lua_block {
        require('apisix.discovery.consul_kv').init_worker()
    }
"
--- config
    location /t {
        content_by_lua_block {
            local d = require("apisix.discovery.consul_kv")
            local n = 0
            for _ in pairs(d.all_nodes()) do n = n + 1 end
            ngx.say("services: ", n)
            ngx.say("source: ", d.stats().source, ", ready: ", (d.check_discovery_ready()))
        }
    }
--- response_body
services: 0
source: none, ready: false
--- error_log eval
qr/ckv: dump \Q$::Expired\E expired \(written at \d+, expire 1s\), ignored/
--- no_error_log
loaded
[crit]



=== TEST 4: a corrupt dump is logged and ignored
--- http_config eval
"
    init_by_lua_block {
        local path = '$::Corrupt'
        require('ckvtest').write_file(path, '{\"services\": {not json')
        require('ckvtest').dropin_conf({
            servers = { 'http://127.0.0.1:8599' },
            prefix = 't012y',
            share = { group = 't012-4' },
            timeout = { connect = 200 },
            backoff = { initial = 50, max = 200 },
            dump = { path = path },
        })
    }
    init_worker_by_lua_block {
        require('apisix.discovery.consul_kv').init_worker()
    }
"
--- config eval
"
    location /t {
        content_by_lua_block {
            local d = require('apisix.discovery.consul_kv')
            local n = 0
            for _ in pairs(d.all_nodes()) do n = n + 1 end
            ngx.say('services: ', n)
            ngx.say('source: ', d.stats().source, ', ready: ', (d.check_discovery_ready()))
            -- the dump files of this suite are not needed any more
            for _, p in ipairs({ '$::Dump', '$::Expired', '$::Corrupt' }) do
                os.remove(p)
            end
        }
    }
"
--- response_body
services: 0
source: none, ready: false
--- error_log eval
qr/\[error\].*ckv: dump \Q$::Corrupt\E is unusable: invalid JSON.*; ignored/
--- no_error_log
loaded
[crit]
