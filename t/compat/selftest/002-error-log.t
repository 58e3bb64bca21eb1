# error_log / no_error_log / grep_error_log semantics: patterns as lines,
# qr// and arrays; checks only see what was logged during the block's own
# request (per repeat); wait.
use lib 't/compat/selftest/lib';
use CompatSelfTest;

repeat_each(2);

# per repeat: status + body for every block, plus the log assertions:
# T1 1, T2 3, T3 1, T4 2, T5 2, T6 1, T7 1, T8 1, T9 1, T10 1, T11 1
plan tests => repeat_each() * (2 * blocks() + 15);

no_shuffle();
run_tests();

__DATA__

=== TEST 1: error_log, one plain pattern
--- config
    location = /t {
        content_by_lua_block {
            ngx.log(ngx.WARN, "ckv selftest: warned")
            ngx.say("ok")
        }
    }
--- request
GET /t
--- response_body
ok
--- error_log
ckv selftest: warned



=== TEST 2: error_log with two lines + no_error_log
--- config
    location = /t {
        content_by_lua_block {
            ngx.log(ngx.WARN, "first [thing]")
            ngx.log(ngx.NOTICE, "second thing")
            ngx.say("ok")
        }
    }
--- request
GET /t
--- response_body
ok
--- error_log
first [thing]
second thing
--- no_error_log
[error]



=== TEST 3: error_log eval qr//
--- config
    location = /t {
        content_by_lua_block {
            ngx.log(ngx.ERR, "value is ", 12345)
            ngx.say("ok")
        }
    }
--- request
GET /t
--- response_body
ok
--- error_log eval
qr/\[error\] .*value is \d+/



=== TEST 4: error_log eval array of string and qr//
--- config
    location = /t {
        content_by_lua_block {
            ngx.log(ngx.INFO, "alpha")
            ngx.log(ngx.INFO, "beta 42")
            ngx.say("ok")
        }
    }
--- request
GET /t
--- response_body
ok
--- error_log eval
["alpha", qr/beta \d+/]



=== TEST 5: no_error_log with two patterns
--- config
    location = /t {
        content_by_lua_block { ngx.say("ok") }
    }
--- request
GET /t
--- response_body
ok
--- no_error_log
[error]
[alert]



=== TEST 6: grep_error_log with a plain string
--- config
    location = /t {
        content_by_lua_block {
            for i = 1, 3 do ngx.log(ngx.WARN, "ckv-tag") end
            ngx.say("ok")
        }
    }
--- request
GET /t
--- response_body
ok
--- grep_error_log: ckv-tag
--- grep_error_log_out
ckv-tag
ckv-tag
ckv-tag



=== TEST 7: grep_error_log eval qr//
--- config
    location = /t {
        content_by_lua_block {
            ngx.log(ngx.WARN, "ckv-1 and")
            ngx.log(ngx.WARN, "then ckv-2")
            ngx.say("ok")
        }
    }
--- request
GET /t
--- response_body
ok
--- grep_error_log eval
qr/ckv-\d+/
--- grep_error_log_out
ckv-1
ckv-2



=== TEST 8: this block logs a marker
--- config
    location = /t {
        content_by_lua_block {
            ngx.log(ngx.WARN, "block8-marker")
            ngx.say("ok")
        }
    }
--- request
GET /t
--- response_body
ok
--- error_log
block8-marker



=== TEST 9: ... which the next block does not see
--- config
    location = /t {
        content_by_lua_block { ngx.say("ok") }
    }
--- request
GET /t
--- response_body
ok
--- no_error_log
block8-marker



=== TEST 10: wait gives a timer time to log
--- config
    location = /t {
        content_by_lua_block {
            ngx.timer.at(0.1, function()
                ngx.log(ngx.WARN, "ckv timer fired")
            end)
            ngx.say("ok")
        }
    }
--- request
GET /t
--- response_body
ok
--- wait: 0.3
--- error_log
ckv timer fired



=== TEST 11: each repeat only sees its own lines
--- config
    location = /t {
        content_by_lua_block {
            ngx.log(ngx.WARN, "ckv-once")
            ngx.say("ok")
        }
    }
--- request
GET /t
--- response_body
ok
--- grep_error_log: ckv-once
--- grep_error_log_out
ckv-once
