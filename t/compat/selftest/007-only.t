# --- ONLY: just that block runs and blocks() counts 1.
use lib 't/compat/selftest/lib';
use CompatSelfTest;

plan tests => blocks() * 2;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: not run (would fail)
--- config
    location = /t {
        content_by_lua_block { ngx.say("one") }
    }
--- request
GET /t
--- response_body
not this



=== TEST 2: the only block
--- ONLY
--- config
    location = /t {
        content_by_lua_block { ngx.say("two") }
    }
--- request
GET /t
--- response_body
two
