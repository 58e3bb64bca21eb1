# add_block_preprocessor defaults, env_to_nginx, --- SKIP blocks, blocks
# run in shuffled order (no no_shuffle() here), repeat_each counting.
use lib 't/compat/selftest/lib';
use CompatSelfTest;

BEGIN {
    $ENV{CKV_SELFTEST_ENV} = 'from-env';
}

env_to_nginx('CKV_SELFTEST_ENV');
repeat_each(3);

# fills in a config and a request for blocks that have none
add_block_preprocessor(sub {
    my $block = shift;
    if (!defined $block->config) {
        $block->set_value(config => <<'_EOC_');
    location = /t {
        content_by_lua_block {
            ngx.say("default config, arg=", ngx.var.arg_x or "none")
        }
    }
    location = /env {
        content_by_lua_block { ngx.say(os.getenv("CKV_SELFTEST_ENV")) }
    }
_EOC_
    }
    if (!defined $block->request) {
        $block->set_value(request => "GET /t\n");
    }
    if (!defined $block->no_error_log) {
        $block->set_value(no_error_log => "[error]\n");
    }
});

# 4 runnable blocks (the SKIP one is not counted), each: status + body +
# the no_error_log added above
plan tests => repeat_each() * (blocks() * 3);

run_tests();

__DATA__

=== TEST 1: everything from the preprocessor
--- response_body
default config, arg=none



=== TEST 2: own request, default config
--- request
GET /t?x=1
--- response_body
default config, arg=1



=== TEST 3: skipped block (would fail)
--- SKIP
--- response_body
this is not what the server says



=== TEST 4: env_to_nginx
--- request
GET /env
--- response_body
from-env



=== TEST 5: own config
--- config
    location = /t {
        content_by_lua_block { ngx.say("own") }
    }
--- response_body
own
