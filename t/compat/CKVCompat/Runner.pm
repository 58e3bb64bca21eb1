package CKVCompat::Runner;

# Engine of the ckv compat runner (see t/compat/README.md): writes an
# nginx.conf per test block, (re)starts nginx, sends the block's requests
# and emits the same assertions, in the same number, as
# Test::Nginx::Socket::Lua does for the sections the project uses.
#
# Written for this project; nothing here is copied from test-nginx.

use strict;
use warnings;

use Cwd ();
use File::Path qw(make_path remove_tree);
use File::Spec ();
use List::Util qw(shuffle min);
use POSIX ();
use Socket ();
use Time::HiRes qw(sleep time);
use Test::More ();

use CKVCompat::HTTP ();
use CKVCompat::Checks ();

# ---------------------------------------------------------------------------
# Settings.  Same environment variables and defaults as Test::Nginx.
# ---------------------------------------------------------------------------

our $ServerAddr          = '127.0.0.1';
our $ServerName          = 'localhost';
our $ServerPort          = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT}
                           || 1984;
our $ServerPortForClient = $ENV{TEST_NGINX_CLIENT_PORT} || $ServerPort;
our $NginxBinary         = $ENV{TEST_NGINX_BINARY} || 'nginx';
our $Workers             = 1;
our $WorkerConnections   = 64;
our $LogLevel            = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $MasterProcess       = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
our $RepeatEach          = 1;
our $NoShuffle           = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $NoRootLocation      = 0;
our $NoLongString;
our $Timeout             = $ENV{TEST_NGINX_TIMEOUT} || 3;
our $Sleep               = $ENV{TEST_NGINX_SLEEP} || 0.015;
our $CheckAccumErrLog    = $ENV{TEST_NGINX_CHECK_ACCUM_ERR_LOG};
our $ForceRestart        = defined $ENV{TEST_NGINX_FORCE_RESTART_ON_TEST}
                           ? $ENV{TEST_NGINX_FORCE_RESTART_ON_TEST} : 1;
our $LoadModules         = $ENV{TEST_NGINX_LOAD_MODULES};
our $WorkerUser          = $ENV{TEST_NGINX_WORKER_USER};
our $EventType           = $ENV{TEST_NGINX_EVENT_TYPE};
our $NoClean             = $ENV{TEST_NGINX_NO_CLEAN};
our $ConfigPreamble      = '';
our $HttpConfigFilter;          # code ref, set by Test::Nginx::Socket::Lua
our @EnvToNginx;
our @BlockPreprocessors;
our @CleanupHandlers;
our @TestCleanupHandlers;

if (defined $WorkerUser && $WorkerUser !~ /^\w[-\w]+(?:\s+\w[-\w]+)?$/) {
    die "Bad value in the env TEST_NGINX_WORKER_USER: $WorkerUser\n";
}

for my $v (qw(TEST_NGINX_USE_HUP TEST_NGINX_USE_VALGRIND TEST_NGINX_USE_STAP
              TEST_NGINX_CHECK_LEAK TEST_NGINX_BENCHMARK TEST_NGINX_USE_HTTP2
              TEST_NGINX_USE_HTTP3 TEST_NGINX_RANDOMIZE))
{
    warn "WARNING: $v is not supported by the ckv compat runner; ignored\n"
        if $ENV{$v};
}

our $ServRoot = $ENV{TEST_NGINX_SERVROOT} || File::Spec->rel2abs('t/servroot');
$ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;

our $LogDir     = "$ServRoot/logs";
our $ErrLogFile = "$LogDir/error.log";
our $AccLogFile = "$LogDir/access.log";
our $HtmlDir    = "$ServRoot/html";
our $ConfDir    = "$ServRoot/conf";
our $ConfFile   = "$ConfDir/nginx.conf";
our $PidFile    = "$LogDir/nginx.pid";
our $CacheDir   = "$ServRoot/cache";

# Mirror the few Test::Nginx::Util package variables helper modules read.
{
    no warnings 'once';
    *Test::Nginx::Util::ServRoot   = \$ServRoot;
    *Test::Nginx::Util::ServerPort = \$ServerPort;
    *Test::Nginx::Util::ErrLogFile = \$ErrLogFile;
    *Test::Nginx::Util::PidFile    = \$PidFile;
    *Test::Nginx::Util::ConfFile   = \$ConfFile;
    *Test::Nginx::Util::RepeatEach = \$RepeatEach;
    *Test::Nginx::Util::NginxBinary = \$NginxBinary;
}

# ---------------------------------------------------------------------------
# Run state
# ---------------------------------------------------------------------------

our $ErrLogFilePos = 0;   # error.log offset already seen by the checks
our $RandPorts     = {};  # $TEST_NGINX_RAND_PORT_N values of the block
my $PrevConfig;           # expanded config of the running nginx
my $PrevBlock;            # block whose nginx is running (shutdown checks)
my $NginxPid;             # master (or single) process we started
my $NginxVersion;         # e.g. 1.022001
my $ConnFailures = 0;
my $MainPid = $$;

# ---------------------------------------------------------------------------
# Functions exported to test files (same names/prototypes as Test::Nginx)
# ---------------------------------------------------------------------------

sub repeat_each (@) { $RepeatEach = shift if @_; return $RepeatEach }
sub workers (@)     { if (@_) { $Workers = shift; return } $Workers }
sub worker_connections (@) {
    if (@_) { $WorkerConnections = shift; return } $WorkerConnections
}
sub log_level (@)   { if (@_) { $LogLevel = shift; return } $LogLevel }
sub master_on ()    { $MasterProcess = 'on' }
sub master_off ()   { $MasterProcess = 'off' }
sub master_process_enabled (@) {
    if (@_) { $MasterProcess = shift() ? 'on' : 'off'; return }
    return $MasterProcess;
}
sub no_shuffle ()        { $NoShuffle = 1 }
sub no_root_location ()  { $NoRootLocation = 1 }
sub no_long_string ()    { $NoLongString = 1 }
sub check_accum_error_log () { $CheckAccumErrLog = 1 }
sub server_name (@) { if (@_) { $ServerName = shift; return } $ServerName }
sub server_addr (@) { if (@_) { $ServerAddr = shift; return } $ServerAddr }
sub server_port (@) { if (@_) { $ServerPort = shift; return } $ServerPort }
sub server_port_for_client (@) {
    if (@_) { $ServerPortForClient = shift; return } $ServerPortForClient
}
sub server_root () { $ServRoot }
sub html_dir ()    { $HtmlDir }
sub timeout (@)    { if (@_) { $Timeout = shift; return } $Timeout }
sub config_preamble ($) { $ConfigPreamble = shift }
sub add_block_preprocessor (&) { unshift @BlockPreprocessors, shift }
sub add_cleanup_handler ($)      { unshift @CleanupHandlers, shift }
sub add_test_cleanup_handler ($) { unshift @TestCleanupHandlers, shift }

sub env_to_nginx (@) {
    Carp::croak("env_to_nginx: no arguments specified") unless @_;
    for my $v (@_) {
        Carp::croak("env_to_nginx: bad argument value: $v\n")
            if $v !~ /^[A-Za-z_]/ || $v =~ /\n/;
        push @EnvToNginx, $v;
    }
}

sub bail_out (@) {
    cleanup();
    Test::More::BAIL_OUT(join '', @_);
}

# ---------------------------------------------------------------------------
# Small helpers
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

sub _port_free {
    my ($port) = @_;
    socket(my $s, Socket::PF_INET(), Socket::SOCK_STREAM(), 0) or return 0;
    my $ok = bind($s, Socket::pack_sockaddr_in($port, Socket::INADDR_ANY()));
    close $s;
    return $ok;
}

sub _rand_port {
    my ($used) = @_;
    for (1 .. 1000) {
        my $p = 10000 + int rand 50000;
        next if $used->{$p};
        return $p if _port_free($p);
    }
    return undef;
}

# Replaces $TEST_NGINX_FOO with the environment value (bailing out when it
# is not set); $TEST_NGINX_RAND_PORT_N gets a free port, stable per block.
sub expand_env_in_text {
    my ($text, $name) = @_;
    return $text unless defined $text;
    $text =~ s{\$(TEST_NGINX_[_A-Z0-9]+)}{
        my $var = $1;
        my $val;
        if ($var =~ /^TEST_NGINX_RAND_PORT_\d+$/) {
            $val = $RandPorts->{$var} //= do {
                my %used = ($ServerPort => 1, map { $_ => 1 } values %$RandPorts);
                _rand_port(\%used)
                    // bail_out("$name - Cannot find an available listening port number for $var.\n");
            };
        } else {
            bail_out("$name - No environment $var defined.\n")
                unless defined $ENV{$var};
            $val = $ENV{$var};
        }
        $val;
    }ge;
    return $text;
}

sub nginx_version {
    return $NginxVersion if defined $NginxVersion;
    my $out = `$NginxBinary -V 2>&1`;
    if (!defined $out || $? != 0 || $out !~ m{/(\d+)\.(\d+)\.(\d+)}) {
        bail_out("Failed to get the version of nginx ($NginxBinary): "
                 . ($out // ''));
    }
    $NginxVersion = sprintf '%d.%03d%03d', $1, $2, $3;
    return $NginxVersion;
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
    return undef unless defined $pid && $pid =~ /^\s*(\d+)/;
    return $1;
}

# Runs a command with stdout discarded; returns the wait status.
sub _run_quiet {
    my @cmd = @_;
    my $pid = fork;
    die "fork() failed: $!\n" unless defined $pid;
    if (!$pid) {
        open STDOUT, '>', '/dev/null';
        { no warnings 'exec'; exec { $cmd[0] } @cmd; }
        POSIX::_exit(127);
    }
    waitpid $pid, 0;
    return $?;
}

# ---------------------------------------------------------------------------
# nginx life cycle
# ---------------------------------------------------------------------------

# Stops the running nginx: QUIT (graceful, so shutdown logging happens),
# then KILL of the master and its workers if it is still there after
# timeout() seconds.  $fast uses TERM and a short grace period instead.
sub stop_nginx {
    my ($name, $fast) = @_;
    my $pid = $NginxPid // _read_pid_file();
    undef $NginxPid;
    if (!$pid || !_alive($pid)) {
        unlink $PidFile if -f $PidFile;
        return;
    }

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

# Recreates servroot (conf, logs, html, temp dirs).  Only removes what a
# test run creates, so a mistaken TEST_NGINX_SERVROOT cannot wipe user data.
sub setup_server_root {
    if (-d $ServRoot) {
        remove_tree($ConfDir, $CacheDir, $HtmlDir, $LogDir,
                    glob("$ServRoot/*_cache"), glob("$ServRoot/*_temp"));
        rmdir $ServRoot
            or bail_out("Can't remove $ServRoot (not empty?): $!");
    }
    for my $d ($ServRoot, $LogDir, $HtmlDir, $ConfDir) {
        mkdir $d or bail_out("Failed to do mkdir $d: $!\n");
    }
    open my $out, '>', "$HtmlDir/index.html"
        or bail_out("Can't open $HtmlDir/index.html for writing: $!\n");
    print $out '<html><head><title>It works!</title></head>'
             . '<body>It works!</body></html>';
    close $out;
}

# "--- user_files": ">>> path [date]" headed chunks, or an array of
# [path, body, date] triples; relative paths go under html/.
sub write_user_files {
    my ($block) = @_;
    my $name  = $block->name;
    my $files = $block->user_files;
    return unless $files;

    if (!ref $files) {
        my @list;
        for my $line (split /^/, $files) {
            if ($line =~ /^>>> (\S+)(?:\s+(.+))?/) {
                push @list, [$1, undef, $2];
            } elsif (@list) {
                $list[-1][1] .= $line;
            }
        }
        $files = \@list;
    } elsif (ref $files ne 'ARRAY') {
        bail_out("$name - wrong value type: ", ref $files,
                 ", only scalar or ARRAY are accepted");
    }

    for my $f (@$files) {
        my ($fname, $body, $date) = @$f;
        my $path = $fname =~ m{^/} ? $fname : "$HtmlDir/$fname";
        if ($path =~ m{(.*)/} && !-d $1) {
            make_path($1);
        }
        open my $out, '>', $path
            or bail_out("$name - Cannot open $path for writing: $!\n");
        binmode $out;
        print $out expand_env_in_text($body // '', $name);
        close $out;
        if ($date) {
            system('touch', '-t', $date, $path) == 0
                or bail_out("$name - failed to set the date of $path\n");
        }
    }
}

sub write_config_file {
    my ($block, $config) = @_;
    my $name = $block->name;

    my $http_config = expand_env_in_text($block->http_config // '', $name);
    $http_config = $HttpConfigFilter->($http_config) if $HttpConfigFilter;

    my $main_config = $block->main_config // '';
    if ($LoadModules) {
        $main_config = join ' ', (map { "load_module $_;" }
                                  grep { length } split /\s+/, $LoadModules),
                                 $main_config;
    }
    $main_config = expand_env_in_text($main_config, $name);
    my $post_main_config = expand_env_in_text($block->post_main_config // '',
                                              $name);
    my $err_log = expand_env_in_text($block->error_log_file || $ErrLogFile,
                                     $name);
    my $server_name = $block->server_name // $ServerName;

    # keep temp files inside servroot (Debian's nginx defaults to
    # /var/lib/nginx), unless the test configures them itself
    my $temp_paths = '';
    for my $t (qw(client_body proxy fastcgi uwsgi scgi)) {
        next if $http_config =~ /\b${t}_temp_path\b/;
        $temp_paths .= " ${t}_temp_path $ServRoot/${t}_temp;";
    }

    my $env = join '', map { my $v = /\s/ ? "'$_'" : $_; "env $v;\n" }
                       qw(LD_PRELOAD LD_LIBRARY_PATH), @EnvToNginx;

    my $root_location = $NoRootLocation ? '' : <<"EOT";
        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
EOT

    my $events_use = $EventType ? "    use $EventType;\n" : '';

    # like Test::Nginx: root runs the workers as root so they can read the
    # test tree and write servroot
    my $user = defined $WorkerUser ? "user $WorkerUser;\n"
             : $> == 0             ? "user root;\n"
             : '';

    my $conf = <<"EOT";
# generated by the ckv compat runner for: $name
worker_processes  $Workers;
daemon on;
master_process $MasterProcess;
error_log $err_log $LogLevel;
pid       $PidFile;
$env
$main_config

http {
    access_log $AccLogFile;$temp_paths

    default_type text/plain;
    keepalive_timeout  68000ms;

$http_config
    server {
        listen          $ServerPort;
        server_name     '$server_name';
        client_max_body_size 30M;

        # Begin preamble config...
$ConfigPreamble
        # End preamble config...

        # Begin test case config...
$config
        # End test case config.

$root_location    }
}

$post_main_config

events {
    accept_mutex off;
    worker_connections  $WorkerConnections;
$events_use}
$user
EOT

    open my $out, '>', $ConfFile
        or bail_out("Can't open $ConfFile for writing: $!\n");
    print $out $conf;
    close $out;
}

# The first [emerg]/[alert] line nginx logged since $from, if any.
sub _startup_error {
    my ($from) = @_;
    open my $in, '<', $ErrLogFile or return '';
    seek $in, $from, 0;
    while (my $l = <$in>) {
        return $l if $l =~ /\[(?:emerg|alert)\]/;
    }
    return '';
}

sub start_nginx {
    my ($block) = @_;
    my $name = $block->name;

    my @cmd = ($NginxBinary, '-p', "$ServRoot/", '-c', $ConfFile);
    # nginx >= 1.19.5 can send its early errors to our log instead of the
    # compiled-in one (stderr on Debian)
    splice @cmd, 1, 0, '-e', $ErrLogFile if nginx_version() >= 1.019005;

    my $waited = 0;
    while (1) {
        my $from = -s $ErrLogFile || 0;
        my $status = _run_quiet(@cmd);
        last if $status == 0;

        my $err = _startup_error($from);
        # the previous instance (or another test run) may still hold the
        # port for a moment: retry that for a while, like Test::Nginx
        if ($err =~ /Address already in use/ && $waited < 30) {
            sleep 0.2;
            $waited += 0.2;
            next;
        }
        chomp $err;
        bail_out("$name - Cannot start nginx using command \"@cmd\""
                 . " (status code $status)" . ($err ? ": $err" : ''));
    }

    # daemon mode: the pid file appears once the daemon is up
    my $deadline = time + $Timeout;
    until (defined($NginxPid = _read_pid_file()) || time > $deadline) {
        sleep 0.005;
    }
    bail_out("$name - nginx did not write $PidFile") unless $NginxPid;
    sleep $Sleep;
}

# Reads the error log lines written since the previous read.
sub error_log_data {
    # leave time for log-phase handlers that run after the response
    sleep $Sleep * 3;
    open my $in, '<', $ErrLogFile or return [];
    seek $in, $ErrLogFilePos, 0 if !$CheckAccumErrLog && $ErrLogFilePos > 0;
    my @lines = <$in>;
    $ErrLogFilePos = tell $in unless $CheckAccumErrLog;
    close $in;
    return \@lines;
}

# ---------------------------------------------------------------------------
# Test driving
# ---------------------------------------------------------------------------

# Sections that change what the real runner does but that this runner does
# not implement: fail loudly instead of silently passing.
my @Unsupported = qw(
    tcp_listen tcp_reply tcp_query tcp_query_len udp_listen udp_reply
    udp_query stap stap_out stap_out_like stap_out_unlike must_die todo
    http2 http3 curl access_log no_access_log skip_nginx skip_nginx2
    skip_openssl skip_slave todo_nginx request_body_file
);

sub check_shutdown_of_prev_block {
    my $block = $PrevBlock;
    return unless $block;
    undef $PrevBlock;
    if (defined $block->shutdown_error_log
        || defined $block->no_shutdown_error_log)
    {
        CKVCompat::Checks::check_shutdown_error_log($block, $NoClean);
    }
}

sub run_tests () {
    srand($$ ^ int(time * 1000));
    nginx_version();
    $ENV{TEST_NGINX_SERVER_PORT} = $ServerPort
        unless defined $ENV{TEST_NGINX_SERVER_PORT};

    # never leave a daemonized nginx behind on Ctrl-C / kill
    local $SIG{INT}  = sub { _on_signal('INT', 130) };
    local $SIG{TERM} = sub { _on_signal('TERM', 143) };
    local $SIG{HUP}  = sub { _on_signal('HUP', 129) };

    my @blocks = Test::Base::blocks();
    @blocks = shuffle @blocks unless $NoShuffle;

    for my $block (@blocks) {
        $_->($block) for @BlockPreprocessors;
        $block->set_value(name => "$0 " . $block->name);
        run_block($block);
        $_->($block) for @TestCleanupHandlers;
    }

    cleanup();
    if (!$NoClean) {
        stop_nginx('END');
    }
    check_shutdown_of_prev_block();
}

sub _on_signal {
    my ($sig, $code) = @_;
    stop_nginx("SIG$sig", 1) unless $NoClean;
    exit $code;
}

sub cleanup {
    $_->() for @CleanupHandlers;
}

sub run_block {
    my ($block) = @_;
    my $name = $block->name;

    return if defined $block->SKIP;

    for my $s (@Unsupported) {
        next unless defined $block->$s;
        die "$name - the --- $s section is not supported by the ckv compat"
            . " runner (install the real Test::Nginx to use it)\n";
    }

    $RandPorts = {};
    local $LogLevel = $block->log_level || $LogLevel;

    my $config = $block->config;
    $config = expand_env_in_text($config, $name) if defined $config;

    # --- skip_eval: "N: perl expression"
    my ($skip, $skip_count);
    if (defined(my $se = $block->skip_eval)) {
        if ($se =~ /^\s*(\d+)\s*:\s*(.*)/s) {
            $skip_count = $1;
            $skip = eval $2;
            bail_out("$name - skip_eval - failed to eval the Perl code"
                     . " \"$2\": $@") if $@;
        }
    }

    my $restart;
    if (!defined $config) {
        # no config: keep using the nginx of the previous block
        bail_out("$name - No '--- config' section specified and could not"
                 . " get previous one.") unless defined $PrevConfig;
        $restart = 0;
    } else {
        $restart = $ForceRestart || !defined $PrevConfig
                   || $config ne $PrevConfig;
    }

    if ($restart && !$skip) {
        $PrevConfig = $config;
        stop_nginx($name);
        check_shutdown_of_prev_block();
        setup_server_root();
        write_user_files($block);
        write_config_file($block, $config);
        start_nginx($block);
    }

    if (defined(my $init = $block->init)) {
        eval "package main; $init";
        bail_out("$name - init failed: $@") if $@;
    }

    $ErrLogFilePos = 0;
    for my $rep (0 .. $RepeatEach - 1) {
        write_user_files($block) if $rep > 0;
        if ($skip && defined $skip_count) {
            SKIP: { Test::More::skip("$name - skip_eval", $skip_count) }
            next;
        }
        run_requests($block, $rep);
    }

    $PrevBlock = $block;
}

# Value of a per-request section: with several requests the section must
# be an array and is indexed by the request number.
sub indexed_value {
    my ($name, $value, $idx, $need_array) = @_;
    if (ref $value eq 'ARRAY') {
        return $value->[$need_array ? $idx : 0];
    }
    bail_out("$name - You asked for many requests, the expected results"
             . " should be arrays as well.") if $need_array;
    return $value;
}

sub run_requests {
    my ($block, $rep) = @_;
    my $name = $block->name;

    my $reqs = eval {
        CKVCompat::HTTP::requests_from_block($block,
            sub { expand_env_in_text($_[0], $name) });
    };
    if (!$reqs) {
        chomp(my $err = $@);
        bail_out("$name - $err");
    }

    my $timeout = parse_time($block->timeout) // $Timeout;
    my $pipelined = $block->pipelined_requests;
    my $need_array = $pipelined ? 1 : @$reqs > 1;
    my $wait = $block->wait;

    my $req_idx = 0;
    for my $r (0 .. $#$reqs) {
        my $packets = $reqs->[$r];
        my $all = join '', map { $_->{value} } @$packets;
        my $head = $all =~ /^\s*HEAD\s+/ ? 1 : 0;

        my $raw = send_one($block, $packets, $timeout);

        # one response per pipelined request, all on one connection
        my $n = $pipelined ? @$pipelined : 1;
        for my $k (1 .. $n) {
            my ($res, $raw_headers, $left, $err) =
                CKVCompat::HTTP::parse_response($raw // '', $head);
            if ($err) {
                Test::More->builder->no_ending(1);
                Test::More::fail("$name - $err");
            }
            if ($k == $n && !$pipelined && defined $left && length $left) {
                (my $show = $left) =~ s/([\0-\037\200-\377])/sprintf('\x{%02x}', ord $1)/eg;
                warn "WARNING: $name - unexpected extra bytes after last"
                     . " chunk in response: \"$show\"\n";
            }
            $raw = $left;

            if (!defined $block->ignore_response) {
                CKVCompat::Checks::check_response($block, $res, $raw_headers,
                                                  $req_idx, $rep, $need_array);
            }

            my $more = $k < $n || $r < $#$reqs;
            if ($more) {
                sleep $wait if $wait;
                CKVCompat::Checks::check_error_log($block, $rep);
            }
            $req_idx++;
        }
    }

    sleep $wait if $wait;
    CKVCompat::Checks::check_error_log($block, $rep);
}

# Sends one request (list of packets); returns the raw response bytes.
sub send_one {
    my ($block, $packets, $timeout) = @_;
    my $name = $block->name;
    my $addr = $block->server_addr_for_client // $ServerAddr;

    my $sock = CKVCompat::HTTP::connect_server($addr, $ServerPortForClient,
                                               $timeout, $Sleep);
    if (!$sock) {
        my $msg = "$name - Can't connect to $addr:$ServerPortForClient: $!"
                  . " (aborted)\n";
        bail_out($msg) if ++$ConnFailures >= 3;
        Test::More->builder->no_ending(1);
        Test::More::fail($msg);
        return undef;
    }

    my $shutdown = $block->shutdown;
    $shutdown = 1 if defined $shutdown && $shutdown =~ /^\s*$/;

    my ($resp, $timed_out) = CKVCompat::HTTP::exchange(
        $sock, $packets, $timeout,
        middle_delay => scalar $block->raw_request_middle_delay,
        shutdown     => $shutdown,
    );
    close $sock;

    if ($timed_out) {
        if (defined $block->abort) {
            sleep 0.005;
        } else {
            Test::More->builder->no_ending(1);
            Test::More::fail("ERROR: client socket timed out - $name\n");
        }
    }
    return $resp;
}

END {
    # safety net for die/exit in the middle of run_tests
    if ($$ == $MainPid && !$NoClean && ($NginxPid || -f $PidFile)) {
        local $?;
        stop_nginx('END', 1);
    }
}

1;
