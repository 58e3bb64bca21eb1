package TestCKV;

# Shared setup for ckv's Test::Nginx suites (works with the real
# Test::Nginx::Socket::Lua and with the compatible runner in t/compat):
#  - loads Debian's dynamic lua module when nginx is not OpenResty;
#  - puts lua/, t/lib/ (APISIX stubs) and libckv.so on the Lua paths;
#  - starts and stops the project's Consul test double (consul_double()).
#
# Real-Consul mode (CKV_REAL_CONSUL=1, set by scripts/real-consul-stage.sh):
# real agents already listen on the suites' ports (8500, 8600 plain; 8502
# with ACLs, management token in CKV_REAL_CONSUL_TOKEN). consul_double()
# then starts nothing: it checks the agent is there and, for the ACL agent,
# creates a real token for every --read-token (Consul wants UUID secrets),
# and the tokens a block names are replaced by the real ones. Blocks that
# need the double (faults, /_double/ counters) carry
#   --- skip_eval: N: $TestCKV::real_consul
# so that this mode skips them and prove counts the skips.

use strict;
use warnings;
use Test::Nginx::Socket::Lua ();
use Cwd qw(cwd);
use Exporter 'import';
use POSIX ();
use IO::Socket::INET;
use Digest::MD5 qw(md5_hex);
use JSON::PP ();

our $pwd = cwd();
our $lib_dir = $ENV{CKV_LIB_DIR} || "$pwd/target/debug";
our $double_bin = $ENV{CKV_DOUBLE_BIN} || "$pwd/target/debug/ckv-consul-double";

our $real_consul = $ENV{CKV_REAL_CONSUL} ? 1 : 0;
# A token as a block spells it => the real agent's secret for it.
my %real_token;

our @EXPORT = qw(consul_double consul_put consul_delete consul_fault
                 consul_control $pwd $lib_dir);
our @EXPORT_OK = qw($real_consul);

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

    real_consul_tokens($block) if $real_consul;

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
    return real_consul_agent($port, @args) if $real_consul;
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

# ---- real-Consul mode ------------------------------------------------------

# The double's command line, read against a real agent: --token names the
# management token, --read-token T=PREFIX a token with key:read on PREFIX,
# --list-token T=PREFIX one with key:list (read and list).
# Agent-wide settings (--max-wait, --acl-key-list-policy) are the agent's.
sub real_consul_agent {
    my ($port, @args) = @_;
    die "real-Consul mode: no agent on 127.0.0.1:$port\n" unless wait_port($port, 5);
    my $mgmt = $ENV{CKV_REAL_CONSUL_TOKEN} // '';
    while (defined(my $arg = shift @args)) {
        if ($arg eq '--token') {
            $real_token{shift @args} = $mgmt;
        } elsif ($arg eq '--read-token' || $arg eq '--list-token') {
            my ($name, $prefix) = split /=/, shift(@args), 2;
            my $rule = $arg eq '--list-token' ? 'list' : 'read';
            $real_token{$name} = real_read_token($port, $mgmt, $prefix // '', $name, $rule);
        } elsif ($arg =~ /^--(?:max-wait|seed-file|start-index|tombstone-ttl)$/) {
            shift @args;
        }
    }
    return 0;
}

# A UUID secret derived from the block's token name, so every test file
# that names the same token gets the same real token.
sub real_read_token {
    my ($port, $mgmt, $prefix, $name, $rule) = @_;
    my $h = md5_hex("ckv-test-token:$name");
    my $secret = join '-', substr($h, 0, 8), substr($h, 8, 4), '4' . substr($h, 13, 3),
                           '8' . substr($h, 17, 3), substr($h, 20, 12);
    my $json = JSON::PP->new->canonical;
    my $policy = "ckv-$rule-" . substr($h, 0, 12);
    my %auth = ('X-Consul-Token' => $mgmt);
    my ($st, $body) = http_call('PUT', $port, '/v1/acl/policy', $json->encode({
        Name => $policy, Rules => qq{key_prefix "$prefix" { policy = "$rule" }},
    }), \%auth);
    die "creating policy $policy on $port: $st $body\n"
        unless $st == 200 || $body =~ /already exists/;
    ($st, $body) = http_call('PUT', $port, '/v1/acl/token', $json->encode({
        SecretID => $secret, Description => "ckv test token $name",
        Policies => [{ Name => $policy }],
    }), \%auth);
    die "creating token $name on $port: $st $body\n"
        unless $st == 200 || $body =~ /already in use/;
    return $secret;
}

# Replaces the tokens a block names by the real agent's ones, in the
# sections that carry them (strings, lists of strings and regexes).
sub real_consul_tokens {
    my $block = shift;
    return unless %real_token;
    my $swap = sub {
        my $text = shift;
        for my $name (sort { length $b <=> length $a } keys %real_token) {
            $text =~ s/\Q$name\E/$real_token{$name}/g;
        }
        return $text;
    };
    my $walk;
    $walk = sub {
        my $v = shift;
        return [map { $walk->($_) } @$v] if ref $v eq 'ARRAY';
        if (ref $v eq 'Regexp') {
            my $src = $swap->("$v");
            return qr/$src/;
        }
        return ref $v ? $v : $swap->($v);
    };
    for my $section (qw(config http_config main_config init request more_headers
                        response_body response_body_like error_log no_error_log
                        grep_error_log grep_error_log_out)) {
        my $v = $block->$section;
        next unless defined $v;
        $block->set_value($section, $walk->($v));
    }
}

# A minimal HTTP/1.0 client for the double (no extra Perl modules needed).
sub http_call {
    my ($method, $port, $path, $body, $headers) = @_;
    $body //= '';
    if (%real_token && $headers) {
        $headers = { map { $_ => $real_token{ $headers->{$_} } // $headers->{$_} } keys %$headers };
    }
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
