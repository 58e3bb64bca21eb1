#!/usr/bin/perl
# The demo's HTTP client (core Perl only): sends traffic through the router
# and measures how long a Consul change takes to reach nginx's workers.
#
#   client.pl workers ROUTER N               wait until N worker pids answered; print their roles
#   client.pl ready   ROUTER SVC COUNT N      wait until N workers see COUNT nodes of SVC
#   client.pl traffic ROUTER SVC REQUESTS     requests through /svc/SVC/, per backend
#   client.pl change  ROUTER CONSUL SVC put|delete HOST:PORT [VALUE] N
#
# ROUTER and CONSUL are host:port. Every request uses a new connection, so
# the kernel (listen ... reuseport) spreads them over the workers.
use strict;
use warnings;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

sub http {
    my ($addr, $method, $path, $body) = @_;
    $body //= '';
    my $s = IO::Socket::INET->new(PeerAddr => $addr, Timeout => 5)
        or die "connect $addr: $!\n";
    print $s "$method $path HTTP/1.0\r\nHost: $addr\r\nContent-Length: "
           . length($body) . "\r\n\r\n$body";
    local $/;
    my $resp = <$s> // '';
    close $s;
    my ($status) = $resp =~ m{^HTTP/\S+ (\d+)};
    my ($head, $rbody) = split /\r\n\r\n/, $resp, 2;
    my ($worker) = ($head // '') =~ /^X-Ckv-Worker: (\d+)/mi;
    return ($status // 0, $rbody // '', $worker);
}

# "pid=N nodes=a,b" -> (N, [a, b])
sub nodes_of {
    my ($router, $svc) = @_;
    my ($status, $body) = http($router, 'GET', "/ckv/nodes/$svc");
    die "GET /ckv/nodes/$svc: $status $body" unless $status == 200;
    my ($pid, $list) = $body =~ /^pid=(\d+) nodes=(\S*)/ or die "bad answer: $body";
    return ($pid, [split /,/, $list]);
}

sub ms { sprintf '%.1f ms', $_[0] * 1000 }

my $cmd = shift // '';

if ($cmd eq 'workers') {
    my ($router, $n) = @ARGV;
    my %role;
    my $deadline = time + 5;
    while (keys %role < $n) {
        die "only " . scalar(keys %role) . " of $n workers answered\n" if time > $deadline;
        my ($status, $body) = http($router, 'GET', '/ckv/role');
        $role{$1} = $2 if $body =~ /^pid=(\d+) role=(\S+)/;
    }
    print join(', ', map { "worker $_ $role{$_}" } sort { $a <=> $b } keys %role), "\n";
}
elsif ($cmd eq 'ready') {
    my ($router, $svc, $count, $n) = @ARGV;
    my $start = time;
    my %ok;
    while (keys %ok < $n) {
        die "workers did not see $count nodes of $svc within 5 s\n" if time > $start + 5;
        my ($pid, $nodes) = nodes_of($router, $svc);
        $ok{$pid} = 1 if @$nodes == $count;
        sleep 0.001 unless $ok{$pid};
    }
    printf "%s\n", ms(time - $start);
}
elsif ($cmd eq 'traffic') {
    my ($router, $svc, $requests) = @ARGV;
    my (%backend, %worker);
    for (1 .. $requests) {
        my ($status, $body, $w) = http($router, 'GET', "/svc/$svc/");
        my $who = $body =~ /^backend (\d+)/ ? $1 : "HTTP $status";
        $backend{$who}++;
        $worker{$w}++ if $w;
    }
    print join(', ', map { "$_ x$backend{$_}" } sort keys %backend),
          "  (workers: ", join(' ', map { "$_ x$worker{$_}" } sort keys %worker), ")\n";
}
elsif ($cmd eq 'change') {
    my ($router, $consul, $svc, $op, $node, $value, $n) = @ARGV;
    my $adding = $op eq 'put';

    # The workers' pids, so that we know when every one of them has it.
    my %pids;
    my $deadline = time + 5;
    while (keys %pids < $n) {
        die "only " . scalar(keys %pids) . " of $n workers answered\n" if time > $deadline;
        my ($pid) = nodes_of($router, $svc);
        $pids{$pid} = 1;
    }

    my ($status, $body) = http($consul, uc $op, "/v1/kv/upstreams/$svc/$node",
                               $adding ? $value : '');
    my $t0 = time;     # Consul's answer to the write is in
    die "$op $node: $status $body\n" unless $status == 200 && $body =~ /true/;

    my (%seen, $served);
    my ($port) = $node =~ /:(\d+)$/;
    $deadline = $t0 + 5;
    while (keys %seen < $n || ($adding && !defined $served)) {
        die "change not visible in every worker after 5 s\n" if time > $deadline;
        my ($pid, $nodes) = nodes_of($router, $svc);
        my $has = grep { $_ eq $node } @$nodes;
        $seen{$pid} //= time - $t0 if $has == ($adding ? 1 : 0);
        if ($adding && !defined $served) {
            my (undef, $b) = http($router, 'GET', "/svc/$svc/");
            $served = time - $t0 if $b =~ /^backend $port\b/;
        }
    }
    my ($last) = sort { $b <=> $a } values %seen;
    if ($adding) {
        printf "in every worker after %s, first request answered by it after %s\n",
               ms($last), ms($served);
    } else {
        printf "gone from every worker after %s\n", ms($last);
    }
}
else {
    die "usage: see the top of $0\n";
}
