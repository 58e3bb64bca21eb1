# Several requests per block: request arrays, pipelined_requests,
# raw_request, per-request more_headers.  Per-request sections are arrays
# and the error log is checked after every request.
use lib 't/compat/selftest/lib';
use CompatSelfTest;

# T1 2 requests x (status + body + no_error_log) = 6
# T2 2 pipelined x (status + body + no_error_log) = 6
# T3 status + body = 2
# T4 2 requests x (status + body) = 4
# T5 3 pipelined x (status + body) = 6
# T6 2 requests x (status + error_log pattern) = 4
plan tests => 6 + 6 + 2 + 4 + 6 + 4;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: request eval array, error_code and body arrays
--- config
    location = /a {
        content_by_lua_block { ngx.say("a") }
    }
    location = /b {
        content_by_lua_block { ngx.exit(404) }
    }
--- request eval
["GET /a", "GET /b"]
--- error_code eval
[200, 404]
--- response_body_like eval
["^a\$", "404 Not Found"]
--- no_error_log
[error]



=== TEST 2: pipelined_requests on one connection
--- config
    location ~ ^/[ac]$ {
        content_by_lua_block {
            ngx.say(ngx.var.uri, " ", ngx.var.connection_requests)
        }
    }
--- pipelined_requests eval
["GET /a", "GET /c"]
--- error_code eval
[200, 200]
--- response_body eval
["/a 1\n", "/c 2\n"]
--- no_error_log
[error]



=== TEST 3: raw_request is sent as is
--- config
    location = /a {
        content_by_lua_block { ngx.say(ngx.req.http_version()) }
    }
--- raw_request eval
"GET /a HTTP/1.0\r\nHost: localhost\r\n\r\n"
--- response_body
1



=== TEST 4: one more_headers entry per request
--- config
    location = /h {
        content_by_lua_block { ngx.say(ngx.var.http_x_n) }
    }
--- request eval
["GET /h", "GET /h"]
--- more_headers eval
["X-N: one", "X-N: two"]
--- response_body eval
["one\n", "two\n"]



=== TEST 5: three pipelined POSTs with bodies
--- config
    location = /p {
        content_by_lua_block {
            ngx.req.read_body()
            ngx.say("[", ngx.req.get_body_data(), "]")
        }
    }
--- pipelined_requests eval
["POST /p\nx", "POST /p\nyy", "POST /p\nzzz"]
--- response_body eval
["[x]\n", "[yy]\n", "[zzz]\n"]



=== TEST 6: error_log is checked after each request of the block
--- config
    location = /l {
        content_by_lua_block {
            ngx.log(ngx.WARN, "ckv logged for ", ngx.var.arg_n)
            ngx.say("ok")
        }
    }
--- request eval
["GET /l?n=1", "GET /l?n=2"]
--- error_code eval
[200, 200]
--- error_log
ckv logged for
