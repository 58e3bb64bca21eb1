//! Log records queued by the library and drained by the host (Lua pulls them
//! with `ckv_log_next` and writes them with `ngx.log`). Rust never calls into
//! Lua. Levels use nginx's numbering so the Lua side passes them through.

use std::collections::VecDeque;
use std::fmt;

use parking_lot::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i32)]
pub enum Level {
    Err = 4,
    Warn = 5,
    Notice = 6,
    Info = 7,
    Debug = 8,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Err => "error",
            Level::Warn => "warn",
            Level::Notice => "notice",
            Level::Info => "info",
            Level::Debug => "debug",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub level: Level,
    pub message: String,
}

/// A bounded queue: when the host does not drain it, the oldest records go
/// and a count of what was dropped is reported with the next record.
#[derive(Debug)]
pub struct LogQueue {
    inner: Mutex<Inner>,
    capacity: usize,
    echo_stderr: bool,
}

#[derive(Debug, Default)]
struct Inner {
    records: VecDeque<Record>,
    dropped: u64,
}

impl Default for LogQueue {
    fn default() -> Self {
        Self::new(4096)
    }
}

impl LogQueue {
    pub fn new(capacity: usize) -> Self {
        LogQueue {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            echo_stderr: std::env::var_os("CKV_LOG_STDERR").is_some(),
        }
    }

    pub fn push(&self, level: Level, message: impl Into<String>) {
        let message = message.into();
        if self.echo_stderr {
            eprintln!("ckv [{level}] {message}");
        }
        let mut inner = self.inner.lock();
        if inner.records.len() >= self.capacity {
            inner.records.pop_front();
            inner.dropped += 1;
        }
        inner.records.push_back(Record { level, message });
    }

    /// The oldest record, if any. After an overflow, a warning saying how many
    /// records were lost comes first.
    pub fn pop(&self) -> Option<Record> {
        let mut inner = self.inner.lock();
        if inner.dropped > 0 {
            let n = std::mem::take(&mut inner.dropped);
            return Some(Record {
                level: Level::Warn,
                message: format!("ckv: {n} log records were dropped (log queue full)"),
            });
        }
        inner.records.pop_front()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_with_overflow_report() {
        let q = LogQueue::new(2);
        q.push(Level::Info, "a");
        q.push(Level::Err, "b");
        q.push(Level::Warn, "c");
        let first = q.pop().unwrap();
        assert_eq!(first.level, Level::Warn);
        assert!(first.message.contains("1 log records were dropped"));
        assert_eq!(q.pop().unwrap().message, "b");
        assert_eq!(q.pop().unwrap().message, "c");
        assert!(q.pop().is_none());
    }
}
