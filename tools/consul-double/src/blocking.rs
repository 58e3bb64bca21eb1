//! Blocking queries (`?index=N&wait=D`), as `blockingquery.Query` does them.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::config::Config;
use crate::gocompat::GoDuration;
use crate::state::Shared;
use crate::store::Store;

/// What a KV read looks at.
#[derive(Clone, Debug)]
pub enum View {
    /// Single key (`KVS.Get`).
    Key(Vec<u8>),
    /// `?recurse` (`KVS.List`).
    List(Vec<u8>),
    /// `?keys` with a separator (`KVS.ListKeys`).
    Keys(Vec<u8>, Vec<u8>),
}

impl View {
    pub fn key(&self) -> &[u8] {
        match self {
            View::Key(k) | View::List(k) | View::Keys(k, _) => k,
        }
    }

    /// The view's index and, for a single key, whether it exists.
    pub fn evaluate(&self, store: &Store, now: Instant) -> (u64, bool) {
        match self {
            View::Key(k) => (store.key_index(k), store.get(k).is_some()),
            View::List(p) | View::Keys(p, _) => (store.prefix_index(p, now), true),
        }
    }
}

/// `RPCQueryTimeout`: cap to max, `<= 0` or absent means default, then add
/// `RandomStagger(W/16)`.
pub fn effective_timeout(cfg: &Config, wait: Option<GoDuration>) -> Duration {
    let w = match wait {
        Some(n) if n > 0 => Duration::from_nanos(n as u64),
        _ => cfg.default_wait,
    };
    let w = if w > cfg.max_wait { cfg.max_wait } else { w };
    let stagger = (w / 16).as_nanos() as u64;
    let jitter = if stagger == 0 {
        0
    } else {
        rand::thread_rng().gen_range(0..stagger)
    };
    w + Duration::from_nanos(jitter)
}

/// How a blocking wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// Evaluate the view and answer (changed, timed out or abandoned).
    Answer,
    /// A `drop_connection` fault asked for the connection to be dropped.
    Drop,
}

/// Blocks until the view's index exceeds `min_index`, the timeout passes,
/// a restore abandons the state, or a drop fault hits.
pub async fn wait(shared: &Shared, view: &View, min_index: u64, timeout: Duration) -> Wake {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut change = shared.change.subscribe();
    let mut abandon = shared.abandon.subscribe();
    let mut drops = shared.drop_blocked.subscribe();
    abandon.borrow_and_update();
    drops.borrow_and_update();
    let mut min_index = min_index;
    let mut not_found = false;
    loop {
        change.borrow_and_update();
        let (index, found) = view.evaluate(&shared.read(), Instant::now());
        if let View::Key(_) = view {
            // ErrNotFound refinement (1.12+): a missing key that stays
            // missing keeps blocking across unrelated KV changes.
            if !found {
                if not_found {
                    min_index = index;
                }
                not_found = true;
            }
        }
        if index > min_index {
            return Wake::Answer;
        }
        tokio::select! {
            r = change.changed() => {
                if r.is_err() {
                    return Wake::Answer;
                }
            }
            _ = abandon.changed() => return Wake::Answer,
            r = drops.changed() => {
                if r.is_err() {
                    return Wake::Answer;
                }
                let hit = view.key().starts_with(&drops.borrow_and_update().prefix);
                if hit {
                    return Wake::Drop;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Wake::Answer,
        }
    }
}
