# Response checks of the runner: body, status, request lines, eval
# sections, $TEST_NGINX_* substitution, chunked responses.
use lib 't/compat/selftest/lib';
use CompatSelfTest;

BEGIN {
    $ENV{TEST_NGINX_CKV_SELFTEST} = 'substituted';
}

# 2 assertions per block (status + body), but TEST 4 has only a status
plan tests => 2 * blocks() - 1;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: sanity
--- config
    location = /t {
        content_by_lua_block { ngx.say("hello") }
    }
--- request
GET /t
--- response_body
hello
--- error_code: 200



=== TEST 2: chomp filter
--- config
    location = /t {
        content_by_lua_block { ngx.print("abc") }
    }
--- request
GET /t
--- response_body chomp
abc



=== TEST 3: response_body_like
--- config
    location = /t {
        content_by_lua_block { ngx.say("answer=", 6 * 7) }
    }
--- request
GET /t
--- response_body_like: ^answer=\d+$



=== TEST 4: error_code only (1 assertion)
--- config
    location = /t {
        content_by_lua_block { ngx.exit(404) }
    }
--- request
GET /t
--- error_code: 404



=== TEST 5: $TEST_NGINX_* in config, http_config, main_config
--- main_config
env CKV_FROM_MAIN=$TEST_NGINX_CKV_SELFTEST;
--- http_config
lua_shared_dict dict_$TEST_NGINX_CKV_SELFTEST 1m;
--- config
    location = /t {
        set $v "$TEST_NGINX_CKV_SELFTEST";
        content_by_lua_block {
            ngx.say(ngx.var.v, " ", os.getenv("CKV_FROM_MAIN"), " ",
                    ngx.shared.dict_substituted and "dict" or "nodict")
        }
    }
--- request
GET /t
--- response_body
substituted substituted dict



=== TEST 6: request eval
--- config
    location = /t {
        content_by_lua_block { ngx.say("a=", ngx.var.arg_a) }
    }
--- request eval
"GET /t?a=" . (1 + 1)
--- response_body
a=2



=== TEST 7: response_body eval string
--- config
    location = /t {
        content_by_lua_block { ngx.say(string.rep("x", 3)) }
    }
--- request
GET /t
--- response_body eval
"x" x 3 . "\n"



=== TEST 8: response_body eval qr//
--- config
    location = /t {
        content_by_lua_block { ngx.say("time: ", ngx.time()) }
    }
--- request
GET /t
--- response_body eval
qr/^time: \d+\n\z/



=== TEST 9: chunked response
--- config
    location = /t {
        content_by_lua_block {
            ngx.say("a")
            ngx.flush(true)
            ngx.say("b")
        }
    }
--- request
GET /t
--- response_body
a
b
