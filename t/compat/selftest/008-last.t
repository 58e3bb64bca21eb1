# --- LAST: blocks after it are ignored.
use lib 't/compat/selftest/lib';
use CompatSelfTest;

plan tests => blocks() * 2;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: runs
--- config
    location = /t {
        content_by_lua_block { ngx.say("one") }
    }
--- request
GET /t
--- response_body
one



=== TEST 2: last one that runs
--- LAST
--- config
    location = /t {
        content_by_lua_block { ngx.say("two") }
    }
--- request
GET /t
--- response_body
two



=== TEST 3: ignored (would fail)
--- config
    location = /t {
        content_by_lua_block { ngx.say("three") }
    }
--- request
GET /t
--- response_body
not this
