//! A process of a group that is not the leader: it serves the leader's
//! snapshots and takes the leader lock when the leader goes.
//!
//! A follower serves each snapshot from a read-only mapping of the leader's
//! file, validated once when mapped (`shared::codec`); the mapping lives as
//! long as a reader holds that snapshot.
//!
//! A publish wakes the follower at once (futex in the shared header); the
//! leader lock is tried without blocking every `ELECTION_POLL`, so a dead
//! leader is replaced within that time. A snapshot that cannot be read is
//! reported once per streak of failures and retried with a growing delay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::leader;
use super::state::{Role, Shared};
use crate::log::{Level, LogClass};
use crate::shared::codec;

/// How often a follower tries to take the leader lock. A dead leader is
/// replaced within this (well under the 1 s promised).
const ELECTION_POLL: Duration = Duration::from_millis(50);
/// Longest wait between two tries of a snapshot that could not be read.
const MAX_READ_RETRY: Duration = Duration::from_secs(5);

/// One kind of failure, reported once until it stops.
#[derive(Debug, Default)]
struct Streak {
    failing: bool,
    retry: Duration,
    next_try: Option<Instant>,
}

impl Streak {
    fn may_try(&self) -> bool {
        self.next_try.map_or(true, |t| Instant::now() >= t)
    }

    /// Returns true for the first failure of a streak (the one to log).
    fn fail(&mut self) -> bool {
        self.retry = (self.retry * 2).clamp(ELECTION_POLL, MAX_READ_RETRY);
        self.next_try = Some(Instant::now() + self.retry);
        !std::mem::replace(&mut self.failing, true)
    }

    /// Returns true when this ends a streak (worth a notice).
    fn succeed(&mut self) -> bool {
        self.retry = Duration::ZERO;
        self.next_try = None;
        std::mem::replace(&mut self.failing, false)
    }
}

/// The follower thread: follow the leader until this process leads.
pub fn follow(shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let Some(group) = shared.group.load_full() else {
        return;
    };
    let mut seen_seq = shared.current.load().seq;
    let mut reading = Streak::default();
    let mut locking = Streak::default();
    loop {
        if *stop.borrow() {
            return;
        }
        let word = group.wake_word();
        if shared.role() != Role::Follower {
            return;
        }
        let latest = group.seq();
        if latest != seen_seq && reading.may_try() {
            let result = group
                .read_latest()
                .map_err(|e| {
                    format!(
                        "cannot read shared snapshot in {}: {e}",
                        group.dir().display()
                    )
                })
                .and_then(|found| match found {
                    Some((seq, map)) => {
                        // A snapshot that does not validate is never retried.
                        seen_seq = seq;
                        codec::open_after(map, &shared.current.load())
                            .map(Some)
                            .map_err(|e| format!("shared snapshot {seq} is unusable: {e}"))
                    }
                    None => Ok(None),
                });
            match result {
                Ok(Some(s)) => {
                    shared.publish_observed(s);
                    // The previous snapshot may be gone now (unless a reader
                    // still holds it): give its heap back.
                    crate::memory::release_free_memory();
                    if reading.succeed() {
                        shared.log(
                            Level::Notice,
                            "ckv: reading the leader's snapshots again".into(),
                        );
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    if reading.fail() {
                        shared.logs.push_limited(
                            LogClass::FollowerRead,
                            Level::Err,
                            format!("ckv: {e}; keeping the previous snapshot and retrying"),
                        );
                    }
                }
            }
        }
        match group.try_lead() {
            Ok(true) => {
                // From now on the runtime thread does the work.
                leader::take_leadership(&shared);
                return;
            }
            Ok(false) => {
                locking.succeed();
            }
            Err(e) => {
                if locking.fail() {
                    shared.log(
                        Level::Err,
                        format!("ckv: leader lock in {}: {e}", group.dir().display()),
                    );
                }
            }
        }
        group.wait(word, ELECTION_POLL);
    }
}
