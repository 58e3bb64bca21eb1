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

our @EXPORT;
BEGIN {
    @EXPORT = qw(plan run_tests repeat_each workers master_on no_shuffle
                 env_to_nginx add_block_preprocessor);
    no strict 'refs';
    for my $f (@EXPORT) {
        next if $f eq 'plan';    # Test::Base's (Test::More's) plan
        *{"Test::Nginx::Socket::Lua::$f"} = \&{"CKVCompat::Runner::$f"};
    }
}

1;
