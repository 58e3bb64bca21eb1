package CKVCompat::HTTP;

# HTTP/1.1 client side of the ckv compat runner: builds a request from a
# "--- request" line, sends it over a plain TCP socket (Connection: close)
# and decodes the response (Content-Length or chunked), as Test::Nginx does.
#
# Written for this project; nothing here is copied from test-nginx.

use strict;
use warnings;

use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use HTTP::Response ();
use IO::Select ();
use IO::Socket::INET ();
use Time::HiRes qw(sleep);

# "METHOD [URI [VERSION]]" (leading blank and "# comment" lines skipped)
# -> the raw request. Dies with a message on anything else.
sub build_request {
    my ($text) = @_;
    die "request empty\n" unless defined $text;
    die "requests split into packets are not supported by the ckv compat"
        . " runner\n" if ref $text;
    1 while $text =~ s/^\s*\#[^\n]+\s+|^\s+//s;
    $text =~ s/\s+\z//;
    die "request bodies are not supported by the ckv compat runner\n"
        if $text =~ /\n/;
    my @words = split ' ', $text;
    die "Request line is not valid. Should be 'meth [url [version]]' but got"
        . " \"$text\".\n" if @words < 1 || @words > 3;
    my ($method, $uri, $version) = @words;
    $uri     //= '/';
    $version //= 'HTTP/1.1';
    return "$method $uri $version\r\nHost: localhost\r\nConnection: close\r\n\r\n";
}

# Sends $raw to 127.0.0.1:$port (retrying the connect while nginx starts)
# and reads until the server closes. Returns ($response_bytes, $error);
# $error says the connection failed or nothing arrived for $timeout s.
sub send_request {
    my ($port, $raw, $timeout) = @_;
    my $sock;
    for my $try (1 .. 50) {
        $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                      Proto => 'tcp', Timeout => $timeout);
        last if $sock;
        sleep($try < 10 ? 0.02 * $try : 0.2);
    }
    return (undef, "ERROR: cannot connect to 127.0.0.1:$port: $!") unless $sock;

    $sock->blocking(0);
    my $sel = IO::Select->new($sock);
    my ($resp, $off) = ('', 0);
    while (1) {
        my $writing = $off < length $raw;
        my ($r, $w) = IO::Select->select($sel, $writing ? $sel : undef, undef, $timeout);
        if (!$r && !$w) {
            next if $! == EINTR;
            close $sock;
            return ($resp, 'ERROR: client socket timed out');
        }
        if ($w && @$w) {
            my $n = syswrite($sock, $raw, length($raw) - $off, $off);
            $off += $n if defined $n;
        }
        if ($r && @$r) {
            my $n = sysread($sock, my $chunk, 16384);
            if (!defined $n) {
                next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
                last;
            }
            last if $n == 0;
            $resp .= $chunk;
        }
    }
    close $sock;
    return ($resp, undef);
}

# Parses a response. Returns ($res, $error); $res is undef on error.
sub parse_response {
    my ($raw) = @_;
    my $res = HTTP::Response->parse($raw);
    my $code = $res->code;
    $res->code(undef) if defined $code && $code !~ /^\d+$/;

    my $body = $res->content // '';
    my $te = $res->header('Transfer-Encoding');
    if (defined $te && $te eq 'chunked') {
        my ($decoded, $pos) = ('', 0);
        while (1) {
            pos($body) = $pos;
            return (undef, "invalid chunked body received: " . substr($body, $pos))
                unless $body =~ /\G[ \t]*([0-9A-Fa-f]+)[^\r\n]*\r\n/gc;
            my $size = hex $1;
            $pos = pos($body);
            last if $size == 0;
            return (undef, "invalid chunked data received (not enough octets"
                           . " for the data section)")
                if $pos + $size + 2 > length $body;
            $decoded .= substr $body, $pos, $size;
            $pos += $size + 2;
        }
        $res->content($decoded);
    } elsif (defined(my $len = $res->header('Content-Length'))) {
        $res->content(substr $body, 0, $len) if $len =~ /^\d+$/ && length $body > $len;
    }
    return ($res, undef);
}

1;
