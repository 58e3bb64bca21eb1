# shutdown_error_log / no_shutdown_error_log: checked against what nginx
# logs while it stops (before the next block starts, or at the end).
use lib 't/compat/selftest/lib';
use CompatSelfTest;

# T1 status + body + 1 + 1, T2 status + body + 1, T3 status + body + 1
master_on();   # with master off, pending timers do not run at exit

plan tests => 4 + 3 + 3;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a pending timer runs (premature) when nginx shuts down
--- http_config
    init_worker_by_lua_block {
        ngx.timer.at(100, function(premature)
            ngx.log(ngx.WARN, "ckv premature timer: ", premature)
        end)
    }
--- config
    location = /t {
        content_by_lua_block { ngx.say("ok") }
    }
--- request
GET /t
--- response_body
ok
--- shutdown_error_log
ckv premature timer: true
--- no_shutdown_error_log
[error]



=== TEST 2: shutdown_error_log eval qr//
--- config
    location = /t {
        content_by_lua_block { ngx.say("ok") }
    }
--- request
GET /t
--- response_body
ok
--- shutdown_error_log eval
qr/\[notice\] .*exit/



=== TEST 3: the last block is checked at the end of the file
--- config
    location = /t {
        content_by_lua_block { ngx.say("ok") }
    }
--- request
GET /t
--- response_body
ok
--- no_shutdown_error_log
ckv premature timer
