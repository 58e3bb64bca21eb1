# Response checks of the runner: body, status, headers, request building,
# eval sections, $TEST_NGINX_* substitution, user_files, timeouts.
use lib 't/compat/selftest/lib';
use CompatSelfTest;

BEGIN {
    $ENV{TEST_NGINX_CKV_SELFTEST} = 'substituted';
}

# 17 blocks; most make 2 assertions (status + body), see the per-block notes
plan tests => 2 * blocks() + 1 - 1 - 1 - 1;   # T6 +1, T4/T14/T17 -1 each

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



=== TEST 5: request body and more_headers
--- config
    location = /t {
        content_by_lua_block {
            ngx.req.read_body()
            ngx.say("got: ", ngx.req.get_body_data(),
                    ", X-Foo: ", ngx.var.http_x_foo,
                    ", cl: ", ngx.var.http_content_length)
        }
    }
--- request
POST /t
hello world
--- more_headers
X-Foo: bar
--- response_body
got: hello world, X-Foo: bar, cl: 11



=== TEST 6: response_headers, incl. an absent one (3 assertions)
--- config
    location = /t {
        content_by_lua_block {
            ngx.header["X-A"] = "1"
            ngx.say("ok")
        }
    }
--- request
GET /t
--- response_headers
X-A: 1
!X-None



=== TEST 7: response_headers_like
--- config
    location = /t {
        content_by_lua_block {
            ngx.header["X-A"] = "12345"
            ngx.say("ok")
        }
    }
--- request
GET /t
--- response_headers_like
X-A: \d+



=== TEST 8: raw_response_headers_like
--- config
    location = /t {
        content_by_lua_block {
            ngx.header["X-A"] = "1"
            ngx.say("ok")
        }
    }
--- request
GET /t
--- raw_response_headers_like: X-A: 1\r\n



=== TEST 9: $TEST_NGINX_* in config, http_config, main_config, response_body
--- main_config
env CKV_FROM_MAIN=$TEST_NGINX_CKV_SELFTEST;
--- http_config
lua_shared_dict dict_$TEST_NGINX_CKV_SELFTEST 1m;
--- config
    location = /t {
        set $v "$TEST_NGINX_CKV_SELFTEST";
        content_by_lua_block {
            ngx.say(ngx.var.v, " ", os.getenv("CKV_FROM_MAIN"), " ",
                    ngx.shared.dict_substituted and "dict" or "nodict",
                    " ", ngx.var.server_port)
        }
    }
--- request
GET /t
--- response_body
substituted substituted dict $TEST_NGINX_SERVER_PORT



=== TEST 10: request eval
--- config
    location = /t {
        content_by_lua_block { ngx.say("a=", ngx.var.arg_a) }
    }
--- request eval
"GET /t?a=" . (1 + 1)
--- response_body
a=2



=== TEST 11: response_body eval string
--- config
    location = /t {
        content_by_lua_block { ngx.say(string.rep("x", 3)) }
    }
--- request
GET /t
--- response_body eval
"x" x 3 . "\n"



=== TEST 12: response_body eval qr//
--- config
    location = /t {
        content_by_lua_block { ngx.say("time: ", ngx.time()) }
    }
--- request
GET /t
--- response_body eval
qr/^time: \d+\n\z/



=== TEST 13: the default root location serves html/index.html
--- config
--- request
GET /
--- response_body_like: It works!



=== TEST 14: HEAD request (1 assertion)
--- config
    location = /t {
        content_by_lua_block { ngx.say("body") }
    }
--- request
HEAD /t



=== TEST 15: chunked response
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



=== TEST 16: user_files
--- user_files
>>> sub/foo.txt
hello file
--- config
--- request
GET /sub/foo.txt
--- response_body
hello file



=== TEST 17: timeout + abort (1 assertion: empty status)
--- config
    location = /t {
        content_by_lua_block {
            ngx.sleep(1)
            ngx.say("too late")
        }
    }
--- request
GET /t
--- timeout: 200ms
--- abort
--- error_code:
