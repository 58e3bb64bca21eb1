package CKVCompat::HTTP;

# HTTP/1.x client side of the ckv compat test runner: turns the request
# sections of a test block into raw HTTP requests, sends them to nginx over
# a plain TCP socket and splits/decodes the raw responses.
#
# Written for this project; it follows the observable behaviour of
# Test::Nginx::Socket (header defaults, body trimming, pipelining, chunked
# decoding) so that the same .t files give the same results under both.

use strict;
use warnings;

use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use HTTP::Response ();
use IO::Select ();
use IO::Socket::INET ();
use Time::HiRes qw(sleep time);

# ---------------------------------------------------------------------------
# Request building
# ---------------------------------------------------------------------------

# Parses a "--- more_headers" text into raw header lines ("K: v\r\n") and
# tells whether it asks for a chunked request body.
sub parse_more_headers {
    my ($text) = @_;
    $text = '' unless defined $text;

    my ($out, $chunked) = ('', 0);
    for my $line (split /\n+/, $text) {
        next if $line =~ /^\s*#/;
        my ($key, $val) = split /:\s*/, $line, 2;
        next unless defined $key;
        $val = '' unless defined $val;
        $chunked = 1 if lc($key) eq 'transfer-encoding' && $val eq 'chunked';
        $out .= "$key: $val\r\n";
    }
    return ($out, $chunked);
}

# Builds one raw request from the "METHOD [URI [VERSION]]\n[body]" notation.
# $hdr/$chunked come from parse_more_headers; $conn is the default value of
# the Connection header ("close", or "keep-alive" inside a pipeline).
# Returns the request string, or dies with a message on a bad request line.
sub build_request {
    my ($text, $hdr, $chunked, $conn) = @_;

    die "Request line should be non-empty\n"
        unless defined $text && length $text;

    my ($line, $body);
    if ($text =~ /\A([^\n]*\n?)(.*)\z/s) {
        ($line, $body) = ($1, $2);
    }
    die "Request line should be non-empty\n" unless length $line;

    # at most three whitespace-separated words on the request line
    my @words = split ' ', $line;
    if (@words < 1 || @words > 3) {
        die "Request line is not valid. Should be 'meth [url [version]]'"
            . " but got \"$line\".\n";
    }
    my ($method, $uri, $version) = @words;
    $uri     = '/'        unless defined $uri;
    $version = 'HTTP/1.1' unless defined $version;

    # A non-empty body gets trimmed and a Content-Length, unless the test
    # sends it chunked or sets Content-Length itself.
    my $len_header = '';
    if (!$chunked && length $body && $hdr !~ /(?:^|\n)Content-Length:/) {
        $body =~ s/^\s+|\s+$//gs;
        $len_header = 'Content-Length: ' . length($body) . "\r\n";
    }

    $hdr =~ s/(?<!\r)\n/\r\n/g;

    my $headers = '';
    $headers .= "Host: $CKVCompat::Runner::ServerName\r\n"
        unless $hdr =~ /(?:^|\n)Host:/i;
    $headers .= "Connection: $conn\r\n"
        unless $hdr =~ /(?:^|\n)Connection/i;
    $headers .= $hdr . $len_header . "\r\n";

    return "$method $uri $version\r\n$headers$body";
}

# Picks the more_headers text that applies to the $i-th request.
sub _headers_for {
    my ($more, $i, $what) = @_;
    if (ref $more eq 'ARRAY') {
        my $h = $more->[$i];
        die "--- more_headers lacks data for the $what\n" unless defined $h;
        return parse_more_headers($h);
    }
    return parse_more_headers($more);
}

# Returns a list of requests for the block; each request is an array ref of
# packets ({ value => bytes, delay_before => secs? }).  Dies on bad input.
sub requests_from_block {
    my ($block, $expand) = @_;

    my $raw = $block->raw_request;
    if (defined $raw) {
        if (ref $raw eq 'ARRAY') {
            return [[ map { { value => $_ } } @$raw ]];
        }
        return [[ { value => $raw } ]];
    }

    my $more = $block->more_headers;
    $more = '' unless defined $more;

    if (my $reqs = $block->pipelined_requests) {
        die "invalid entries in --- pipelined_requests\n"
            unless ref $reqs eq 'ARRAY';
        my $all = '';
        for my $i (0 .. $#$reqs) {
            my ($hdr, $chunked) = _headers_for($more, $i,
                                               "pipelined request $i");
            my $conn = $i == $#$reqs ? 'close' : 'keep-alive';
            $all .= build_request($expand->($reqs->[$i]), $hdr, $chunked,
                                  $conn);
        }
        return [[ { value => $all } ]];
    }

    my $request;
    if (defined $block->request_eval) {
        $request = eval $block->request_eval;
        warn $@ if $@;
    } else {
        $request = $block->request;
    }
    die "request empty\n" unless defined $request;

    if (!ref $request) {
        # leading blank lines and "# comment" lines are not part of it
        1 while $request =~ s/^\s*\#[^\n]+\s+|^\s+//s;
        my ($hdr, $chunked) = _headers_for($more, 0, 'request');
        return [[ { value => build_request($request, $hdr, $chunked,
                                           'close') } ]];
    }

    die "invalid --- request: MUST be string or array of requests\n"
        unless ref $request eq 'ARRAY';

    my @list;
    for my $i (0 .. $#$request) {
        my $one = $request->[$i];
        die "requests split into packets are not supported by the ckv"
            . " compat runner\n" if ref $one;
        my ($hdr, $chunked) = _headers_for($more, $i, "${i}th request");
        push @list, [ { value => build_request($one, $hdr, $chunked,
                                               'close') } ];
    }
    die "request empty\n" unless @list;
    return \@list;
}

# ---------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------

# Connects to nginx, retrying while it is still starting up.  Returns the
# socket or undef (with $! set) after giving up.
sub connect_server {
    my ($addr, $port, $timeout, $step) = @_;
    my $tries = 50;
    for my $try (1 .. $tries) {
        my $sock = IO::Socket::INET->new(
            PeerAddr => $addr,
            PeerPort => $port,
            Proto    => 'tcp',
            Timeout  => $timeout,
        );
        return $sock if $sock;
        last if $try == $tries;
        my $wait = ($step + $step * $try) * $try / 2;
        $wait = 1 if $wait > 1;
        sleep $wait;
    }
    return undef;
}

# Sends the packets of one request on $sock and reads until the peer closes
# the connection or nothing happens for $timeout seconds.
# Returns ($response_bytes, $timed_out).
sub exchange {
    my ($sock, $packets, $timeout, %opt) = @_;

    $sock->blocking(0);
    my $sel  = IO::Select->new($sock);
    my @todo = @$packets;
    my $resp = '';
    my ($buf, $off) = (undef, 0);
    my $first = 1;
    my $writing = 1;

    while (1) {
        if ($writing && !defined $buf) {
            my $pkt = shift @todo;
            if (!$pkt) {
                $writing = 0;
                if (defined $opt{shutdown}) {
                    shutdown($sock, $opt{shutdown});
                }
            } else {
                # the first packet goes out at once; later ones may wait
                if (!$first) {
                    my $delay = defined $pkt->{delay_before}
                              ? $pkt->{delay_before} : $opt{middle_delay};
                    sleep $delay if $delay;
                }
                ($buf, $off, $first) = ($pkt->{value}, 0, 0);
            }
        }

        my ($r, $w) = IO::Select->select($sel, $writing ? $sel : undef,
                                         undef, $timeout);
        if (!$r && !$w) {
            next if $! == EINTR;
            return ($resp, 1);    # nothing happened within $timeout
        }

        if ($w && @$w && defined $buf) {
            my $n = syswrite($sock, $buf, length($buf) - $off, $off);
            if (!defined $n) {
                if ($! != EAGAIN && $! != EWOULDBLOCK && $! != EINTR) {
                    warn "write failed: $!\n";
                    $resp = "write failed: $!" unless length $resp;
                    return ($resp, 0);
                }
            } else {
                $off += $n;
                undef $buf if $off >= length $buf;
            }
        }

        if ($r && @$r) {
            my $n = sysread($sock, my $chunk, 16384);
            if (!defined $n) {
                next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
                warn "WARNING: HTTP response read failure: $!\n";
                return ($resp, 0);
            }
            return ($resp, 0) if $n == 0;    # connection closed
            $resp .= $chunk;
        }
    }
}

# ---------------------------------------------------------------------------
# Response parsing
# ---------------------------------------------------------------------------

# Parses the first response found in $raw.  Returns ($res, $raw_headers,
# $left_over_bytes, $error); $res is undef when $error is set.
sub parse_response {
    my ($raw, $head_req) = @_;

    my $raw_headers = $raw =~ /\A(.*?\r\n)\r\n/s ? $1 : '';
    my $res = HTTP::Response->parse($raw);

    my $code = $res->code;
    if (defined $code && $code !~ /^\d+$/) {
        $res->code(undef);
        $code = undef;
    }
    return ($res, $raw_headers, undef) if $code && ($code == 304 || $code == 101);

    my $left;
    my $te  = $res->header('Transfer-Encoding');
    my $len = $res->header('Content-Length');

    if (defined $te && $te eq 'chunked') {
        my $body = $res->content;
        $body = '' unless defined $body;
        my @trailers = $res->header('Trailer');
        my ($decoded, $pos) = ('', 0);
        while (1) {
            pos($body) = $pos;
            if ($body !~ /\G[ \t]*([0-9A-Fa-f]+)[ \t]*\r\n/gc) {
                my $rest = substr $body, $pos;
                return (undef, $raw_headers, undef,
                        length $rest ? "invalid chunked body received: $rest"
                                     : "no last chunk found - $body");
            }
            my $size = hex $1;
            $pos = pos($body);
            if ($size == 0) {
                for my $t (@trailers) {
                    pos($body) = $pos;
                    return (undef, $raw_headers, undef,
                            "invalid trailer data received (expected $t).")
                        unless $body =~ /\G\Q$t\E: [^\n]*\r\n/gc;
                    $pos = pos($body);
                }
                return (undef, $raw_headers, undef,
                        "invalid chunked data received (expected CRLF).")
                    unless substr($body, $pos, 2) eq "\r\n";
                $pos += 2;
                $left = substr $body, $pos if $pos < length $body;
                last;
            }
            return (undef, $raw_headers, undef, "invalid chunked data"
                    . " received (not enough octets for the data section)")
                if $pos + $size > length $body;
            $decoded .= substr $body, $pos, $size;
            $pos += $size;
            return (undef, $raw_headers, undef,
                    "invalid chunked data received (expected CRLF).")
                unless substr($body, $pos, 2) eq "\r\n";
            $pos += 2;
        }
        $res->content($decoded);

    } elsif (defined $len && $len =~ /^\d+$/) {
        my $body = $res->content;
        $body = '' unless defined $body;
        if (length $body < $len) {
            warn "WARNING: response body truncated: $len expected, but got "
                 . length($body) . "\n" unless $head_req;
        } elsif (length $body > $len) {
            $left = substr $body, $len;
            $res->content(substr $body, 0, $len);
        }
    }

    return ($res, $raw_headers, $left);
}

1;
