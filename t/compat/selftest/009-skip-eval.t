# --- skip_eval: "N: expr": a true expression reports N skipped assertions
# (the block would fail if it ran); a false one runs the block.
use lib 't/compat/selftest/lib';
use CompatSelfTest;

plan tests => 2 + 2;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: skipped (would fail)
--- skip_eval: 2: 1 + 1 == 2
--- config
    location = /t {
        content_by_lua_block { ngx.say("one") }
    }
--- request
GET /t
--- response_body
not this



=== TEST 2: not skipped
--- skip_eval: 2: 0
--- config
    location = /t {
        content_by_lua_block { ngx.say("two") }
    }
--- request
GET /t
--- response_body
two
