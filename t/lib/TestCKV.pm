package TestCKV;

# Shared setup for ckv's Test::Nginx suites (works with the real
# Test::Nginx::Socket::Lua and with the compatible runner in t/compat):
#  - loads Debian's dynamic lua module when nginx is not OpenResty;
#  - puts lua/, t/lib/ (APISIX stubs) and libckv.so on the Lua paths;
#  - starts and stops the project's Consul test double (consul_double()).

use strict;
use warnings;
use Test::Nginx::Socket::Lua ();
use Cwd qw(cwd);
use Exporter 'import';
use POSIX ();
use IO::Socket::INET;

our $pwd = cwd();
our $lib_dir = $ENV{CKV_LIB_DIR} || "$pwd/target/debug";
our $double_bin = $ENV{CKV_DOUBLE_BIN} || "$pwd/target/debug/ckv-consul-double";

our @EXPORT = qw(consul_double consul_put consul_delete consul_fault
                 consul_control $pwd $lib_dir);

sub lua_module_lines {
    my $dir = '/usr/lib/nginx/modules';
    return '' if $ENV{CKV_NO_LOAD_MODULE};
    return '' unless -f "$dir/ngx_http_lua_module.so";
    my $bin = $ENV{TEST_NGINX_BINARY} || 'nginx';
    return '' if $bin =~ /openresty/;
    return "load_module $dir/ndk_http_module.so;\n"
         . "load_module $dir/ngx_http_lua_module.so;\n";
}

my $load_modules = lua_module_lines();

# The runner rewrites main_config/http_config per block; ours go first.
Test::Nginx::Socket::Lua::add_block_preprocessor(sub {
    my $block = shift;

    my $main = $block->main_config // '';
    $block->set_value('main_config', $load_modules . $main);

    my $http = $block->http_config // '';
    $block->set_value('http_config', <<_EOC_ . $http);
    lua_package_path "$pwd/lua/?.lua;$pwd/lua/?/init.lua;$pwd/t/lib/?.lua;$pwd/t/lib/?/init.lua;/usr/share/lua/5.1/?.lua;;";
    lua_package_cpath "$lib_dir/?.so;/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;;";
_EOC_

    if (!defined $block->request) {
        $block->set_value('request', 'GET /t');
    }
    # Blocks wait for conditions with deadlines of up to 5 s: a failing wait
    # must fail its assertion, not time the client out.
    if (!defined $block->timeout) {
        $block->set_value('timeout', 10);
    }
    if (!defined $block->no_error_log && !defined $block->error_log) {
        # One pattern, so that the per-block test count stays fixed.
        $block->set_value('no_error_log', qr/\[(?:error|alert|crit|emerg)\]/);
    }
});

# ---- the Consul test double ----------------------------------------------

my %doubles;    # port => pid

sub wait_port {
    my ($port, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 1);
        if ($s) { close $s; return 1 }
        select(undef, undef, undef, 0.02);
    }
    return 0;
}

# consul_double(8500, '--token', 'secret', ...): starts the double on
# 127.0.0.1:PORT unless it already runs there, and waits for its ready line.
sub consul_double {
    my ($port, @args) = @_;
    return if $doubles{$port};
    die "consul double not built: $double_bin (run make build)\n" unless -x $double_bin;
    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        close $r;
        open STDOUT, '>&', $w or POSIX::_exit(1);
        open STDIN, '<', '/dev/null';
        exec $double_bin, '--listen', "127.0.0.1:$port", @args
            or POSIX::_exit(127);
    }
    close $w;
    my $line = <$r>;
    close $r;
    die "consul double on port $port did not start\n"
        unless defined $line && $line =~ /listening on/;
    $doubles{$port} = $pid;
    return $pid;
}

sub stop_doubles {
    for my $port (keys %doubles) {
        my $pid = delete $doubles{$port};
        kill 'TERM', $pid;
        waitpid $pid, 0;
    }
}

END { stop_doubles() }
$SIG{INT} = $SIG{TERM} = sub { stop_doubles(); POSIX::_exit(130) };

# A minimal HTTP/1.0 client for the double (no extra Perl modules needed).
sub http_call {
    my ($method, $port, $path, $body, $headers) = @_;
    $body //= '';
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 5)
        or die "connect 127.0.0.1:$port: $!";
    my $req = "$method $path HTTP/1.0\r\nHost: 127.0.0.1\r\n"
            . "Content-Length: " . length($body) . "\r\n";
    $req .= "$_: $headers->{$_}\r\n" for sort keys %{ $headers || {} };
    print $s $req, "\r\n", $body;
    local $/;
    my $resp = <$s>;
    close $s;
    my ($status) = $resp =~ m{^HTTP/\S+ (\d+)};
    my ($rbody) = $resp =~ /\r\n\r\n(.*)\z/s;
    return ($status, $rbody);
}

sub consul_put {
    my ($port, $key, $value, $headers) = @_;
    my ($status, $body) = http_call('PUT', $port, "/v1/kv/$key", $value, $headers);
    die "PUT $key on $port: $status $body\n" unless $status == 200;
    return $body;
}

sub consul_delete {
    my ($port, $key, $recurse, $headers) = @_;
    my $q = $recurse ? '?recurse' : '';
    my ($status, $body) = http_call('DELETE', $port, "/v1/kv/$key$q", '', $headers);
    die "DELETE $key on $port: $status $body\n" unless $status == 200;
    return $body;
}

# consul_control(8500, 'POST', '/_double/reset')
sub consul_control {
    my ($port, $method, $path, $body) = @_;
    my ($status, $rbody) = http_call($method, $port, $path, $body);
    die "$method $path on $port: $status $rbody\n" unless $status >= 200 && $status < 300;
    return $rbody;
}

sub consul_fault {
    my ($port, $json) = @_;
    return consul_control($port, defined $json ? 'PUT' : 'DELETE', '/_double/fault', $json);
}

1;
