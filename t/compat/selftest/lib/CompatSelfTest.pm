package CompatSelfTest;

# Shared setup of the compat runner's self-tests.  Written the way project
# helpers (t/lib/*.pm) are: a Spiffy subclass of Test::Nginx::Socket::Lua,
# so test files "use CompatSelfTest;" and get every runner function.  Works
# with both the real Test::Nginx and the compat runner.
#
# Note: "-Base" source-filters this file (Spiffy); keep it free of named subs.

use Test::Nginx::Socket::Lua -Base;

# Debian's nginx has ngx_lua as a dynamic module; OpenResty has it built in.
our $LoadLua = '';
for my $m (qw(ndk_http_module ngx_http_lua_module)) {
    my $so = "/usr/lib/nginx/modules/$m.so";
    $LoadLua .= "load_module $so;\n" if -f $so;
}

add_block_preprocessor(sub {
    my $block = shift;
    my $main = $block->main_config;
    $block->set_value(main_config => $LoadLua . (defined $main ? $main : ''));
});

1;
