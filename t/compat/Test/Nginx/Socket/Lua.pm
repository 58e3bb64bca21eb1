package Test::Nginx::Socket::Lua;

# ckv compat runner: a small stand-in for openresty's Test::Nginx::Socket::Lua
# used when the real one is not installed (see t/compat/README.md).
#
# This file only wires things up: it makes the package a Test::Base
# subclass (which gives test files the __DATA__ block parser, plan(),
# blocks(), the Test::More functions and the section filters) and exports
# the runner functions implemented in CKVCompat::Runner.
#
# Careful: "use Test::Base -Base" source-filters the rest of this file
# (Spiffy adds "my $self = shift;" to every "sub name {"), which is why no
# named subs are defined here.

use strict;
use warnings;

use Test::Base -Base;

BEGIN {
    # t/compat itself must be on @INC for the helpers, even when this file
    # was found through a relative -I and the test changes directory.
    (my $dir = __FILE__) =~ s{/?Test/Nginx/Socket/Lua\.pm$}{};
    require File::Spec;
    require lib;
    lib->import(File::Spec->rel2abs(length $dir ? $dir : '.'));
}

use CKVCompat::Runner ();

our $VERSION = '0.33_ckv_compat';
our $IsCKVCompat = 1;

our @EXPORT;
BEGIN {
    @EXPORT = qw(
        env_to_nginx plan run_tests repeat_each config_preamble
        worker_connections master_process_enabled no_long_string workers
        master_on master_off log_level no_shuffle no_root_location
        server_name server_addr server_root html_dir server_port
        server_port_for_client timeout check_accum_error_log
        add_block_preprocessor bail_out add_test_cleanup_handler
        add_cleanup_handler
    );
    no strict 'refs';
    for my $f (@EXPORT) {
        next if $f eq 'plan';    # Test::Base's (Test::More's) plan
        *{"Test::Nginx::Socket::Lua::$f"} = \&{"CKVCompat::Runner::$f"};
    }
}

# TEST_NGINX_INIT_BY_LUA: extra Lua code run by init_by_lua in every test
# (e.g. to load resty.core); injected into the block's http_config.
if (my $code = $ENV{TEST_NGINX_INIT_BY_LUA}) {
    $CKVCompat::Runner::HttpConfigFilter = sub {
        my $config = shift;
        return $config if $config =~ /init_by_lua_file/;
        return $config
            if $config =~ s{(?<!\#)init_by_lua_block\s*\{}{init_by_lua_block { $code }s};
        return $config . "\n    init_by_lua_block { $code }\n";
    };
}

1;
