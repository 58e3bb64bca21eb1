//! The shared directory of one group of processes (one nginx instance and one
//! configuration):
//!
//! ```text
//! {share.dir}/ckv.{euid}.{group}[+{slot}]/   0700, owned by the effective uid
//!     config      salted fingerprint of the configuration (never the token)
//!     members     every process holds LOCK_SH; the last one out gets LOCK_EX
//!                 and removes the directory
//!     leader      LOCK_EX held by the process that watches Consul
//!     header      4 KiB, mapped shared: latest snapshot seq + futex word
//!     snap.{seq}  snapshots (the latest two are kept)
//!     stats.json  the leader's watch statistics
//! ```
//!
//! The directory is trusted only when it is a real directory of the effective
//! uid with mode 0700; every file in it is opened through the directory's
//! descriptor without following links and must be a regular file of ours
//! (see `fsutil`). Processes of the same group with another configuration
//! use the next slot (`+1`, `+2`, ...), so they never share a watch.
//!
//! flock(2) locks are released by the kernel when a process dies, even by
//! `kill -9`, so leadership passes on and a dead group can be cleaned up.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use memmap2::{Mmap, MmapOptions, MmapRaw};
use parking_lot::Mutex;
use rustix::fs::{self as rfs, AtFlags, FallocateFlags, FlockOperation};

use super::{fork, futex};
use crate::fsutil;

const HEADER_SIZE: usize = 4096;
const MAGIC: u64 = u64::from_le_bytes(*b"CKVHDR02");
/// Snapshot files of every format version start with this.
const SNAPSHOT_MAGIC: &[u8] = super::codec::MAGIC_PREFIX;
const CONFIG_MAGIC: &str = "CKVCFG01";
/// Groups of one name with different configurations: at most this many.
const SLOTS: u32 = 8;

/// Layout of the shared header. Only atomics: every process maps it.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    /// Sequence number of the newest complete `snap.{seq}`.
    seq: AtomicU64,
    /// Bumped after each publish; processes futex-wait on it.
    wake: AtomicU32,
    leader_pid: AtomicU32,
    /// Non-zero while the leader serves a snapshot it could not publish.
    publish_failed: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);

/// Read limits, derived from the configuration by the caller.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub snapshot_bytes: u64,
    pub stats_bytes: u64,
}

#[derive(Debug)]
pub struct Group {
    path: PathBuf,
    base: OwnedFd,
    name: String,
    dir: OwnedFd,
    members: File,
    leader: File,
    // Dropped before the files (fields drop in order), so a forked child
    // never sees a stale registration.
    _fork_guards: [fork::Guard; 2],
    map: MmapRaw,
    limits: Limits,
    /// The process that joined; a forked child never cleans up.
    pid: u32,
    /// Snapshot files this process published, oldest first.
    published: Mutex<Vec<u64>>,
}

fn flock(f: &File, op: FlockOperation) -> io::Result<()> {
    loop {
        match rfs::flock(f, op) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The directory name of `group` in slot `slot`. The group is already
/// validated by the config (`A-Z a-z 0-9 . _ -`); anything else is replaced.
pub fn dir_name(group: &str, slot: u32) -> String {
    let safe: String = group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let uid = fsutil::euid();
    match slot {
        0 => format!("ckv.{uid}.{safe}"),
        n => format!("ckv.{uid}.{safe}+{n}"),
    }
}

/// A keyed 64-bit FNV-1a: the fingerprint file never holds an unkeyed hash.
fn keyed_hash(salt: &str, fingerprint: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let fp = fingerprint.to_le_bytes();
    for b in salt.bytes().chain(fp).chain(salt.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Compares `fingerprint` with the one stored in the directory's `config`
/// file; `None` when there is no such file yet.
fn stored_config_matches(dir: &OwnedFd, fingerprint: u64) -> io::Result<Option<bool>> {
    let Some(text) = fsutil::read_capped(dir, "config", 256, CONFIG_MAGIC.as_bytes())? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&text);
    let mut parts = text.split_whitespace().skip(1);
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return Err(io::Error::other("config is not a ckv fingerprint"));
    };
    Ok(Some(
        format!("{:016x}", keyed_hash(salt, fingerprint)) == hash,
    ))
}

/// Opens the existing directory `name` of `base` only if it is a private
/// directory of ours (never creating it, never following a link). `None`:
/// it does not exist.
fn open_existing_private_dir(
    base: &OwnedFd,
    name: &str,
    path: &Path,
) -> io::Result<Option<OwnedFd>> {
    let st = match rfs::statat(base, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(io::Error::other(format!("{}: {e}", path.display()))),
    };
    fsutil::check_private_dir(&st, path)?;
    let dir = match rfs::openat(
        base,
        name,
        rfs::OFlags::DIRECTORY
            | rfs::OFlags::RDONLY
            | rfs::OFlags::NOFOLLOW
            | rfs::OFlags::NONBLOCK
            | rfs::OFlags::CLOEXEC,
        rfs::Mode::empty(),
    ) {
        Ok(d) => d,
        // Removed by its last member since the stat.
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(io::Error::other(format!("{}: {e}", path.display()))),
    };
    let now = rfs::fstat(&dir)?;
    if now.st_ino != st.st_ino {
        return Err(io::Error::other(format!(
            "{} was replaced while being opened",
            path.display()
        )));
    }
    fsutil::check_private_dir(&now, path)?;
    Ok(Some(dir))
}

/// The newest snapshot file in a group directory, mapped with the usual checks.
fn read_newest_snapshot(dir: &OwnedFd, cap: u64) -> io::Result<Option<(u64, Mmap)>> {
    let mut seqs: Vec<u64> = fsutil::list(dir)?
        .iter()
        .filter_map(|n| n.strip_prefix("snap.")?.parse().ok())
        .collect();
    seqs.sort_unstable_by(|a, b| b.cmp(a));
    for seq in seqs {
        // A file that is gone was replaced by a newer one or removed with
        // the directory: try the next.
        if let Some(bytes) = fsutil::map_capped(dir, &format!("snap.{seq}"), cap, SNAPSHOT_MAGIC)? {
            return Ok(Some((seq, bytes)));
        }
    }
    Ok(None)
}

/// The newest snapshot of the group a reload replaced.
#[derive(Debug)]
pub struct Inherited {
    pub path: PathBuf,
    pub seq: u64,
    /// A read-only mapping of its file.
    pub bytes: Mmap,
}

/// Reads the newest snapshot of group `previous` (the group of this nginx
/// instance before a reload) from the slot whose stored configuration
/// fingerprint equals `fingerprint` (this process's configuration keyed by
/// `previous`). Strictly read-only: nothing there is created, locked,
/// written or removed (the old processes remove it when they exit), and
/// nothing blocks. `Ok(None)`: no such group, no slot with this
/// configuration, or no snapshot yet. An untrusted directory is an error
/// (unless another slot matches), for the caller to warn about.
pub fn read_previous(
    base: &Path,
    previous: &str,
    fingerprint: u64,
    limits: Limits,
) -> io::Result<Option<Inherited>> {
    let base_fd = fsutil::open_dir(base)?;
    let mut refused = None;
    for slot in 0..SLOTS {
        let name = dir_name(previous, slot);
        let path = base.join(&name);
        let found = open_existing_private_dir(&base_fd, &name, &path).and_then(|dir| {
            let Some(dir) = dir else { return Ok(None) };
            let in_dir =
                |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
            if stored_config_matches(&dir, fingerprint).map_err(in_dir)? != Some(true) {
                return Ok(None);
            }
            read_newest_snapshot(&dir, limits.snapshot_bytes).map_err(in_dir)
        });
        match found {
            Ok(Some((seq, bytes))) => return Ok(Some(Inherited { path, seq, bytes })),
            Ok(None) => {}
            Err(e) => {
                refused.get_or_insert(e);
            }
        }
    }
    match refused {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// What joining one slot found.
enum Slot {
    Joined(Group),
    OtherConfig,
}

impl Group {
    /// Joins (creating if needed) the group `group` under `base`, in the first
    /// slot whose configuration fingerprint equals `fingerprint`.
    pub fn join(base: &Path, group: &str, fingerprint: u64, limits: Limits) -> io::Result<Group> {
        let base_fd = fsutil::open_dir(base)?;
        for slot in 0..SLOTS {
            let name = dir_name(group, slot);
            let base_fd = base_fd.try_clone()?;
            let path = base.join(&name);
            // Name the directory in every error (the checks name it already).
            let in_dir = |e: io::Error| {
                if e.to_string().contains(&*path.to_string_lossy()) {
                    e
                } else {
                    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                }
            };
            match Self::join_slot(base, base_fd, name, fingerprint, limits).map_err(in_dir)? {
                Slot::Joined(g) => return Ok(g),
                Slot::OtherConfig => continue,
            }
        }
        Err(io::Error::other(format!(
            "{SLOTS} groups named {group:?} with other configurations exist"
        )))
    }

    fn join_slot(
        base_path: &Path,
        base: OwnedFd,
        name: String,
        fingerprint: u64,
        limits: Limits,
    ) -> io::Result<Slot> {
        let path = base_path.join(&name);
        let mut attempts = 0;
        let (dir, members, members_guard) = loop {
            attempts += 1;
            if attempts > 20 {
                return Err(io::Error::other(format!(
                    "{} kept being removed while joining",
                    path.display()
                )));
            }
            let (dir, _) = fsutil::open_private_dir(&base, &name, &path)?;
            let members = match fsutil::open_own_file(&dir, "members", true) {
                Ok(f) => f,
                // The last member removed the directory between our mkdir
                // and open: start again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let guard = fork::register(&members)?;
            flock(&members, FlockOperation::LockShared)?;
            // Still the live directory and file? (The last member may have
            // removed both while we waited.)
            let live = rfs::fstat(&members)?.st_nlink == 1
                && rfs::statat(&base, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|s| s.st_ino == rfs::fstat(&dir).map_or(0, |d| d.st_ino));
            if live {
                break (dir, members, guard);
            }
        };
        if !Self::same_config(&dir, fingerprint)? {
            return Ok(Slot::OtherConfig);
        }
        let leader = fsutil::open_own_file(&dir, "leader", true)?;
        let leader_guard = fork::register(&leader)?;
        let header_file = fsutil::open_own_file(&dir, "header", true)?;
        let map = map_header(&header_file)?;
        let h = header_of(&map);
        let _ = h
            .magic
            .compare_exchange(0, MAGIC, Ordering::AcqRel, Ordering::Acquire);
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err(io::Error::other("header is not a ckv header"));
        }
        Ok(Slot::Joined(Group {
            path,
            base,
            name,
            dir,
            members,
            leader,
            _fork_guards: [members_guard, leader_guard],
            map,
            limits,
            pid: std::process::id(),
            published: Mutex::new(Vec::new()),
        }))
    }

    /// Writes the fingerprint if this is a new group, else compares with it.
    fn same_config(dir: &OwnedFd, fingerprint: u64) -> io::Result<bool> {
        for _ in 0..2 {
            if let Some(matches) = stored_config_matches(dir, fingerprint)? {
                return Ok(matches);
            }
            let salt = fsutil::random_suffix()?;
            let text = format!(
                "{CONFIG_MAGIC} {salt} {:016x}\n",
                keyed_hash(&salt, fingerprint)
            );
            if fsutil::create_file_once(dir, "config", text.as_bytes())? {
                return Ok(true);
            }
            // Another process wrote it first: compare with theirs.
        }
        Err(io::Error::other("config fingerprint kept changing"))
    }

    fn header(&self) -> &Header {
        header_of(&self.map)
    }

    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// Tries to become the leader without waiting.
    pub fn try_lead(&self) -> io::Result<bool> {
        match flock(&self.leader, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                self.header()
                    .leader_pid
                    .store(std::process::id(), Ordering::Release);
                // Temp files of a leader killed mid-write (only the leader
                // writes these; a joiner's `config` temp file is left alone).
                fsutil::remove_temp_files(&self.dir, &["snap.", "stats.json"]);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives up leadership (if held) so that another process takes over.
    pub fn release_leadership(&self) {
        let me = std::process::id();
        let _ =
            self.header()
                .leader_pid
                .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Acquire);
        let _ = flock(&self.leader, FlockOperation::Unlock);
    }

    pub fn leader_pid(&self) -> u32 {
        self.header().leader_pid.load(Ordering::Acquire)
    }

    /// Newest published sequence number (0: none yet).
    pub fn seq(&self) -> u64 {
        self.header().seq.load(Ordering::Acquire)
    }

    /// The futex word's current value, to wait on.
    pub fn wake_word(&self) -> u32 {
        self.header().wake.load(Ordering::Acquire)
    }

    /// Waits until a publish happens after `seen` was read, or `timeout`.
    pub fn wait(&self, seen: u32, timeout: Duration) {
        futex::wait(&self.header().wake, seen, timeout);
    }

    /// True while the leader serves a snapshot the others do not have.
    pub fn publish_failed(&self) -> bool {
        self.header().publish_failed.load(Ordering::Acquire) != 0
    }

    /// Leader only: says (in memory, so even on a full disk) whether the
    /// latest snapshot could not be published; wakes the followers.
    pub fn set_publish_failed(&self, failed: bool) {
        let h = self.header();
        if h.publish_failed.swap(u32::from(failed), Ordering::AcqRel) != u32::from(failed) {
            h.wake.fetch_add(1, Ordering::AcqRel);
            futex::wake_all(&h.wake);
        }
    }

    /// Leader only: makes `bytes` the newest snapshot and wakes everyone.
    pub fn publish(&self, seq: u64, bytes: &[u8]) -> io::Result<()> {
        fsutil::replace_file(&self.dir, &format!("snap.{seq}"), bytes, false)?;
        let h = self.header();
        h.seq.store(seq, Ordering::Release);
        h.publish_failed.store(0, Ordering::Release);
        h.wake.fetch_add(1, Ordering::AcqRel);
        futex::wake_all(&h.wake);
        let mut published = self.published.lock();
        if published.is_empty() {
            // First publish of this leader: drop what earlier leaders left.
            self.remove_snapshots_except(seq);
        }
        if published.last() != Some(&seq) {
            published.push(seq);
        }
        // Keep the newest two: a follower may be reading the previous one.
        while published.len() > 2 {
            let old = published.remove(0);
            let _ = rfs::unlinkat(&self.dir, format!("snap.{old}"), AtFlags::empty());
        }
        Ok(())
    }

    fn remove_snapshots_except(&self, keep: u64) {
        let Ok(names) = fsutil::list(&self.dir) else {
            return;
        };
        for name in names {
            if let Some(n) = name.strip_prefix("snap.") {
                if n.parse::<u64>().is_ok_and(|n| n != keep) {
                    let _ = rfs::unlinkat(&self.dir, name.as_str(), AtFlags::empty());
                }
            }
        }
    }

    /// Maps the newest snapshot read-only. Returns its sequence number and
    /// the mapping, which stays valid after the leader removes the file.
    pub fn read_latest(&self) -> io::Result<Option<(u64, Mmap)>> {
        for _ in 0..5 {
            let seq = self.seq();
            if seq == 0 {
                return Ok(None);
            }
            let name = format!("snap.{seq}");
            match fsutil::map_capped(&self.dir, &name, self.limits.snapshot_bytes, SNAPSHOT_MAGIC)?
            {
                Some(b) => return Ok(Some((seq, b))),
                // Replaced meanwhile by a newer one: read the header again.
                None => continue,
            }
        }
        Err(io::Error::other(format!(
            "snapshot {} is missing or kept changing while being read",
            self.seq()
        )))
    }

    /// Leader only: the watch statistics for the other processes.
    pub fn write_stats(&self, json: &[u8]) -> io::Result<()> {
        fsutil::replace_file(&self.dir, "stats.json", json, false)
    }

    pub fn read_stats(&self) -> io::Result<Vec<u8>> {
        fsutil::read_capped(&self.dir, "stats.json", self.limits.stats_bytes, b"{")?
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// Removes directories of groups whose processes are all gone (for
    /// example after the whole nginx instance was killed with -9). Only
    /// entries that pass the same checks as our own directory are touched,
    /// and nothing here can block: a FIFO or a lock held elsewhere is skipped.
    /// `keep`: group names (every slot) left alone whatever their state.
    pub fn remove_dead_groups(base: &Path, keep: &[&str]) {
        let Ok(base_fd) = fsutil::open_dir(base) else {
            return;
        };
        let mine = format!("ckv.{}.", fsutil::euid());
        let kept: Vec<String> = keep.iter().map(|g| dir_name(g, 0)).collect();
        let Ok(names) = fsutil::list(&base_fd) else {
            return;
        };
        for name in names {
            let is_kept = kept.iter().any(|k| {
                name == *k
                    || name
                        .strip_prefix(k.as_str())
                        .is_some_and(|r| r.starts_with('+'))
            });
            if !name.starts_with(&mine) || is_kept {
                continue;
            }
            let Ok(st) = rfs::statat(&base_fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let path = base.join(&name);
            if fsutil::check_private_dir(&st, &path).is_err() {
                continue;
            }
            let Ok(dir) = rfs::openat(
                &base_fd,
                name.as_str(),
                rfs::OFlags::DIRECTORY
                    | rfs::OFlags::RDONLY
                    | rfs::OFlags::NOFOLLOW
                    | rfs::OFlags::CLOEXEC,
                rfs::Mode::empty(),
            ) else {
                continue;
            };
            if !rfs::fstat(&dir).is_ok_and(|d| {
                d.st_ino == st.st_ino && fsutil::check_private_dir(&d, &path).is_ok()
            }) {
                continue;
            }
            let Ok(members) = fsutil::open_own_file(&dir, "members", false) else {
                continue;
            };
            if flock(&members, FlockOperation::NonBlockingLockExclusive).is_ok() {
                remove_dir(&base_fd, &name, &dir);
            }
        }
    }
}

/// Removes the files of a group directory we hold `members` exclusively for,
/// then the directory. Unlinking never follows links.
fn remove_dir(base: &OwnedFd, name: &str, dir: &OwnedFd) {
    if let Ok(names) = fsutil::list(dir) {
        for n in names {
            let _ = rfs::unlinkat(dir, n.as_str(), AtFlags::empty());
        }
    }
    let _ = rfs::unlinkat(base, name, AtFlags::REMOVEDIR);
}

/// The header inside a mapping made by [`map_header`].
fn header_of(map: &MmapRaw) -> &Header {
    // SAFETY: `map` was made by `map_header`: HEADER_SIZE bytes, shared,
    // page-aligned (so aligned for Header, which fits in it), and it lives as
    // long as the returned reference (borrowed from `map`). Every field is an
    // atomic, so concurrent access from other processes is defined, and any
    // bit pattern is a valid value. The file behind it cannot shrink while
    // mapped (which would turn an access into SIGBUS): it sits in a 0700
    // directory of our uid, is ours with a single link, was checked to be 0
    // or HEADER_SIZE bytes and had its blocks allocated before mapping, and
    // ckv never truncates it; only a process of our own uid could, and that
    // uid is trusted.
    unsafe { &*map.as_ptr().cast::<Header>() }
}

/// Makes sure the header file holds HEADER_SIZE allocated bytes, then maps
/// it. Allocating first turns a full tmpfs into an error here instead of a
/// SIGBUS at the first store into the mapping.
fn map_header(file: &File) -> io::Result<MmapRaw> {
    let size = rfs::fstat(file)?.st_size;
    if size != 0 && size != HEADER_SIZE as i64 {
        return Err(io::Error::other(format!(
            "header is {size} bytes, not a ckv header"
        )));
    }
    match rfs::fallocate(file, FallocateFlags::empty(), 0, HEADER_SIZE as u64) {
        Ok(()) => {}
        Err(rustix::io::Errno::OPNOTSUPP) if size == 0 => {
            // A file system without fallocate: write the zeros ourselves.
            use std::os::unix::fs::FileExt;
            file.write_all_at(&[0u8; HEADER_SIZE], 0)?;
        }
        Err(rustix::io::Errno::OPNOTSUPP) => {}
        Err(e) => return Err(io::Error::other(format!("cannot allocate header: {e}"))),
    }
    MmapOptions::new().len(HEADER_SIZE).map_raw(file)
}

impl Drop for Group {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            // A forked child: its lock descriptors are /dev/null by now, and
            // the directory belongs to the parent.
            return;
        }
        let _ = flock(&self.leader, FlockOperation::Unlock);
        let _ = flock(&self.members, FlockOperation::Unlock);
        // Last one out removes the directory. A process joining right now
        // notices (its `members` file is unlinked) and starts over.
        if flock(&self.members, FlockOperation::NonBlockingLockExclusive).is_ok() {
            remove_dir(&self.base, &self.name, &self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        snapshot_bytes: 1 << 20,
        stats_bytes: 1 << 20,
    };

    fn snap(text: &str) -> Vec<u8> {
        let mut v = SNAPSHOT_MAGIC.to_vec();
        v.extend_from_slice(text.as_bytes());
        v
    }

    #[test]
    fn publish_read_and_last_one_out_cleans_up() {
        let base = tempfile::tempdir().unwrap();
        let a = Group::join(base.path(), "g", 7, LIMITS).unwrap();
        let b = Group::join(base.path(), "g", 7, LIMITS).unwrap();
        assert_eq!(a.dir(), b.dir());
        assert!(a.try_lead().unwrap());
        // Same process, separate open file descriptions: flock conflicts.
        assert!(!b.try_lead().unwrap());
        assert!(b.read_latest().unwrap().is_none());
        let seen = b.wake_word();
        a.publish(1, &snap("one")).unwrap();
        a.publish(2, &snap("two")).unwrap();
        a.publish(3, &snap("three")).unwrap();
        assert_ne!(b.wake_word(), seen);
        let (seq, bytes) = b.read_latest().unwrap().unwrap();
        assert_eq!((seq, &bytes[..]), (3, &snap("three")[..]));
        let snaps = fsutil::list(&a.dir)
            .unwrap()
            .iter()
            .filter(|n| n.starts_with("snap."))
            .count();
        assert_eq!(snaps, 2);
        let dir = a.dir().to_path_buf();
        drop(a);
        assert!(dir.exists(), "b is still a member");
        // Leadership passes once a is gone.
        assert!(b.try_lead().unwrap());
        drop(b);
        assert!(!dir.exists());
    }

    #[test]
    fn another_configuration_gets_another_slot() {
        let base = tempfile::tempdir().unwrap();
        let a = Group::join(base.path(), "g", 1, LIMITS).unwrap();
        let b = Group::join(base.path(), "g", 2, LIMITS).unwrap();
        let c = Group::join(base.path(), "g", 1, LIMITS).unwrap();
        assert_ne!(a.dir(), b.dir());
        assert_eq!(a.dir(), c.dir());
        assert!(b.dir().to_string_lossy().ends_with("+1"));
        // Both lead: they are separate groups.
        assert!(a.try_lead().unwrap() && b.try_lead().unwrap());
    }

    #[test]
    fn dead_groups_are_removed() {
        use std::os::unix::fs::DirBuilderExt;
        let base = tempfile::tempdir().unwrap();
        // What a group whose processes were all killed leaves behind.
        let dead = base.path().join(dir_name("dead", 0));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dead)
            .unwrap();
        for f in ["members", "leader", "header", "snap.1", ".snap.2.tmp.ab"] {
            std::fs::write(dead.join(f), b"").unwrap();
        }
        let live = Group::join(base.path(), "live", 2, LIMITS).unwrap();
        let other = Group::join(base.path(), "other", 2, LIMITS).unwrap();
        Group::remove_dead_groups(base.path(), &["live"]);
        assert!(!dead.exists());
        assert!(live.dir().exists());
        assert!(other.dir().exists(), "a group with a live member stays");
    }
}
