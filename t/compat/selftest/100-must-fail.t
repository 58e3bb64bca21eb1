# Meta self-test: runs the Test::Nginx fixture files in fixtures/ through
# prove in a subprocess and checks that the runner really catches problems
# (a block that must fail does fail, with the expected assertion), that a
# good file passes, and that no nginx is left running afterwards — also
# when the test file dies or the runner is interrupted.
#
# Runs against the compat runner, or against the real Test::Nginx when
# CKV_TEST_RUNNER=real (PERL5LIB must then point at it).

use strict;
use warnings;

use Cwd qw(getcwd);
use IO::Socket::INET ();
use POSIX ();
use Test::More;
use Time::HiRes qw(sleep time);

my $root   = getcwd;
my $dir    = 't/compat/selftest/fixtures';
my $real   = ($ENV{CKV_TEST_RUNNER} // '') eq 'real';
my @inc    = ('-I', 't/lib', ($real ? () : ('-I', 't/compat')));

# the fixtures get their own servroot and port, away from other runs
my $port = ($ENV{TEST_NGINX_PORT} || 1984) + 11;
delete $ENV{TEST_NGINX_SERVER_PORT};
$ENV{TEST_NGINX_PORT}     = $port;
$ENV{TEST_NGINX_SERVROOT} = "$root/t/servroot-selftest-fixtures";

# [fixture, must pass?, pattern the prove -v output must contain]
my @cases = (
    ['pass',             1, qr/^ok 3 - .*TEST 1: ok - pattern "ckv fixture log line" matches/m],
    ['bad-body',         0, qr/^not ok 2 - .*TEST 1: wrong body - response_body - response is expected/m],
    ['bad-status',       0, qr/^not ok 1 - .*TEST 1: wrong status - status code ok/m],
    ['missing-log',      0, qr/^not ok 3 - .*pattern "never logged by nginx" should match a line in error\.log/m],
    ['unexpected-log',   0, qr/^not ok 3 - .*pattern "ckv fixture log line" should not match any line in error\.log/m],
    ['grep-mismatch',    0, qr/^not ok 3 - .*grep_error_log_out/m],
    ['body-like',        0, qr/^not ok 2 - .*response_body_like/m],
    ['timeout',          0, qr/^not ok \d+ - ERROR: client socket timed out/m],
    ['bad-plan',         0, qr/planned 5 tests but ran 2|Bad plan/],
    ['shutdown-missing', 0, qr/^not ok 3 - .*pattern "never at shutdown" should match a line in error\.log/m],
    ['shutdown-unexpected', 0, qr/^not ok 3 - .*pattern "ckv fixture premature" should not match any line/m],
    ['repeat-fail',      0, qr/^ok 2 - .*\n^ok 3 - .*\n^not ok 4 - .*response_body/m],
    ['bad-config',       0, qr/Cannot start nginx/],
    ['dies',             0, qr/fixture dies here/],
);
# Only the compat runner refuses sections it does not implement.
push @cases, ['unsupported', 0, qr/the --- more_headers section is not supported/]
    unless $real;

plan tests => 3 * @cases + 2;

# Is anything accepting connections on the fixtures' port?
sub nginx_up {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 1);
    return defined $s;
}

sub wait_until {
    my ($cond, $secs) = @_;
    my $end = time + $secs;
    while (time < $end) { return 1 if $cond->(); sleep 0.05 }
    return $cond->();
}

for my $c (@cases) {
    my ($name, $must_pass, $pat) = @$c;
    my $cmd = join ' ', 'prove', '-v', @inc, "$dir/$name.tn", '2>&1';
    my $out = `$cmd`;
    my $rc  = $? >> 8;

    if ($must_pass) {
        is($rc, 0, "$name: prove passes") or diag $out;
    } else {
        isnt($rc, 0, "$name: prove reports a failure") or diag $out;
    }
    like($out, $pat, "$name: expected assertion in the output") or diag $out;
    ok(wait_until(sub { !nginx_up() }, 3), "$name: no nginx left running");
}

# Interrupting the runner (Ctrl-C) while a request is in flight must stop
# nginx too.  The real Test::Nginx has no signal handler (nginx stays up).
SKIP: {
    skip 'the real Test::Nginx does not stop nginx on SIGINT', 2 if $real;

    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        exec 'perl', @inc, "$dir/sleeper.tn" or POSIX::_exit(127);
    }
    ok(wait_until(\&nginx_up, 10), 'sleeper: nginx is up');
    sleep 0.3;    # let the request reach the slow handler
    kill 'INT', $pid;
    waitpid $pid, 0;
    ok(wait_until(sub { !nginx_up() }, 3), 'sleeper: nginx stopped on SIGINT');
}

system('rm', '-rf', $ENV{TEST_NGINX_SERVROOT});
