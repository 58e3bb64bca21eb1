package CKVCompat::Checks;

# Assertions of the ckv compat runner.  Each check emits exactly as many
# Test::More assertions as Test::Nginx::Socket does for the same section,
# so "plan tests => ..." lines are valid under both runners:
#
#   per request:  error_code (always 1), raw_response_headers_like/unlike
#                 (1 each), response_headers(_like) (1 per header line),
#                 response_body / response_body_like / _unlike (1)
#   per request, error log:  grep_error_log (1), error_log (1 per pattern),
#                 no_error_log (1 per pattern; +1 per extra matching line)
#   per block, at nginx shutdown: shutdown_error_log and
#                 no_shutdown_error_log (1 per pattern)
#
# Written for this project; nothing here is copied from test-nginx.

use strict;
use warnings;

use Encode ();
use Test::More ();

sub _runner_port { $CKVCompat::Runner::ServerPort }

# Turns an error_log-like section value into a fresh list of patterns:
# a string is one pattern per line, a qr// is one pattern, an array is
# copied (so entries can be crossed out).
sub _patterns {
    my ($pats) = @_;
    if (!ref $pats) {
        chomp $pats;
        return [ split /\n+/, $pats ];
    }
    return [ $pats ] if ref $pats eq 'Regexp';
    return [ @$pats ];
}

sub _matches {
    my ($line, $pat) = @_;
    return ref $pat ? $line =~ $pat : index($line, $pat) >= 0;
}

# Does the section value mention $needle (as a plain substring)?
sub _mentions {
    my ($val, $needle) = @_;
    return 0 unless defined $val;
    return index("$val", $needle) >= 0 unless ref $val eq 'ARRAY';
    for my $v (@$val) { return 1 if _mentions($v, $needle) }
    return 0;
}

# Printable version of a log line / pattern for test names.
sub _fmt {
    my ($s) = @_;
    $s = "$s";
    chomp $s;
    $s =~ s/"/\\"/g;
    $s =~ s/\r/\\r/g;
    $s =~ s/\n/\\n/g;
    return $s;
}

# ---------------------------------------------------------------------------
# Response checks
# ---------------------------------------------------------------------------

sub check_response {
    my ($block, $res, $raw_headers, $idx, $rep, $need_array) = @_;
    my $name = $block->name;
    my $iv = sub {
        CKVCompat::Runner::indexed_value($name, $_[0], $idx, $need_array);
    };
    $raw_headers = '' unless defined $raw_headers;
    my $code = ($res && $res->code) || '';

    # status code: always exactly one assertion
    if (defined $block->error_code_like) {
        my $re = $iv->(scalar $block->error_code_like);
        Test::More::like($code, qr/$re/sm, "$name - status code ok");
    } elsif (defined $block->error_code) {
        Test::More::is($code, $iv->(scalar $block->error_code),
                       "$name - status code ok");
    } else {
        Test::More::is($code, 200, "$name - status code ok");
    }

    if (defined $block->raw_response_headers_like) {
        my $re = $iv->(scalar $block->raw_response_headers_like);
        Test::More::like($raw_headers, qr/$re/s,
                         "$name - raw resp headers like");
    }
    if (defined $block->raw_response_headers_unlike) {
        my $re = $iv->(scalar $block->raw_response_headers_unlike);
        Test::More::unlike($raw_headers, qr/$re/s,
                           "$name - raw resp headers unlike");
    }

    my $port = _runner_port();
    my $client_port = $CKVCompat::Runner::ServerPortForClient;
    if (defined $block->response_headers) {
        for my $h (_header_lines($iv->(scalar $block->response_headers))) {
            my ($key, $val) = @$h;
            if (!defined $val) {
                Test::More::unlike($raw_headers, qr/^\s*\Q$key\E\s*:/ms,
                    "$name - header $key not present in the raw headers");
                next;
            }
            $val =~ s/\$ServerPort\b/$port/g;
            $val =~ s/\$ServerPortForClient\b/$client_port/g;
            my $got = $res ? $res->header($key) : undef;
            Test::More::is($got // '', $val, "$name - header $key ok");
        }
    } elsif (defined $block->response_headers_like) {
        for my $h (_header_lines($iv->(scalar $block->response_headers_like))) {
            my ($key, $val) = @$h;
            my $got = $res ? $res->header($key) : undef;
            $val = '' unless defined $val;
            Test::More::like($got // '', qr/^$val$/,
                             "$name - header $key like ok");
        }
    }

    _apply_body_filters($block, $res, $idx) if $res;
    _check_body($block, $res, $idx, $rep, $need_array, $iv);
}

# "Key: value" lines; "!Key" means the header must be absent (value undef).
sub _header_lines {
    my ($text) = @_;
    my @out;
    for my $line (split /\n/, $text // '') {
        $line =~ s/^\s+|\s+$//g;
        next unless length $line;
        if ($line =~ s/^!\s*//) {
            push @out, [$line, undef];
        } else {
            my ($k, $v) = split /\s*:\s*/, $line, 2;
            push @out, [$k, $v // ''];
        }
    }
    return @out;
}

my %BodyFilters = (
    md5_hex  => sub { require Digest::MD5; Digest::MD5::md5_hex($_[0]) },
    sha1_hex => sub { require Digest::SHA; Digest::SHA::sha1_hex($_[0]) },
    uc       => sub { uc $_[0] },
    lc       => sub { lc $_[0] },
    ucfirst  => sub { ucfirst $_[0] },
    lcfirst  => sub { lcfirst $_[0] },
    length   => sub { length $_[0] },
);

# --- response_body_filters: names of builtin filters or code refs
sub _apply_body_filters {
    my ($block, $res, $idx) = @_;
    my $filters = $block->response_body_filters;
    return unless defined $filters && defined $res->content;
    my $name = $block->name;

    if (!ref $filters) {
        $filters =~ s/^\s+|\s+$//g;
        $filters = [ split /\s+/, $filters ];
    } elsif (ref $filters ne 'ARRAY') {
        $filters = [ $filters ];
    }
    if (ref $filters->[0] eq 'ARRAY') {   # one list per request
        $filters = $filters->[$idx];
        CKVCompat::Runner::bail_out("$name - no response_body_filters for"
                                    . " request $idx") unless $filters;
    }

    my $body = $res->content;
    for my $f (@$filters) {
        my $code = ref $f eq 'CODE' ? $f : $BodyFilters{$f}
            or CKVCompat::Runner::bail_out("$name - unknown filter, \"$f\","
                   . " specified in the --- response_body_filters section");
        $body = $code->($body);
    }
    $res->content($body);
}

sub _check_body {
    my ($block, $res, $idx, $rep, $need_array, $iv) = @_;
    my $name = $block->name;
    my $port = _runner_port();
    my $client_port = $CKVCompat::Runner::ServerPortForClient;

    my $content = $res ? $res->content : undef;
    if (defined $content) {
        # artefacts of some old proxies that Test::Nginx strips as well
        $content =~ s/^TE: deflate,gzip;q=0\.3\r\n//gm;
        $content =~ s/^Connection: TE, close\r\n//gm;
    }

    if (defined $block->response_body || defined $block->response_body_eval) {
        if (defined $block->response_body_json_sort && defined $content) {
            require JSON::PP;
            my $js = JSON::PP->new->canonical(1)->loose(1);
            my $obj = eval { $js->decode($content) };
            $content = $js->encode($obj) . "\n" if defined $obj;
        }

        my $expected;
        if ($block->response_body_eval) {
            $expected = eval $iv->(scalar $block->response_body_eval);
            warn $@ if $@;
        } else {
            $expected = $iv->(scalar $block->response_body);
        }
        if ($block->charset && defined $expected) {
            Encode::from_to($expected, 'UTF-8', $block->charset);
        }
        if (defined $expected && !ref $expected) {
            $expected =~ s/\$ServerPort\b/$port/g;
            $expected =~ s/\$ServerPortForClient\b/$client_port/g;
            $expected = CKVCompat::Runner::expand_env_in_text($expected,
                                                              $name);
        }

        my $what = "(repeated req $rep, req $idx)";
        if (ref $expected) {
            Test::More::like($content, $expected,
                             "$name - response_body - like $what");
        } else {
            Test::More::is($content, $expected,
                "$name - response_body - response is expected $what");
        }

    } elsif (defined $block->response_body_like
             || defined $block->response_body_unlike)
    {
        my $like = defined $block->response_body_like;
        my $pat = $iv->(scalar($like ? $block->response_body_like
                              : $block->response_body_unlike));
        $pat =~ s/\$ServerPort\b/$port/g;
        $pat =~ s/\$ServerPortForClient\b/$client_port/g;
        my $summary = $content // '';
        $summary =~ s/^\s+|\s+$//g;
        $summary =~ s/\s+/ /g;
        if ($like) {
            Test::More::like($content, qr/$pat/s,
                "$name - response_body_like - response is expected ($summary)");
        } else {
            Test::More::unlike($content, qr/$pat/s,
                "$name - response_body_unlike - response is expected ($summary)");
        }
    }
}

# ---------------------------------------------------------------------------
# Error log checks
# ---------------------------------------------------------------------------

# error_log: one pass per pattern found in the new log lines, one fail per
# pattern not found.
sub _expect_found {
    my ($name, $lines, $pats, $label, $suffix) = @_;
    for my $line (@$lines) {
        for my $p (@$pats) {
            next unless defined $p && _matches($line, $p);
            Test::More::pass("$name - pattern \"$p\" matches a line in"
                             . " error.log$suffix");
            undef $p;
        }
    }
    for my $p (grep { defined } @$pats) {
        Test::More::fail("$name - pattern \"$p\" should match a line in"
                         . " error.log$suffix");
    }
}

# no_error_log: one fail per matching line (the plan then no longer adds
# up, as with Test::Nginx), one pass per pattern never matched.
sub _expect_absent {
    my ($name, $lines, $pats, $suffix) = @_;
    my %seen;
    for my $i (0 .. $#$lines) {
        my $line = $lines->[$i];
        for my $p (@$pats) {
            next unless defined $p && _matches($line, $p);
            Test::More->builder->no_ending(1) if $seen{$p}++;
            my $context = join '', @$lines[$i + 1 .. min($i + 9, $#$lines - 1)];
            Test::More::fail("$name - pattern \"" . _fmt($p) . "\" should not"
                . " match any line in error.log but matches line \""
                . _fmt($line) . "\"$suffix\n" . $context);
        }
    }
    for my $p (@$pats) {
        next if !defined $p || $seen{$p};
        Test::More::pass("$name - pattern \"" . _fmt($p) . "\" does not match"
                         . " a line in error.log$suffix");
    }
}

sub min { $_[0] < $_[1] ? $_[0] : $_[1] }

sub check_error_log {
    my ($block, $rep) = @_;
    my $name = $block->name;
    my $lines;
    my $suffix = " (req $rep)";

    # --- grep_error_log / --- grep_error_log_out
    my $grep = $block->grep_error_log;
    $grep = $grep->[$rep] if ref $grep eq 'ARRAY';
    if (defined $grep) {
        my $expected = $block->grep_error_log_out;
        CKVCompat::Runner::bail_out("$name - No --- grep_error_log_out defined"
            . " but --- grep_error_log is defined") unless defined $expected;
        $expected = $expected->[$rep] if ref $expected eq 'ARRAY';
        $expected = CKVCompat::Runner::expand_env_in_text($expected, $name)
            unless ref $expected;

        $lines ||= CKVCompat::Runner::error_log_data();
        my $got = '';
        for my $line (@$lines) {
            my $m;
            if (ref $grep) {
                $m = $& if $line =~ $grep;
            } else {
                $m = $grep if index($line, $grep) >= 0;
            }
            $got .= "$m\n" if defined $m && $m !~ /\n/;
        }
        if (ref $expected eq 'Regexp') {
            Test::More::like($got, $expected, "$name - grep_error_log_out$suffix");
        } else {
            Test::More::is($got, $expected, "$name - grep_error_log_out$suffix");
        }
    } elsif (defined $block->grep_error_log_out) {
        CKVCompat::Runner::bail_out("$name - No --- grep_error_log defined but"
                                    . " --- grep_error_log_out is defined");
    }

    my @watch = (['writing a global lua variable', 'writing a global lua variable'],
                 ['[alert', qr/\[alert\]/], ['[crit', qr/\[crit\]/],
                 ['[emerg', qr/\[emerg\]/]);

    for my $sec (qw(error_log no_error_log)) {
        my $val = $block->$sec;
        next unless defined $val;
        # a section about alert/crit/... turns the generic warning off
        @watch = grep { !_mentions($val, $_->[0]) } @watch;
        $lines ||= CKVCompat::Runner::error_log_data();
        if ($sec eq 'error_log') {
            _expect_found($name, $lines, _patterns($val), $sec, $suffix);
        } else {
            _expect_absent($name, $lines, _patterns($val), $suffix);
        }
    }

    # like Test::Nginx, point out serious log lines nobody asked about
    $lines ||= CKVCompat::Runner::error_log_data();
    for my $w (@watch) {
        for my $line (@$lines) {
            warn "WARNING: $name - " . _fmt($line) . "\n"
                if _matches($line, $w->[1]);
        }
    }
    for my $line (@$lines) {
        next unless $line =~ /\bAssertion .*?failed\b/;
        Test::More->builder->no_ending(1);
        chomp(my $l = $line);
        Test::More::fail("$name - $l\n");
    }
}

# Checks the lines logged since the last check, which now include what
# nginx wrote while shutting down.  $dry_run (TEST_NGINX_NO_CLEAN: nginx is
# left running) turns every assertion into a skip.
sub check_shutdown_error_log {
    my ($block, $dry_run) = @_;
    my $name = $block->name;

    my @secs = grep { defined $block->$_ }
               qw(shutdown_error_log no_shutdown_error_log);
    return unless @secs;

    if ($dry_run) {
        my $n = 0;
        $n += @{ _patterns(scalar $block->$_) } for @secs;
        SKIP: { Test::More::skip("$name - shutdown_error_log - tests skipped"
                                 . " due to dry_run", $n) if $n }
        return;
    }

    my $lines = CKVCompat::Runner::error_log_data();
    if (defined $block->shutdown_error_log) {
        _expect_found($name, $lines, _patterns(scalar $block->shutdown_error_log),
                      'shutdown_error_log', '');
        for my $line (@$lines) {
            next unless $line =~ /\bAssertion .*? failed\.$/;
            Test::More->builder->no_ending(1);
            chomp(my $l = $line);
            Test::More::fail("$name - $l");
        }
    }
    if (defined $block->no_shutdown_error_log) {
        _expect_absent($name, $lines,
                       _patterns(scalar $block->no_shutdown_error_log), '');
    }
}

1;
