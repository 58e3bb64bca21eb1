# Several requests per block (a request array): per-request sections are
# arrays, and the error log is checked after every request.
use lib 't/compat/selftest/lib';
use CompatSelfTest;

# T1 2 requests x (status + body + no_error_log) = 6
# T2 2 requests x (status + error_log pattern) = 4
plan tests => 6 + 4;

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



=== TEST 2: error_log is checked after each request of the block
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
