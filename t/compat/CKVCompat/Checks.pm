package CKVCompat::Checks;

# Assertions of the ckv compat runner. Each check emits exactly as many
# Test::More assertions, with the same names, as Test::Nginx::Socket does
# for the same section, so "plan tests => ..." lines hold under both:
#
#   per request:  status code (always 1), response_body or
#                 response_body_like (1)
#   per request, error log:  grep_error_log (1), error_log (1 per
#                 pattern), no_error_log (1 per pattern; +1 per extra
#                 matching line)
#   per block, after nginx stopped: shutdown_error_log and
#                 no_shutdown_error_log (1 per pattern)
#
# Written for this project; nothing here is copied from test-nginx.

use strict;
use warnings;

use Test::More ();

# An error_log-like section value as a fresh list of patterns: a string is
# one pattern per line, a qr// is one pattern, an array is copied.
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
    return index("$val", $needle) >= 0 unless ref $val eq 'ARRAY';
    for my $v (@$val) { return 1 if _mentions($v, $needle) }
    return 0;
}

# A log line or pattern, printable in a test name.
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
# Response
# ---------------------------------------------------------------------------

sub check_response {
    my ($block, $res, $idx, $rep, $need_array) = @_;
    my $name = $block->name;
    my $iv = sub {
        CKVCompat::Runner::indexed_value($name, $_[0], $idx, $need_array);
    };

    my $code = ($res && $res->code) || '';
    my $want = defined $block->error_code ? $iv->(scalar $block->error_code) : 200;
    Test::More::is($code, $want, "$name - status code ok");

    my $content = $res ? $res->content : undef;
    if (defined $block->response_body) {
        my $expected = $iv->(scalar $block->response_body);
        my $what = "(repeated req $rep, req $idx)";
        if (ref $expected) {
            Test::More::like($content, $expected, "$name - response_body - like $what");
        } else {
            Test::More::is($content, $expected,
                           "$name - response_body - response is expected $what");
        }
    } elsif (defined $block->response_body_like) {
        my $pat = $iv->(scalar $block->response_body_like);
        (my $summary = $content // '') =~ s/^\s+|\s+$//g;
        $summary =~ s/\s+/ /g;
        Test::More::like($content, qr/$pat/s,
                         "$name - response_body_like - response is expected ($summary)");
    }
}

# ---------------------------------------------------------------------------
# Error log
# ---------------------------------------------------------------------------

# error_log: one pass per pattern found, one fail per pattern not found.
sub _expect_found {
    my ($name, $lines, $pats, $suffix) = @_;
    for my $line (@$lines) {
        for my $p (@$pats) {
            next unless defined $p && _matches($line, $p);
            Test::More::pass("$name - pattern \"$p\" matches a line in error.log$suffix");
            undef $p;
        }
    }
    for my $p (grep { defined } @$pats) {
        Test::More::fail("$name - pattern \"$p\" should match a line in error.log$suffix");
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
            my $last = $i + 9 < $#$lines - 1 ? $i + 9 : $#$lines - 1;
            my $context = join '', @$lines[$i + 1 .. $last];
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

sub _check_grep {
    my ($block, $rep, $lines, $suffix) = @_;
    my $name = $block->name;
    my $grep = $block->grep_error_log;
    my $expected = $block->grep_error_log_out;
    CKVCompat::Runner::bail_out("$name - No --- grep_error_log_out defined but"
                                . " --- grep_error_log is defined")
        unless defined $expected;
    $grep = $grep->[$rep] if ref $grep eq 'ARRAY';
    $expected = $expected->[$rep] if ref $expected eq 'ARRAY';

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
}

sub check_error_log {
    my ($block, $rep) = @_;
    my $name = $block->name;
    my $suffix = " (req $rep)";
    my $lines = CKVCompat::Runner::error_log_data();

    if (defined $block->grep_error_log) {
        _check_grep($block, $rep, $lines, $suffix);
    } elsif (defined $block->grep_error_log_out) {
        CKVCompat::Runner::bail_out("$name - No --- grep_error_log defined but"
                                    . " --- grep_error_log_out is defined");
    }

    # like Test::Nginx: point out serious lines no section asked about
    my @watch = (['writing a global lua variable', 'writing a global lua variable'],
                 ['[alert', qr/\[alert\]/], ['[crit', qr/\[crit\]/],
                 ['[emerg', qr/\[emerg\]/]);
    if (defined(my $val = $block->error_log)) {
        @watch = grep { !_mentions($val, $_->[0]) } @watch;
        _expect_found($name, $lines, _patterns($val), $suffix);
    }
    if (defined(my $val = $block->no_error_log)) {
        @watch = grep { !_mentions($val, $_->[0]) } @watch;
        _expect_absent($name, $lines, _patterns($val), $suffix);
    }
    for my $w (@watch) {
        for my $line (@$lines) {
            warn "WARNING: $name - " . _fmt($line) . "\n" if _matches($line, $w->[1]);
        }
    }
    for my $line (@$lines) {
        next unless $line =~ /\bAssertion .*?failed\b/;
        Test::More->builder->no_ending(1);
        chomp(my $l = $line);
        Test::More::fail("$name - $l\n");
    }
}

# What nginx logged while it stopped (after the block's last check).
sub check_shutdown_error_log {
    my ($block) = @_;
    my $name = $block->name;
    my $found  = $block->shutdown_error_log;
    my $absent = $block->no_shutdown_error_log;
    return unless defined $found || defined $absent;

    my $lines = CKVCompat::Runner::error_log_data();
    _expect_found($name, $lines, _patterns($found), '') if defined $found;
    _expect_absent($name, $lines, _patterns($absent), '') if defined $absent;
}

1;
