# The shared directory at the nginx level, with 2 workers: a group directory
# planted by another user, a full tmpfs at start and a tmpfs that fills up
# later. Sharing problems never stop discovery: the workers run standalone
# (one warning naming the path) or tell that they serve stale data, and catch
# up once the problem is gone. Needs root (mount, chown); runs itself in a
# private mount namespace.
use strict;
use warnings;

BEGIN {
    if ($> != 0) {
        print "1..0 # SKIP needs root (tmpfs mounts and a planted directory of another uid)\n";
        exit 0;
    }
    if (!$ENV{CKV_T070_MNTNS}) {
        $ENV{CKV_T070_MNTNS} = 1;
        exec('unshare', '-m', '--propagation', 'private', $^X, (map { "-I$_" } @INC), $0, @ARGV)
            or die "unshare: $!";
    }
}

use lib 't/lib';
use Test::Nginx::Socket::Lua;
use TestCKV;
use File::Temp qw(tempdir);

consul_double(8500);

our $Base = tempdir('ckv-t070-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $Base;

# A group directory another uid made, open to all, with a forged snapshot.
our $Planted = "$Base/planted";
mkdir $Planted;
chmod 01777, $Planted;
mkdir "$Planted/ckv.0.t070a";
chmod 0777, "$Planted/ckv.0.t070a";
open(my $fh, '>', "$Planted/ckv.0.t070a/snap.1") or die;
print $fh "CKVSNAP1 from the attacker";
close $fh;
chown 65534, 65534, "$Planted/ckv.0.t070a", "$Planted/ckv.0.t070a/snap.1";

sub tmpfs {
    my ($dir, $size) = @_;
    mkdir $dir;
    system('mount', '-t', 'tmpfs', '-o', "size=$size,mode=1777", 'tmpfs', $dir) == 0
        or die "mount tmpfs on $dir";
}

# Full before nginx starts (Docker's 64 MB /dev/shm, full).
our $Full = "$Base/full";
tmpfs($Full, '64k');
open($fh, '>', "$Full/filler") or die;
print $fh ("x" x 4096) for 1 .. 64;
close $fh;

# Fills up while nginx runs (by the test itself).
our $Later = "$Base/later";
tmpfs($Later, '1m');

END {
    system('umount', $Full) if $Full;
    system('umount', $Later) if $Later;
}

workers(2);
master_on();
repeat_each(1);
no_shuffle();

# 2 per block (status, body) + one per error_log / no_error_log pattern.
plan tests => repeat_each() * (blocks() * 2 + 7);
run_tests();

__DATA__

=== TEST 1: a planted group directory is refused: standalone, Consul's nodes, one warning
--- http_config eval
"
    lua_shared_dict ckv_t 1m;
    init_worker_by_lua_block {
        local t = require('ckvtest')
        local kv = assert(require('resty.consul_kv').new({
            servers = { 'http://127.0.0.1:8500' }, prefix = 't070a',
            timeout = { wait = 2 },
            share = { dir = '$::Planted', group = 't070a' },
        }))
        t.client = kv
        t.record_per_worker('ckv_t', 'web', function()
            return t.show(kv:nodes('http://127.0.0.1:8500/v1/kv/t070a/web/'))
        end)
        t.record_per_worker('ckv_t', 'role', function() return kv:stats().role end)
    }
"
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            t.put(8500, "t070a/web/10.0.0.1:80", "{}")
            ngx.say("both workers: ", (t.wait_workers("ckv_t", "web", "10.0.0.1:80 w=1", 2)))
            ngx.say("roles: ", (t.wait_workers("ckv_t", "role", "standalone", 2)))
            local st = t.client:stats()
            ngx.say("share_error names the directory: ",
                    st.share_error:find("/planted/ckv.0.t070a", 1, true) ~= nil)
            ngx.say("share_error says why: ", st.share_error:find("owned by uid 65534", 1, true) ~= nil)
        }
    }
--- response_body
both workers: true
roles: true
share_error names the directory: true
share_error says why: true
--- error_log eval
qr/\[warn\].*ckv: not sharing a watch: .*planted\/ckv\.0\.t070a is owned by uid 65534.*standalone/
--- no_error_log
[error]



=== TEST 2: a full share.dir at start: standalone, no crash
--- http_config eval
"
    lua_shared_dict ckv_t 1m;
    init_worker_by_lua_block {
        local t = require('ckvtest')
        local kv = assert(require('resty.consul_kv').new({
            servers = { 'http://127.0.0.1:8500' }, prefix = 't070b',
            timeout = { wait = 2 },
            share = { dir = '$::Full', group = 't070b' },
        }))
        t.client = kv
        t.record_per_worker('ckv_t', 'web', function()
            return t.show(kv:nodes('http://127.0.0.1:8500/v1/kv/t070b/web/'))
        end)
    }
"
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            t.put(8500, "t070b/web/10.0.0.1:80", "{}")
            ngx.say("both workers: ", (t.wait_workers("ckv_t", "web", "10.0.0.1:80 w=1", 2)))
            local st = t.client:stats()
            ngx.say("role: ", st.role)
            ngx.say("share_error: ", st.share_error:find("space", 1, true) ~= nil)
        }
    }
--- response_body
both workers: true
role: standalone
share_error: true
--- error_log eval
qr/\[warn\].*ckv: not sharing a watch: share\.dir .*full \(group t070b\)/
--- no_error_log eval
[qr/\[(?:error|alert|crit|emerg)\]/, qr/exited on signal/]



=== TEST 3: share.dir fills up later: followers say they are stale, then catch up
--- http_config eval
"
    lua_shared_dict ckv_t 1m;
    init_worker_by_lua_block {
        local t = require('ckvtest')
        local kv = assert(require('resty.consul_kv').new({
            servers = { 'http://127.0.0.1:8500' }, prefix = 't070c',
            timeout = { wait = 2 },
            share = { dir = '$::Later', group = 't070c' },
        }))
        t.client = kv
        t.filler = '$::Later/filler'
        t.record_per_worker('ckv_t', 'web', function()
            return t.show(kv:nodes('http://127.0.0.1:8500/v1/kv/t070c/web/'))
        end)
        t.record_per_worker('ckv_t', 'st', function()
            local st = kv:stats()
            return st.role .. ' stale=' .. tostring(st.stale) .. ' ready=' .. tostring(st.ready)
        end)
    }
"
--- config
    location /t {
        content_by_lua_block {
            local t = require("ckvtest")
            local shm = ngx.shared.ckv_t
            t.put(8500, "t070c/web/10.0.0.1:80", "{}")
            ngx.say("both workers: ", (t.wait_workers("ckv_t", "web", "10.0.0.1:80 w=1", 2)))
            -- (each worker records its stats on its own timer)
            local _, before = t.wait_for(function()
                local roles = { shm:get("st:0"), shm:get("st:1") }
                table.sort(roles)
                local seen = table.concat(roles, ", ")
                return seen == "follower stale=false ready=true, leader stale=false ready=true", seen
            end)
            ngx.say("before: ", before)
            -- fill the tmpfs
            local filler = t.filler
            os.execute("dd if=/dev/zero of=" .. filler .. " bs=4096 2>/dev/null")
            t.put(8500, "t070c/web/10.0.0.2:80", "{}")
            local stale = t.wait_for(function()
                local a, b = shm:get("st:0"), shm:get("st:1")
                return (a == "follower stale=true ready=false" or b == "follower stale=true ready=false")
            end)
            ngx.say("a follower says it is stale: ", stale)
            os.remove(filler)
            ngx.say("both workers caught up: ", (t.wait_workers("ckv_t", "web",
                    "10.0.0.1:80 w=1, 10.0.0.2:80 w=1", 2)))
            local fresh = t.wait_for(function()
                local a, b = shm:get("st:0"), shm:get("st:1")
                return not a:find("stale=true") and not b:find("stale=true")
            end)
            ngx.say("nobody stale: ", fresh)
            -- the leader's notice reaches the error log through a timer
            t.wait_log("the other workers have it now")
        }
    }
--- response_body
both workers: true
before: follower stale=false ready=true, leader stale=false ready=true
a follower says it is stale: true
both workers caught up: true
nobody stale: true
--- error_log eval
[qr/\[error\].*ckv: cannot publish snapshot to .*later\/ckv\.0\.t070c: .*retry/,
 qr/\[notice\].*ckv: published snapshot \d+ to .*the other workers have it now/]
