# workers(2) + master_on(): two real worker processes.
use lib 't/compat/selftest/lib';
use CompatSelfTest;

workers(2);
master_on();

plan tests => repeat_each() * (blocks() * 2);

no_shuffle();
run_tests();

__DATA__

=== TEST 1: ngx.worker.count()
--- config
    location = /t {
        content_by_lua_block { ngx.say(ngx.worker.count()) }
    }
--- request
GET /t
--- response_body
2



=== TEST 2: both workers ran init_worker_by_lua
--- http_config
    lua_shared_dict ckv_selftest 1m;
    init_worker_by_lua_block {
        ngx.shared.ckv_selftest:incr("started", 1, 0)
    }
--- config
    location = /t {
        content_by_lua_block {
            local dict = ngx.shared.ckv_selftest
            for _ = 1, 100 do
                if dict:get("started") == 2 then break end
                ngx.sleep(0.01)
            end
            ngx.say(dict:get("started"), " ", ngx.process and "" or "",
                    require("ngx.process").type())
        }
    }
--- request
GET /t
--- response_body
2 worker
