//! Log records queued by the library and drained by the host (Lua pulls them
//! with `ckv_log_next` and writes them with `ngx.log`). Rust never calls into
//! Lua. Levels use nginx's numbering so the Lua side passes them through.
//!
//! Two defences against a hostile or broken Consul (red-team D9, D11):
//! text from Consul goes through [`escape_untrusted`] before it is put into a
//! message (and [`LogQueue::push`] escapes again, as a backstop, so a record is
//! always one printable line), and warnings that can repeat without bound go
//! through [`LogQueue::push_limited`], a token bucket per [`LogClass`].

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

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

/// Kinds of message that a server (or a local fault) can make repeat without
/// bound; each has its own budget in [`LogQueue::push_limited`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogClass {
    /// A key or value under the prefix that is skipped.
    MalformedKey,
    /// A follower that cannot read the leader's snapshot or stats.
    FollowerRead,
    /// Keys hidden from the token by ACLs.
    HiddenKeys,
    /// A request that is retried.
    Retry,
}

impl LogClass {
    const ALL: [LogClass; 4] = [
        LogClass::MalformedKey,
        LogClass::FollowerRead,
        LogClass::HiddenKeys,
        LogClass::Retry,
    ];

    fn name(self) -> &'static str {
        match self {
            LogClass::MalformedKey => "malformed keys",
            LogClass::FollowerRead => "follower read errors",
            LogClass::HiddenKeys => "hidden keys",
            LogClass::Retry => "retries",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// Messages of one class admitted at once before the rate applies.
pub(crate) const LIMIT_BURST: f64 = 20.0;
/// Messages of one class admitted per second after the burst.
pub(crate) const LIMIT_PER_SECOND: f64 = 1.0;
/// A class that suppressed messages and then stayed quiet this long reports
/// its count without waiting for its next message.
pub(crate) const LIMIT_QUIET: Duration = Duration::from_secs(5);

/// Makes text from outside (Consul keys, values, bodies, header values) safe
/// for a log line: every control character (C0 including `\n`, `\r`, `\t`,
/// ESC and NUL; DEL; C1), the Unicode line and paragraph separators and the
/// bidirectional formatting characters become visible escapes (`\n`, `\x1b`,
/// `\u{2028}`). Backslashes are kept, so escaping twice changes nothing.
pub fn escape_untrusted(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !needs_escape(c) {
            out.push(c);
            continue;
        }
        let _ = match c {
            '\n' => out.write_str("\\n"),
            '\r' => out.write_str("\\r"),
            '\t' => out.write_str("\\t"),
            c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32),
            c => write!(out, "\\u{{{:x}}}", c as u32),
        };
    }
    Cow::Owned(out)
}

/// [`escape_untrusted`] of at most `max` bytes of `text` (cut on a
/// character boundary, before escaping, and marked with `…`): a key of
/// 100 KB must not make a log line of 100 KB.
pub fn excerpt(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return escape_untrusted(text);
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}…", escape_untrusted(&text[..cut])))
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
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
    buckets: [Bucket; LogClass::ALL.len()],
}

/// One class's budget and what it held back.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Option<Instant>,
    suppressed: u64,
    /// Level of the first message held back (the summary is logged at it).
    suppressed_level: Level,
    last_suppressed: Option<Instant>,
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket {
            tokens: LIMIT_BURST,
            refilled: None,
            suppressed: 0,
            suppressed_level: Level::Warn,
            last_suppressed: None,
        }
    }
}

impl Bucket {
    /// Whether a message may go now; refills at [`LIMIT_PER_SECOND`].
    fn admit(&mut self, now: Instant) -> bool {
        if let Some(last) = self.refilled {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * LIMIT_PER_SECOND).min(LIMIT_BURST);
        }
        self.refilled = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The summary of what was held back, if anything, and forget it.
    fn take_summary(&mut self, class: LogClass) -> Option<Record> {
        if self.suppressed == 0 {
            return None;
        }
        let n = std::mem::take(&mut self.suppressed);
        self.last_suppressed = None;
        Some(Record {
            level: self.suppressed_level,
            message: format!("ckv: {n} similar messages suppressed ({})", class.name()),
        })
    }
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

    /// Queues a record. Control characters are escaped here as well, so that
    /// a record is one line whatever a caller forgot to escape.
    pub fn push(&self, level: Level, message: impl Into<String>) {
        let message = message.into();
        let message = match escape_untrusted(&message) {
            Cow::Borrowed(_) => message,
            Cow::Owned(escaped) => escaped,
        };
        let mut inner = self.inner.lock();
        self.enqueue(&mut inner, Record { level, message });
    }

    /// Queues a record unless its class has used up its budget (a burst of
    /// 20, then 1 a second). What is held back is counted and reported as
    /// `ckv: N similar messages suppressed (class)` before the next admitted
    /// message of the class, or by [`LogQueue::pop`] once the class has been
    /// quiet for 5 s.
    pub fn push_limited(&self, class: LogClass, level: Level, message: String) {
        self.push_limited_at(Instant::now(), class, level, message);
    }

    fn push_limited_at(&self, now: Instant, class: LogClass, level: Level, message: String) {
        let mut inner = self.inner.lock();
        let bucket = &mut inner.buckets[class.slot()];
        if !bucket.admit(now) {
            if bucket.suppressed == 0 {
                bucket.suppressed_level = level;
            }
            bucket.suppressed += 1;
            bucket.last_suppressed = Some(now);
            return;
        }
        let summary = bucket.take_summary(class);
        drop(inner);
        if let Some(s) = summary {
            self.push(s.level, s.message);
        }
        self.push(level, message);
    }

    fn enqueue(&self, inner: &mut Inner, record: Record) {
        if self.echo_stderr {
            eprintln!("ckv [{}] {}", record.level, record.message);
        }
        if inner.records.len() >= self.capacity {
            inner.records.pop_front();
            inner.dropped += 1;
        }
        inner.records.push_back(record);
    }

    /// The oldest record, if any. After an overflow, a warning saying how many
    /// records were lost comes first; a class that held messages back and has
    /// been quiet since reports its count.
    pub fn pop(&self) -> Option<Record> {
        self.pop_at(Instant::now())
    }

    fn pop_at(&self, now: Instant) -> Option<Record> {
        let mut inner = self.inner.lock();
        if inner.dropped > 0 {
            let n = std::mem::take(&mut inner.dropped);
            return Some(Record {
                level: Level::Warn,
                message: format!("ckv: {n} log records were dropped (log queue full)"),
            });
        }
        for class in LogClass::ALL {
            let bucket = &mut inner.buckets[class.slot()];
            let quiet = bucket
                .last_suppressed
                .is_some_and(|t| now.saturating_duration_since(t) >= LIMIT_QUIET);
            if quiet {
                if let Some(summary) = bucket.take_summary(class) {
                    return Some(summary);
                }
            }
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

    #[test]
    fn control_characters_become_visible_escapes() {
        let cases = [
            ("plain text: ok/100%", "plain text: ok/100%"),
            ("a\nb\r\tc", "a\\nb\\r\\tc"),
            ("\u{1b}[31mred\u{1b}]0;t\u{7}", "\\x1b[31mred\\x1b]0;t\\x07"),
            ("nul\0del\u{7f}", "nul\\x00del\\x7f"),
            ("c1\u{85}\u{9b}", "c1\\u{85}\\u{9b}"),
            ("ls\u{2028}ps\u{2029}", "ls\\u{2028}ps\\u{2029}"),
            ("bidi\u{202e}x\u{2066}", "bidi\\u{202e}x\\u{2066}"),
            ("é ü 日本", "é ü 日本"),
        ];
        for (raw, want) in cases {
            assert_eq!(escape_untrusted(raw), want, "{raw:?}");
            // Escaping is idempotent (the push backstop may run on escaped text).
            assert_eq!(escape_untrusted(want), want);
        }
        assert!(matches!(escape_untrusted("clean"), Cow::Borrowed(_)));
    }

    #[test]
    fn excerpts_are_cut_before_escaping() {
        assert_eq!(excerpt("short\n", 10), "short\\n");
        assert_eq!(excerpt("abc\ndef", 4), "abc\\n…");
        assert_eq!(excerpt("ééé", 3), "é…");
        assert_eq!(
            excerpt(&"A".repeat(100_000), 200).len(),
            200 + '…'.len_utf8()
        );
    }

    #[test]
    fn push_escapes_as_a_backstop() {
        let q = LogQueue::new(8);
        q.push(Level::Warn, "line\n2026-01-01 [emerg] forged\u{1b}[0m");
        let r = q.pop().unwrap();
        assert_eq!(r.message, "line\\n2026-01-01 [emerg] forged\\x1b[0m");
    }

    #[test]
    fn limited_class_admits_a_burst_then_one_per_second_and_counts_the_rest() {
        let q = LogQueue::new(10_000);
        let t0 = Instant::now();
        // A 10 s storm of 1,000 messages per second.
        for i in 0..10_000u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            q.push_limited_at(now, LogClass::MalformedKey, Level::Warn, format!("m{i}"));
        }
        let mut records = Vec::new();
        while let Some(r) = q.pop_at(t0 + Duration::from_secs(10)) {
            records.push(r);
        }
        let admitted = records
            .iter()
            .filter(|r| r.message.starts_with('m'))
            .count();
        assert!((20..=31).contains(&admitted), "{admitted} admitted");
        let summaries: Vec<_> = records
            .iter()
            .filter(|r| {
                r.message
                    .contains("similar messages suppressed (malformed keys)")
            })
            .collect();
        assert_eq!(
            summaries.len(),
            admitted - 20,
            "one summary per admitted after the burst"
        );
        let suppressed: u64 = summaries
            .iter()
            .map(|r| {
                r.message
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        // Every message is either written or counted, except the tail still
        // held back, which the quiet-period report gives later.
        let tail = q.pop_at(t0 + Duration::from_secs(16)).map_or(0, |r| {
            r.message
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        });
        assert_eq!(admitted as u64 + suppressed + tail, 10_000);
        assert!(tail > 0);
    }

    #[test]
    fn classes_have_separate_budgets() {
        let q = LogQueue::new(1000);
        let now = Instant::now();
        for _ in 0..50 {
            q.push_limited_at(now, LogClass::MalformedKey, Level::Warn, "k".into());
        }
        q.push_limited_at(now, LogClass::FollowerRead, Level::Err, "f".into());
        assert_eq!(q.len(), 21);
        // The summary waits for the quiet period, then comes before the rest.
        assert_eq!(q.pop_at(now).unwrap().message, "k");
        let later = now + LIMIT_QUIET;
        let s = q.pop_at(later).unwrap();
        assert_eq!(s.level, Level::Warn);
        assert_eq!(
            s.message,
            "ckv: 30 similar messages suppressed (malformed keys)"
        );
    }
}
