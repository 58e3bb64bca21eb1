//! Files in directories someone else might write into: every file is opened
//! relative to a directory descriptor, never through a symbolic link, and is
//! accepted only when it is a regular file of the effective uid with a single
//! link. Temp files get random names and `O_EXCL`, then `renameat`. Reads are
//! capped by a size the caller derives from its configuration.
//!
//! Used by the shared directory (`shared::group`) and the dump writer.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags, Stat};

/// The effective uid: the only owner ckv trusts.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Flags for every open in a directory: no link is followed, a FIFO or
/// device never blocks the open, and nothing leaks into an `exec`.
fn safe_flags() -> OFlags {
    OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC
}

fn refused(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, what.to_string())
}

/// Requires `st` to describe a private directory of the effective uid.
pub fn check_private_dir(st: &Stat, path: &Path) -> io::Result<()> {
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(refused(format!("{} is not a directory", path.display())));
    }
    if st.st_uid != euid() {
        return Err(refused(format!(
            "{} is owned by uid {}, not by this process's uid {}",
            path.display(),
            st.st_uid,
            euid()
        )));
    }
    if st.st_mode & 0o077 != 0 {
        return Err(refused(format!(
            "{} has mode {:o}; only 0700 is trusted",
            path.display(),
            st.st_mode & 0o7777
        )));
    }
    Ok(())
}

/// Requires `st` to describe a regular file of the effective uid with one link.
fn check_own_file(st: &Stat, name: &str) -> io::Result<()> {
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(refused(format!("{name} is not a regular file")));
    }
    if st.st_uid != euid() {
        return Err(refused(format!(
            "{name} is owned by uid {}, not by this process's uid {}",
            st.st_uid,
            euid()
        )));
    }
    if st.st_nlink != 1 {
        return Err(refused(format!("{name} has {} hard links", st.st_nlink)));
    }
    Ok(())
}

/// Creates `name` in `parent` as a private directory (0700) unless it exists,
/// then opens it without following a link and checks that it is a directory
/// of the effective uid with no group or other bits. Returns the descriptor
/// and whether this call created it.
pub fn open_private_dir(
    parent: &impl AsFd,
    name: &str,
    path: &Path,
) -> io::Result<(OwnedFd, bool)> {
    let created = match rfs::mkdirat(parent, name, Mode::RWXU) {
        Ok(()) => true,
        Err(rustix::io::Errno::EXIST) => false,
        Err(e) => return Err(e.into()),
    };
    let fd = rfs::openat(
        parent,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | safe_flags(),
        Mode::empty(),
    )
    .map_err(|e| match e {
        // O_NOFOLLOW on a link fails with ELOOP (or ENOTDIR with O_DIRECTORY).
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
            refused(format!("{} is not a directory", path.display()))
        }
        e => e.into(),
    })?;
    check_private_dir(&rfs::fstat(&fd)?, path)?;
    Ok((fd, created))
}

/// Opens a directory the operator named (the dump's directory): links in the
/// path are followed, as for any configured path, but what is opened inside it
/// is not.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(
        path,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Fails unless this process may create files in `path` (a directory).
pub fn check_writable_dir(path: &Path) -> io::Result<()> {
    let dir = open_dir(path)?;
    rfs::accessat(
        &dir,
        ".",
        rfs::Access::WRITE_OK | rfs::Access::EXEC_OK,
        AtFlags::EACCESS,
    )?;
    Ok(())
}

/// Opens `name` in `dir` read-write, creating it (0600) when `create`, and
/// accepts it only as a regular file of ours with one link.
pub fn open_own_file(dir: &impl AsFd, name: &str, create: bool) -> io::Result<File> {
    let mut flags = OFlags::RDWR | safe_flags();
    if create {
        flags |= OFlags::CREATE;
    }
    let fd =
        rfs::openat(dir, name, flags, Mode::RUSR | Mode::WUSR).map_err(|e| open_error(e, name))?;
    check_own_file(&rfs::fstat(&fd)?, name)?;
    Ok(File::from(fd))
}

fn open_error(e: rustix::io::Errno, name: &str) -> io::Error {
    match e {
        rustix::io::Errno::LOOP => refused(format!("{name} is a symbolic link")),
        e => io::Error::from(e),
    }
}

/// Opens `name` in `dir` for reading: a regular file of ours with one link,
/// of at most `cap` bytes. Returns the file and its size; `Ok(None)` when it
/// does not exist.
fn open_capped(dir: &impl AsFd, name: &str, cap: u64) -> io::Result<Option<(File, usize)>> {
    let fd = match rfs::openat(dir, name, OFlags::RDONLY | safe_flags(), Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(open_error(e, name)),
    };
    let st = rfs::fstat(&fd)?;
    check_own_file(&st, name)?;
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > cap {
        return Err(io::Error::other(format!(
            "{name} is {size} bytes, more than the limit of {cap}"
        )));
    }
    let size =
        usize::try_from(size).map_err(|_| io::Error::other(format!("{name} is too large")))?;
    Ok(Some((File::from(fd), size)))
}

fn magic_error(name: &str, magic: &[u8]) -> io::Error {
    io::Error::other(format!(
        "{name} does not start with {}",
        String::from_utf8_lossy(magic)
    ))
}

/// Reads `name` from `dir` whole, refusing files over `cap` bytes and files
/// that do not start with `magic` (checked before the rest is read). `Ok(None)`
/// when the file does not exist.
pub fn read_capped(
    dir: &impl AsFd,
    name: &str,
    cap: u64,
    magic: &[u8],
) -> io::Result<Option<Vec<u8>>> {
    let Some((mut file, size)) = open_capped(dir, name, cap)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    out.try_reserve_exact(size)
        .map_err(|_| io::Error::other(format!("cannot allocate {size} bytes for {name}")))?;
    let head = magic.len().min(size);
    out.resize(head, 0);
    file.read_exact(&mut out)?;
    if out.as_slice() != magic {
        return Err(magic_error(name, magic));
    }
    // Exactly the size seen by fstat: the writer never changes a file after
    // renaming it into place, so more bytes would mean someone else's file.
    (&mut file)
        .take((size - head) as u64)
        .read_to_end(&mut out)?;
    if out.len() != size {
        return Err(io::Error::other(format!("{name} shrank while being read")));
    }
    Ok(Some(out))
}

/// Maps `name` from `dir` read-only, with the checks of [`read_capped`]:
/// a regular file of ours with one link, at most `cap` bytes, starting with
/// `magic`. The mapping stays valid after the file is unlinked or replaced
/// (a rename), so a reader may hold it as long as it likes.
pub fn map_capped(
    dir: &impl AsFd,
    name: &str,
    cap: u64,
    magic: &[u8],
) -> io::Result<Option<memmap2::Mmap>> {
    let Some((file, size)) = open_capped(dir, name, cap)? else {
        return Ok(None);
    };
    if size < magic.len() {
        return Err(magic_error(name, magic));
    }
    // SAFETY: the file is a regular file of our uid with a single link,
    // opened without following links inside a directory only our uid can
    // write (callers pass such a directory). Its writer (the leader) fills a
    // temp file and renames it into place, and never writes or truncates it
    // afterwards; so the mapped bytes never change and never shrink under
    // the mapping. Only a process of our own uid could truncate it (turning
    // an access into SIGBUS) or rewrite it, and that uid is trusted, as for
    // the shared header. The mapping is read-only.
    let map = unsafe { memmap2::MmapOptions::new().len(size).map(&file)? };
    if !map.starts_with(magic) {
        return Err(magic_error(name, magic));
    }
    Ok(Some(map))
}

/// 16 random hex digits for a temp file name.
pub fn random_suffix() -> io::Result<String> {
    let mut bytes = [0u8; 8];
    let mut filled = 0;
    while filled < bytes.len() {
        filled +=
            rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())?;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The marker every temp file name carries (see [`remove_temp_files`]).
const TEMP_MARK: &str = ".tmp.";

/// A new temp file for `name` in `dir`: a random name carrying
/// [`TEMP_MARK`], created 0600 with `O_EXCL`, so a planted file or link is
/// never opened. Returns its name (to rename or unlink) and the file.
fn create_temp(dir: &impl AsFd, name: &str) -> io::Result<(String, File)> {
    let tmp = format!(".{name}{TEMP_MARK}{}", random_suffix()?);
    let fd = rfs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | safe_flags(),
        Mode::RUSR | Mode::WUSR,
    )?;
    Ok((tmp, File::from(fd)))
}

/// Replaces `name` in `dir` with `contents` so that a reader sees the old file
/// or the new one, never a mix. The temp file has a random name and is created
/// with `O_EXCL`, so a planted file or link is never written through. With
/// `durable`, data and directory are synced (the dump); without, not (tmpfs).
pub fn replace_file(dir: &impl AsFd, name: &str, contents: &[u8], durable: bool) -> io::Result<()> {
    let (tmp, mut f) = create_temp(dir, name)?;
    let result = (|| {
        f.write_all(contents)?;
        if durable {
            f.sync_all()?;
        }
        rfs::renameat(dir, tmp.as_str(), dir, name)?;
        if durable {
            let _ = rfs::fsync(dir);
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = rfs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    }
    result
}

/// Creates `name` in `dir` with `contents` unless it exists (then returns
/// false and leaves it alone). Readers never see a partial file.
pub fn create_file_once(dir: &impl AsFd, name: &str, contents: &[u8]) -> io::Result<bool> {
    let (tmp, mut f) = create_temp(dir, name)?;
    let result = (|| {
        f.write_all(contents)?;
        match rfs::renameat_with(dir, tmp.as_str(), dir, name, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(io::Error::from(e)),
        }
    })();
    let _ = rfs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    result
}

/// Writes `contents` to `path` atomically and durably (the dump): the
/// directory is opened once and the temp file created inside it as in
/// [`replace_file`].
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other(format!("{} has no usable file name", path.display())))?;
    replace_file(&open_dir(dir)?, name, contents, true)
}

/// Names in `dir` (without `.` and `..`). Unreadable entries are skipped.
pub fn list(dir: &impl AsFd) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in rfs::Dir::read_from(dir)? {
        let Ok(entry) = entry else { continue };
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name != "." && name != ".." {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// Removes temp files left in `dir` by a writer of one of `names` that died
/// mid-write (`snap.` covers `snap.1`, `snap.2`, ...). Unlinking never
/// follows a link. Returns how many were removed.
pub fn remove_temp_files(dir: &impl AsFd, names: &[&str]) -> usize {
    let Ok(entries) = list(dir) else { return 0 };
    let mut removed = 0;
    for n in entries {
        let ours = names
            .iter()
            .any(|base| n.starts_with(&format!(".{base}")) && n.contains(TEMP_MARK));
        if ours && rfs::unlinkat(dir, n.as_str(), AtFlags::empty()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn dir_fd(p: &Path) -> OwnedFd {
        open_dir(p).unwrap()
    }

    #[test]
    fn replace_file_never_writes_through_a_planted_link() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        // Any predictable temp name an attacker could plant is ignored.
        symlink(&victim, d.path().join(".out.tmp.1")).unwrap();
        symlink(&victim, d.path().join("out")).unwrap();
        replace_file(&dir_fd(d.path()), "out", b"new", false).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // The link named `out` was replaced by our file, not written through.
        let meta = std::fs::symlink_metadata(d.path().join("out")).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn reads_refuse_links_fifos_and_oversized_files() {
        let d = tempfile::tempdir().unwrap();
        let fd = dir_fd(d.path());
        std::fs::write(d.path().join("target"), b"MAGIC123").unwrap();
        symlink(d.path().join("target"), d.path().join("link")).unwrap();
        let err = read_capped(&fd, "link", 100, b"MAGIC").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        rustix::fs::mkfifoat(&fd, "fifo", Mode::RUSR | Mode::WUSR).unwrap();
        let err = read_capped(&fd, "fifo", 100, b"MAGIC").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = read_capped(&fd, "target", 4, b"MAGIC").unwrap_err();
        assert!(err.to_string().contains("more than the limit"), "{err}");
        let err = read_capped(&fd, "target", 100, b"OTHER").unwrap_err();
        assert!(err.to_string().contains("does not start with"), "{err}");
        assert_eq!(
            read_capped(&fd, "target", 8, b"MAGIC").unwrap().unwrap(),
            b"MAGIC123"
        );
        assert_eq!(read_capped(&fd, "missing", 8, b"M").unwrap(), None);
        std::fs::hard_link(d.path().join("target"), d.path().join("second")).unwrap();
        let err = read_capped(&fd, "target", 100, b"MAGIC").unwrap_err();
        assert!(err.to_string().contains("hard links"), "{err}");
    }

    #[test]
    fn private_dir_rules() {
        let d = tempfile::tempdir().unwrap();
        let base = dir_fd(d.path());
        let (_, created) = open_private_dir(&base, "p", &d.path().join("p")).unwrap();
        assert!(created);
        let (_, created) = open_private_dir(&base, "p", &d.path().join("p")).unwrap();
        assert!(!created);
        std::fs::create_dir(d.path().join("open")).unwrap();
        std::fs::set_permissions(
            d.path().join("open"),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        let err = open_private_dir(&base, "open", &d.path().join("open")).unwrap_err();
        assert!(err.to_string().contains("only 0700"), "{err}");
        symlink(d.path().join("p"), d.path().join("alias")).unwrap();
        let err = open_private_dir(&base, "alias", &d.path().join("alias")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn create_once_and_temp_cleanup() {
        let d = tempfile::tempdir().unwrap();
        let fd = dir_fd(d.path());
        assert!(create_file_once(&fd, "config", b"a").unwrap());
        assert!(!create_file_once(&fd, "config", b"b").unwrap());
        assert_eq!(std::fs::read(d.path().join("config")).unwrap(), b"a");
        std::fs::write(d.path().join(".snap.3.tmp.0123"), b"x").unwrap();
        std::fs::write(d.path().join(".dump.json.tmp.99"), b"x").unwrap();
        std::fs::write(d.path().join(".config.tmp.77"), b"x").unwrap();
        assert_eq!(remove_temp_files(&fd, &["dump.json"]), 1);
        assert_eq!(remove_temp_files(&fd, &["snap."]), 1);
        let mut left = list(&fd).unwrap();
        left.sort();
        assert_eq!(
            left,
            vec![".config.tmp.77".to_string(), "config".to_string()]
        );
    }
}
