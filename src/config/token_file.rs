//! `token_file`: the ACL token read from a file and re-read when the file
//! changes, so that a token rotated by Vault agent (or any tool that
//! rewrites or renames a new file into place) is used from the next request,
//! without a restart and without dropping the watch's data.
//!
//! Each request costs one `lstat` of the path: the token is read again only
//! when the device, inode, size, mtime or ctime changed. A file that cannot
//! be used (missing, a symlink, not a regular file, writable by group or
//! others, owned by another user than this process's or root, larger than
//! [`MAX_TOKEN_FILE_BYTES`], empty, or with control characters inside) keeps
//! the previous token, with one warning per episode. At start there is no
//! previous token: [`TokenFile::load`] fails `ckv_init` instead.
//!
//! The token is never shown: [`TokenFile`]'s `Debug` prints the path only,
//! it takes no part in the share fingerprint (the path does, so rotating
//! the token never splits a group), and [`TokenFile::scrub`] removes every
//! token read so far from text that may echo one.

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::Secret;

/// A token file larger than this is refused (a Consul token is 36 bytes; a
/// JWT-like one a few KiB).
pub(crate) const MAX_TOKEN_FILE_BYTES: u64 = 16 * 1024;

/// Tokens remembered for [`TokenFile::scrub`] besides the current one.
const PREVIOUS_KEPT: usize = 4;

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }
}

#[derive(Default)]
struct State {
    current: Secret,
    previous: Vec<Secret>,
    /// The file version `current` was read from (None: never read, or the
    /// last check failed and must be repeated).
    stamp: Option<Stamp>,
    /// The last check failed and was reported; cleared by a good read.
    failing: bool,
    /// Times the token changed since start.
    rotations: u64,
    rotated_at: Option<Instant>,
    /// Messages for the log, taken by [`TokenFile::take_messages`].
    messages: Vec<(bool, String)>,
}

/// The token file of one configuration. Clones share the state.
#[derive(Clone)]
pub struct TokenFile {
    path: PathBuf,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Two configurations are equal when they read the same path.
impl PartialEq for TokenFile {
    fn eq(&self, other: &TokenFile) -> bool {
        self.path == other.path
    }
}

impl TokenFile {
    pub fn new(path: PathBuf) -> TokenFile {
        TokenFile {
            path,
            state: Arc::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first read, at start: any problem is an error naming the file.
    pub fn load(&self) -> Result<(), String> {
        let (token, stamp) = read_token(&self.path)
            .map_err(|e| format!("token_file {}: {e}", self.path.display()))?;
        let mut s = self.lock();
        s.current = token;
        s.stamp = Some(stamp);
        s.failing = false;
        Ok(())
    }

    /// The token to send now, re-read first if the file changed.
    pub fn current(&self) -> Secret {
        let mut s = self.lock();
        let now = std::fs::symlink_metadata(&self.path).map(|m| Stamp::of(&m));
        if let (Ok(now), Some(seen)) = (&now, s.stamp) {
            if *now == seen {
                return s.current.clone();
            }
        }
        match read_token(&self.path) {
            Ok((token, stamp)) => {
                s.stamp = Some(stamp);
                let recovered = std::mem::replace(&mut s.failing, false);
                if token != s.current {
                    let old = std::mem::replace(&mut s.current, token);
                    if !old.is_empty() {
                        s.previous.insert(0, old);
                        s.previous.truncate(PREVIOUS_KEPT);
                    }
                    s.rotations += 1;
                    s.rotated_at = Some(Instant::now());
                    let line = format!(
                        "ckv: token_file {}: read a new token; it is used from this request on",
                        self.path.display()
                    );
                    s.messages.push((false, line));
                } else if recovered {
                    let line = format!(
                        "ckv: token_file {} is usable again (same token)",
                        self.path.display()
                    );
                    s.messages.push((false, line));
                }
            }
            Err(e) => {
                // Checked again at the next request; reported once.
                s.stamp = None;
                if !std::mem::replace(&mut s.failing, true) {
                    let line = format!(
                        "ckv: token_file {}: {e}; keeping the previous token",
                        self.path.display()
                    );
                    s.messages.push((true, line));
                }
            }
        }
        s.current.clone()
    }

    /// Log lines produced by [`TokenFile::current`]: `(is_warning, text)`.
    pub fn take_messages(&self) -> Vec<(bool, String)> {
        std::mem::take(&mut self.lock().messages)
    }

    /// How many times the token changed, and how long ago the last change was.
    pub fn rotations(&self) -> (u64, Option<std::time::Duration>) {
        let s = self.lock();
        (s.rotations, s.rotated_at.map(|t| t.elapsed()))
    }

    /// `text` without the current token or any earlier one.
    pub fn scrub(&self, text: &str) -> String {
        let s = self.lock();
        let mut out = s.current.scrub(text);
        for old in &s.previous {
            out = old.scrub(&out);
        }
        out
    }
}

/// Opens `path` without following a symlink, checks owner, mode, type and
/// size on the open file, and reads the token (surrounding whitespace
/// removed).
fn read_token(path: &Path) -> Result<(Secret, Stamp), String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => "is a symlink (not followed)".to_string(),
            _ => format!("cannot open: {e}"),
        })?;
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(format!(
            "owned by uid {}, not by this process (uid {euid}) or root",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "mode {:o} lets group or others write it",
            meta.mode() & 0o7777
        ));
    }
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(format!(
            "{} bytes is larger than the {MAX_TOKEN_FILE_BYTES} bytes accepted",
            meta.len()
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(format!(
            "larger than the {MAX_TOKEN_FILE_BYTES} bytes accepted"
        ));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| "not UTF-8 text".to_string())?;
    let token = text.trim();
    if token.is_empty() {
        return Err("is empty".into());
    }
    if token.chars().any(char::is_control) {
        return Err("the token contains control characters".into());
    }
    Ok((Secret::new(token), Stamp::of(&meta)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn rotation_is_seen_and_bad_files_keep_the_previous_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write(&path, "first-token-aaaa\n");
        let f = TokenFile::new(path.clone());
        f.load().unwrap();
        assert_eq!(f.current().expose(), "first-token-aaaa");
        assert!(f.take_messages().is_empty());

        // Renamed into place, as Vault agent does.
        let tmp = dir.path().join("token.tmp");
        write(&tmp, "second-token-bbbb");
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(f.current().expose(), "second-token-bbbb");
        assert_eq!(f.rotations().0, 1);
        let m = f.take_messages();
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(!m[0].1.contains("second-token"), "{m:?}");

        // Empty: the previous token stays, one warning for the episode.
        write(&path, "  \n");
        assert_eq!(f.current().expose(), "second-token-bbbb");
        assert_eq!(f.current().expose(), "second-token-bbbb");
        let m = f.take_messages();
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].0 && m[0].1.contains("is empty"), "{m:?}");

        // Group-writable, then a symlink: refused the same way.
        write(&path, "third-token-cccc");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o662)).unwrap();
        assert_eq!(f.current().expose(), "second-token-bbbb");
        std::fs::remove_file(&path).unwrap();
        let real = dir.path().join("real");
        write(&real, "third-token-cccc");
        std::os::unix::fs::symlink(&real, &path).unwrap();
        assert_eq!(f.current().expose(), "second-token-bbbb");
        let m = f.take_messages();
        assert!(m.is_empty(), "still the same episode: {m:?}");

        // Good again: the new token, and both old ones are scrubbed.
        std::fs::remove_file(&path).unwrap();
        write(&path, "third-token-cccc");
        assert_eq!(f.current().expose(), "third-token-cccc");
        let s = f.scrub("a first-token-aaaa b second-token-bbbb c third-token-cccc");
        assert!(!s.contains("token-"), "{s}");
    }

    #[test]
    fn load_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let e = TokenFile::new(path.clone()).load().unwrap_err();
        assert!(e.contains("cannot open"), "{e}");
        write(&path, "");
        assert!(TokenFile::new(path.clone())
            .load()
            .unwrap_err()
            .contains("is empty"));
        write(&path, &"x".repeat(MAX_TOKEN_FILE_BYTES as usize + 1));
        assert!(TokenFile::new(path.clone())
            .load()
            .unwrap_err()
            .contains("larger"));
        assert!(TokenFile::new(dir.path().to_path_buf())
            .load()
            .unwrap_err()
            .contains("not a regular file"));
        write(&path, "secret-value-1234");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)).unwrap();
        let e = TokenFile::new(path.clone()).load().unwrap_err();
        assert!(e.contains("mode 620 lets group or others write it"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let f = TokenFile::new(path);
        f.load().unwrap();
        assert!(!format!("{f:?}").contains("secret-value"));
    }
}
