# https:// servers: nginx terminates TLS in front of the Consul double, with
# a throwaway CA and server certificate made by openssl for this run.
use lib 't/lib';
use Test::Nginx::Socket::Lua;
use TestCKV;
use File::Temp qw(tempdir);

consul_double(8500, '--max-wait', '2s');

our $certs = tempdir(CLEANUP => 1);
chmod 0755, $certs;
sub run_quiet { system(@_) == 0 or die "failed: @_\n" }
run_quiet("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=ckv-test-ca"
        . " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
        . " -keyout $certs/ca.key -out $certs/ca.pem 2>/dev/null");
run_quiet("openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1"
        . " -keyout $certs/server.key -out $certs/server.csr 2>/dev/null");
open my $ext, '>', "$certs/ext.cnf" or die;
print $ext "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n";
close $ext;
run_quiet("openssl x509 -req -in $certs/server.csr -CA $certs/ca.pem -CAkey $certs/ca.key"
        . " -CAcreateserial -days 2 -extfile $certs/ext.cnf -out $certs/server.pem 2>/dev/null");
chmod 0644, glob("$certs/*");
$ENV{TEST_NGINX_CERTS} = $certs;

workers(2);
master_on();
plan tests => 3 * blocks();
no_shuffle();

add_block_preprocessor(sub {
    my $block = shift;
    # The TLS front for the double: the watcher's long polls pass through.
    $block->set_value('http_config', $block->http_config . <<'_EOC_');
    server {
        listen 127.0.0.1:8543 ssl;
        ssl_certificate $TEST_NGINX_CERTS/server.pem;
        ssl_certificate_key $TEST_NGINX_CERTS/server.key;
        location / {
            proxy_pass http://127.0.0.1:8500;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 60s;
        }
    }
_EOC_
});

run_tests();

__DATA__

=== TEST 1: https with tls.ca_file: nodes arrive over TLS
--- http_config
    init_worker_by_lua_block {
        require("ckvtest").client = assert(require("resty.consul_kv").new({
            servers = { "https://127.0.0.1:8543" }, prefix = "t060a",
            timeout = { wait = 2 },
            tls = { ca_file = "$TEST_NGINX_CERTS/ca.pem" },
        }))
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            t.put(8500, "t060a/web/10.0.0.1:80", '{"weight":4}')
            local ok, n = t.wait_for(function()
                local n = t.client:nodes("https://127.0.0.1:8543/v1/kv/t060a/web/")
                return n ~= nil, n
            end)
            ngx.say(ok, " ", t.show(n))
        }
    }
--- response_body
true 10.0.0.1:80 w=4



=== TEST 2: https without the CA: the certificate is refused, logged once, no nodes
--- http_config
    init_worker_by_lua_block {
        require("ckvtest").client = assert(require("resty.consul_kv").new({
            servers = { "https://127.0.0.1:8543" }, prefix = "t060b",
            timeout = { wait = 2 }, backoff = { initial = 50, max = 100 },
        }))
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            t.put(8500, "t060b/web/10.0.0.1:80", "{}")
            local ok = t.wait_for(function()
                local s = t.client:stats().servers[1]
                return s.errors_total >= 3
            end)
            ngx.say("retrying: ", ok)
            ngx.say("nodes: ", t.client:nodes("https://127.0.0.1:8543/v1/kv/t060b/web/"))
        }
    }
--- response_body
retrying: true
nodes: nil
--- error_log eval
qr/\[error\].*ckv: https:\/\/127\.0\.0\.1:8543\/v1\/kv\/t060b\/: .*certificate/



=== TEST 3: https with tls.verify = false
--- http_config
    init_worker_by_lua_block {
        require("ckvtest").client = assert(require("resty.consul_kv").new({
            servers = { "https://127.0.0.1:8543" }, prefix = "t060c",
            timeout = { wait = 2 }, tls = { verify = false },
        }))
    }
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            t.put(8500, "t060c/web/10.0.0.1:80", "{}")
            local ok = t.wait_for(function()
                return t.client:nodes("https://127.0.0.1:8543/v1/kv/t060c/web/") ~= nil
            end)
            ngx.say(ok)
        }
    }
--- response_body
true
