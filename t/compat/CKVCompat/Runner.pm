package CKVCompat::Runner;

# Engine of the ckv compat runner (see t/compat/README.md): writes an
# nginx.conf per test block, restarts nginx, sends the block's requests and
# emits the same assertions, in the same number, as Test::Nginx::Socket::Lua
# does for the sections the project uses. A section it does not know makes
# the test file die instead of being ignored.
#
# Written for this project; nothing here is copied from test-nginx.

use strict;
use warnings;

use File::Path qw(remove_tree);
use File::Spec ();
use List::Util qw(shuffle);
use POSIX ();
use Time::HiRes qw(sleep time);
use Test::More ();

use CKVCompat::HTTP ();
use CKVCompat::Checks ();

# Sections a block may have (besides Test::Base's ONLY, SKIP and LAST).
our %Sections = map { $_ => 1 } qw(
    config http_config main_config request timeout wait
    error_code response_body response_body_like
    error_log no_error_log grep_error_log grep_error_log_out
    shutdown_error_log no_shutdown_error_log skip_eval
);

# ---------------------------------------------------------------------------
# Settings (same environment variables and defaults as Test::Nginx)
# ---------------------------------------------------------------------------

our $ServerPort    = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984;
our $NginxBinary   = $ENV{TEST_NGINX_BINARY} || 'nginx';
our $Timeout       = $ENV{TEST_NGINX_TIMEOUT} || 3;
our $Workers       = 1;
our $MasterProcess = 'off';
our $RepeatEach    = 1;
our $NoShuffle     = 0;
our $Sleep         = 0.015;   # lets nginx write its log lines
our @EnvToNginx;
our @BlockPreprocessors;

our $ServRoot   = $ENV{TEST_NGINX_SERVROOT} || File::Spec->rel2abs('t/servroot');
our $LogDir     = "$ServRoot/logs";
our $ErrLogFile = "$LogDir/error.log";
our $ConfDir    = "$ServRoot/conf";
our $ConfFile   = "$ConfDir/nginx.conf";
our $PidFile    = "$LogDir/nginx.pid";

# The Test::Nginx::Util package variables that helper modules read.
{
    no warnings 'once';
    *Test::Nginx::Util::ServRoot   = \$ServRoot;
    *Test::Nginx::Util::ServerPort = \$ServerPort;
    *Test::Nginx::Util::ErrLogFile = \$ErrLogFile;
    *Test::Nginx::Util::PidFile    = \$PidFile;
}

our $ErrLogFilePos = 0;   # error.log offset already seen by the checks
my $PrevBlock;            # block whose nginx is running (shutdown checks)
my $NginxPid;             # master (or single) process we started
my $MainPid = $$;

# ---------------------------------------------------------------------------
# Functions exported to test files (same names and prototypes as Test::Nginx)
# ---------------------------------------------------------------------------

sub repeat_each (@) { $RepeatEach = shift if @_; return $RepeatEach }
sub workers (@)     { if (@_) { $Workers = shift; return } $Workers }
sub master_on ()    { $MasterProcess = 'on' }
sub no_shuffle ()   { $NoShuffle = 1 }
sub add_block_preprocessor (&) { unshift @BlockPreprocessors, shift }

sub env_to_nginx (@) {
    for my $v (@_) {
        Carp::croak("env_to_nginx: bad argument value: $v\n")
            if $v !~ /^[A-Za-z_]/ || $v =~ /\n/;
        push @EnvToNginx, $v;
    }
}

sub bail_out {
    Test::More::BAIL_OUT(join '', @_);
}

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

# "3", "3s", "100ms" -> seconds
sub parse_time {
    my ($t) = @_;
    return undef unless defined $t;
    $t =~ s/^\s+|\s+$//g;
    return $1 / 1000 if $t =~ /^([\d.]+)ms$/;
    return $1 if $t =~ /^([\d.]+)s$/;
    return $t;
}

# Replaces $TEST_NGINX_FOO with the environment value (bailing out when it
# is not set).
sub expand_env {
    my ($text, $name) = @_;
    return $text unless defined $text;
    $text =~ s{\$(TEST_NGINX_[_A-Z0-9]+)}{
        defined $ENV{$1} ? $ENV{$1}
                         : bail_out("$name - No environment $1 defined.\n")
    }ge;
    return $text;
}

# Is $pid a live process (zombies count as dead)?
sub _alive {
    my ($pid) = @_;
    return 0 unless $pid && kill 0, $pid;
    if (open my $fh, '<', "/proc/$pid/stat") {
        my $stat = <$fh>;
        return 0 if defined $stat && $stat =~ /^\d+ \(.*\) Z/s;
    }
    return 1;
}

sub _children_of {
    my ($ppid) = @_;
    my @kids;
    for my $stat (glob '/proc/[0-9]*/stat') {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // next;
        push @kids, $1 if $line =~ /^(\d+) \(.*\) \S (\d+) /s && $2 == $ppid;
    }
    return @kids;
}

sub _read_pid_file {
    open my $in, '<', $PidFile or return undef;
    my $pid = <$in>;
    close $in;
    return defined $pid && $pid =~ /^\s*(\d+)/ ? $1 : undef;
}

# ---------------------------------------------------------------------------
# nginx life cycle
# ---------------------------------------------------------------------------

# Stops the running nginx: QUIT (graceful, so that shutdown logging
# happens), then KILL if it is still there after timeout seconds. $fast
# uses TERM and a short grace period instead.
sub stop_nginx {
    my ($name, $fast) = @_;
    my $pid = $NginxPid // _read_pid_file();
    undef $NginxPid;
    return unlink $PidFile if !$pid || !_alive($pid);

    kill($fast ? 'TERM' : 'QUIT', $pid);
    my $deadline = time + ($fast ? 1 : $Timeout);
    sleep 0.01 while _alive($pid) && time < $deadline;
    if (_alive($pid)) {
        warn "$name - timeout when waiting for the nginx process $pid to"
             . " exit; killing it\n";
        my @kids = _children_of($pid);
        kill 'KILL', $pid, @kids;
        $deadline = time + 2;
        sleep 0.01 while (grep { _alive($_) } $pid, @kids) && time < $deadline;
        unlink $PidFile;
    }
}

# Recreates servroot. Only removes what a run (of this runner or of the
# real one) creates, so a mistaken TEST_NGINX_SERVROOT cannot wipe user data.
sub setup_server_root {
    if (-d $ServRoot) {
        remove_tree($ConfDir, $LogDir, "$ServRoot/html", "$ServRoot/cache",
                    glob("$ServRoot/*_temp"), glob("$ServRoot/*_cache"));
        rmdir $ServRoot or bail_out("Can't remove $ServRoot (not empty?): $!");
    }
    for my $d ($ServRoot, $LogDir, $ConfDir) {
        mkdir $d or bail_out("Failed to do mkdir $d: $!\n");
    }
}

sub write_config_file {
    my ($block) = @_;
    my $name = $block->name;
    my $config      = expand_env($block->config, $name);
    my $http_config = expand_env($block->http_config // '', $name);
    my $main_config = expand_env($block->main_config // '', $name);

    # temp files inside servroot (Debian's nginx defaults to /var/lib/nginx)
    my $temp_paths = join '', map { " ${_}_temp_path $ServRoot/${_}_temp;" }
                              qw(client_body proxy fastcgi uwsgi scgi);
    my $env = join '', map { "env $_;\n" } @EnvToNginx;
    # as Test::Nginx: root runs the workers as root
    my $user = $> == 0 ? "user root;\n" : '';

    open my $out, '>', $ConfFile or bail_out("Can't open $ConfFile for writing: $!\n");
    print $out <<"EOT";
# generated by the ckv compat runner for: $name
worker_processes  $Workers;
daemon on;
master_process $MasterProcess;
error_log $ErrLogFile debug;
pid       $PidFile;
$env
$main_config

http {
    access_log off;$temp_paths
    default_type text/plain;

$http_config
    server {
        listen          $ServerPort;
        server_name     localhost;

$config
    }
}

events {
    accept_mutex off;
    worker_connections  64;
}
$user
EOT
    close $out;
}

sub start_nginx {
    my ($block) = @_;
    my $name = $block->name;
    my @cmd = ($NginxBinary, '-p', "$ServRoot/", '-c', $ConfFile, '-e', $ErrLogFile);

    my $waited = 0;
    while (1) {
        my $from = -s $ErrLogFile || 0;
        my $out = `@cmd 2>&1`;
        last if $? == 0;
        # the previous nginx may hold the port for a moment: retry that
        my $err = _startup_error($from) || $out;
        if ($err =~ /Address already in use/ && $waited < 30) {
            sleep 0.2;
            $waited += 0.2;
            next;
        }
        chomp $err;
        bail_out("$name - Cannot start nginx using command \"@cmd\": $err");
    }

    my $deadline = time + $Timeout;
    sleep 0.005 until defined($NginxPid = _read_pid_file()) || time > $deadline;
    bail_out("$name - nginx did not write $PidFile") unless $NginxPid;
    sleep $Sleep;
}

# The first [emerg]/[alert] line nginx logged since offset $from.
sub _startup_error {
    my ($from) = @_;
    open my $in, '<', $ErrLogFile or return '';
    seek $in, $from, 0;
    while (my $l = <$in>) {
        return $l if $l =~ /\[(?:emerg|alert)\]/;
    }
    return '';
}

# The error log lines written since the previous call.
sub error_log_data {
    sleep $Sleep * 3;    # log-phase handlers run after the response
    open my $in, '<', $ErrLogFile or return [];
    seek $in, $ErrLogFilePos, 0;
    my @lines = <$in>;
    $ErrLogFilePos = tell $in;
    close $in;
    return \@lines;
}

# ---------------------------------------------------------------------------
# Test driving
# ---------------------------------------------------------------------------

sub check_shutdown_of_prev_block {
    my $block = $PrevBlock or return;
    undef $PrevBlock;
    CKVCompat::Checks::check_shutdown_error_log($block);
}

sub run_tests () {
    $ENV{TEST_NGINX_SERVER_PORT} //= $ServerPort;

    # never leave a daemonized nginx behind on Ctrl-C / kill
    local $SIG{INT}  = sub { stop_nginx('SIGINT', 1);  exit 130 };
    local $SIG{TERM} = sub { stop_nginx('SIGTERM', 1); exit 143 };

    my @blocks = Test::Base::blocks();
    @blocks = shuffle @blocks unless $NoShuffle;
    for my $block (@blocks) {
        $_->($block) for @BlockPreprocessors;
        $block->set_value(name => "$0 " . $block->name);
        run_block($block);
    }
    stop_nginx('END');
    check_shutdown_of_prev_block();
}

sub run_block {
    my ($block) = @_;
    my $name = $block->name;
    return if defined $block->SKIP;

    for my $s (@{ $block->{_section_order}[0] || [] }) {
        next if $Sections{$s} || $s =~ /^(?:ONLY|SKIP|LAST)$/;
        die "$name - the --- $s section is not supported by the ckv compat"
            . " runner (see t/compat/README.md)\n";
    }

    # --- skip_eval: "N: perl expression": when true, the block's N
    # assertions are reported as skipped and no nginx is started for it.
    if (defined(my $se = $block->skip_eval)) {
        bail_out("$name - skip_eval: expected \"N: perl expression\"")
            unless $se =~ /^\s*(\d+)\s*:\s*(.*)/s;
        my ($count, $code) = ($1, $2);
        my $skip = eval $code;
        bail_out("$name - skip_eval - failed to eval the Perl code \"$code\": $@")
            if $@;
        if ($skip) {
            SKIP: { Test::More::skip("$name - skip_eval", $count * $RepeatEach) }
            return;
        }
    }

    # as Test::Nginx (TEST_NGINX_FORCE_RESTART_ON_TEST=1): a fresh nginx for
    # every block with a config; a block without one uses the running one
    if (defined $block->config) {
        stop_nginx($name);
        check_shutdown_of_prev_block();
        setup_server_root();
        write_config_file($block);
        start_nginx($block);
    } elsif (!$PrevBlock) {
        bail_out("$name - No '--- config' section specified and could not get"
                 . " previous one.");
    }

    $ErrLogFilePos = 0;
    run_requests($block, $_) for 0 .. $RepeatEach - 1;
    $PrevBlock = $block;
}

# Value of a per-request section: with several requests the section must
# be an array, indexed by the request number.
sub indexed_value {
    my ($name, $value, $idx, $need_array) = @_;
    return $value->[$need_array ? $idx : 0] if ref $value eq 'ARRAY';
    bail_out("$name - You asked for many requests, the expected results"
             . " should be arrays as well.") if $need_array;
    return $value;
}

sub run_requests {
    my ($block, $rep) = @_;
    my $name = $block->name;

    my $reqs = $block->request;
    bail_out("$name - request empty") unless defined $reqs;
    $reqs = [$reqs] unless ref $reqs;
    bail_out("$name - invalid --- request: MUST be string or array of"
             . " requests") unless ref $reqs eq 'ARRAY';

    my $timeout = parse_time($block->timeout) // $Timeout;
    my $wait = $block->wait;
    my $need_array = @$reqs > 1;

    for my $i (0 .. $#$reqs) {
        my $raw = eval { CKVCompat::HTTP::build_request($reqs->[$i]) };
        if (!defined $raw) {
            chomp(my $err = $@);
            bail_out("$name - $err");
        }
        my ($resp, $err) = CKVCompat::HTTP::send_request($ServerPort, $raw, $timeout);
        if ($err) {
            Test::More->builder->no_ending(1);
            Test::More::fail("$err - $name\n");
        }
        my ($res, $perr) = CKVCompat::HTTP::parse_response($resp // '');
        if ($perr) {
            Test::More->builder->no_ending(1);
            Test::More::fail("$name - $perr");
        }
        CKVCompat::Checks::check_response($block, $res, $i, $rep, $need_array);
        if ($i < $#$reqs) {
            sleep $wait if $wait;
            CKVCompat::Checks::check_error_log($block, $rep);
        }
    }
    sleep $wait if $wait;
    CKVCompat::Checks::check_error_log($block, $rep);
}

END {
    # safety net for die/exit in the middle of run_tests
    if ($$ == $MainPid && ($NginxPid || -f $PidFile)) {
        local $?;
        stop_nginx('END', 1);
    }
}

1;
