//! The shared directory of one group of processes (one nginx instance and one
//! configuration):
//!
//! ```text
//! {dir}/ckv.{uid}.{group}.{config hash}/
//!     members     every process holds LOCK_SH; the last one out gets LOCK_EX
//!                 and removes the directory
//!     leader      LOCK_EX held by the process that watches Consul
//!     header      4 KiB, mapped shared: latest snapshot seq + futex word
//!     snap.{seq}  snapshots (the latest two are kept)
//!     stats.json  the leader's watch statistics
//! ```
//!
//! flock(2) locks are released by the kernel when a process dies, even by
//! `kill -9`, so leadership passes on and a dead group can be cleaned up.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::futex;

const HEADER_SIZE: usize = 4096;
const MAGIC: u64 = u64::from_le_bytes(*b"CKVHDR01");

/// Layout of the shared header. Only atomics: every process maps it.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    /// Sequence number of the newest complete `snap.{seq}`.
    seq: AtomicU64,
    /// Bumped after each publish; processes futex-wait on it.
    wake: AtomicU32,
    leader_pid: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);

#[derive(Debug)]
pub struct Group {
    dir: PathBuf,
    members: File,
    leader: File,
    header: *mut Header,
    /// Snapshot files this process published, oldest first.
    published: Mutex<Vec<u64>>,
}

// SAFETY: `header` points into a shared mapping that lives as long as the
// Group; it is only accessed through atomics.
unsafe impl Send for Group {}
unsafe impl Sync for Group {}

fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: plain syscall on a valid descriptor.
        let rc = unsafe { libc::flock(f.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// The directory name for a group: per user, so that two users never share.
pub fn dir_name(group: &str, config_hash: u64) -> String {
    // SAFETY: getuid never fails.
    let uid = unsafe { libc::getuid() };
    let safe: String = group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("ckv.{uid}.{safe}.{config_hash:016x}")
}

impl Group {
    /// Joins (creating if needed) the group directory `base/name`.
    pub fn join(base: &Path, name: &str) -> io::Result<Group> {
        let dir = base.join(name);
        let members = loop {
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let path = dir.join("members");
            let f = match open_rw(&path) {
                Ok(f) => f,
                // The last member removed the directory between our mkdir
                // and open: start again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            flock(&f, libc::LOCK_SH)?;
            // Still the live file? (The last member may have removed it.)
            match fs::metadata(&path) {
                Ok(m) if m.ino() == f.metadata()?.ino() => break f,
                _ => continue,
            }
        };
        let leader = open_rw(&dir.join("leader"))?;
        let header_file = open_rw(&dir.join("header"))?;
        if header_file.metadata()?.len() < HEADER_SIZE as u64 {
            header_file.set_len(HEADER_SIZE as u64)?;
        }
        // SAFETY: mapping a regular file of at least HEADER_SIZE bytes,
        // shared, read-write; checked for MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                HEADER_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                header_file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let header = ptr.cast::<Header>();
        // SAFETY: the mapping is page-aligned and large enough.
        let h = unsafe { &*header };
        let _ = h
            .magic
            .compare_exchange(0, MAGIC, Ordering::AcqRel, Ordering::Acquire);
        if h.magic.load(Ordering::Acquire) != MAGIC {
            // SAFETY: unmapping what we mapped above.
            unsafe { libc::munmap(ptr, HEADER_SIZE) };
            return Err(io::Error::other(format!(
                "{} is not a ckv header",
                dir.join("header").display()
            )));
        }
        Ok(Group {
            dir,
            members,
            leader,
            header,
            published: Mutex::new(Vec::new()),
        })
    }

    fn header(&self) -> &Header {
        // SAFETY: valid for the Group's lifetime (unmapped in Drop).
        unsafe { &*self.header }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tries to become the leader without waiting.
    pub fn try_lead(&self) -> io::Result<bool> {
        match flock(&self.leader, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => {
                self.header()
                    .leader_pid
                    .store(std::process::id(), Ordering::Release);
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
        let _ = flock(&self.leader, libc::LOCK_UN);
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

    /// Leader only: makes `bytes` the newest snapshot and wakes everyone.
    pub fn publish(&self, seq: u64, bytes: &[u8]) -> io::Result<()> {
        let path = self.dir.join(format!("snap.{seq}"));
        crate::dump::write_atomic_fast(&path, bytes)?;
        let h = self.header();
        h.seq.store(seq, Ordering::Release);
        h.wake.fetch_add(1, Ordering::AcqRel);
        futex::wake_all(&h.wake);
        let mut published = self.published.lock();
        if published.is_empty() {
            // First publish of this leader: drop what earlier leaders left.
            self.remove_snapshots_except(seq);
        }
        published.push(seq);
        // Keep the newest two: a follower may be reading the previous one.
        while published.len() > 2 {
            let old = published.remove(0);
            let _ = fs::remove_file(self.dir.join(format!("snap.{old}")));
        }
        Ok(())
    }

    fn remove_snapshots_except(&self, keep: u64) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(n) = name.strip_prefix("snap.") {
                if n.parse::<u64>().is_ok_and(|n| n != keep) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// Reads the newest snapshot. Returns its sequence number and bytes.
    pub fn read_latest(&self) -> io::Result<Option<(u64, Vec<u8>)>> {
        for _ in 0..5 {
            let seq = self.seq();
            if seq == 0 {
                return Ok(None);
            }
            match fs::read(self.dir.join(format!("snap.{seq}"))) {
                Ok(b) => return Ok(Some((seq, b))),
                // Replaced meanwhile by a newer one: read the header again.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("snapshot kept changing while being read"))
    }

    /// Leader only: the watch statistics for the other processes.
    pub fn write_stats(&self, json: &[u8]) -> io::Result<()> {
        crate::dump::write_atomic_fast(&self.dir.join("stats.json"), json)
    }

    pub fn read_stats(&self) -> io::Result<Vec<u8>> {
        fs::read(self.dir.join("stats.json"))
    }

    /// Removes directories of groups whose processes are all gone (for
    /// example after the whole nginx instance was killed with -9).
    pub fn remove_dead_groups(base: &Path, except: &str) {
        // SAFETY: getuid never fails.
        let mine = format!("ckv.{}.", unsafe { libc::getuid() });
        let Ok(entries) = fs::read_dir(base) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(&mine) || name == except {
                continue;
            }
            let dir = e.path();
            let Ok(f) = OpenOptions::new().read(true).open(dir.join("members")) else {
                continue;
            };
            if flock(&f, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
                let _ = fs::remove_dir_all(&dir);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `join`.
        unsafe { libc::munmap(self.header.cast(), HEADER_SIZE) };
        let _ = flock(&self.leader, libc::LOCK_UN);
        let _ = flock(&self.members, libc::LOCK_UN);
        // Last one out removes the directory. A process joining right now
        // notices (its `members` inode is gone) and starts over.
        if flock(&self.members, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_read_and_last_one_out_cleans_up() {
        let base = tempfile::tempdir().unwrap();
        let a = Group::join(base.path(), "g").unwrap();
        let b = Group::join(base.path(), "g").unwrap();
        assert!(a.try_lead().unwrap());
        // Same process, separate open file descriptions: flock conflicts.
        assert!(!b.try_lead().unwrap());
        assert_eq!(b.read_latest().unwrap(), None);
        let seen = b.wake_word();
        a.publish(1, b"one").unwrap();
        a.publish(2, b"two").unwrap();
        a.publish(3, b"three").unwrap();
        assert_ne!(b.wake_word(), seen);
        assert_eq!(b.read_latest().unwrap(), Some((3, b"three".to_vec())));
        let snaps = fs::read_dir(a.dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("snap.")
            })
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
    fn dead_groups_are_removed() {
        let base = tempfile::tempdir().unwrap();
        let name = dir_name("dead", 1);
        let dir = base.path().join(&name);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("members"), b"").unwrap();
        let live = Group::join(base.path(), &dir_name("live", 2)).unwrap();
        Group::remove_dead_groups(base.path(), &dir_name("live", 2));
        assert!(!dir.exists());
        assert!(live.dir().exists());
    }
}
