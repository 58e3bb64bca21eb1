//! The running library inside one process: the snapshot readers see, the
//! background threads that keep it current, and the statistics and log queue
//! the host pulls.
//!
//! A process plays one [`Role`]:
//! * standalone (no `share.group`, sharing off, or the shared directory could
//!   not be used): it watches Consul itself;
//! * leader (`leader.rs`): it holds the group's leader lock, watches Consul
//!   and publishes each snapshot to the other processes;
//! * follower (`follower.rs`): it reads the leader's snapshots and takes over
//!   when the leader goes.
//!
//! Threads (all named `ckv-*`, all with every signal blocked so that the
//! host's signal handling is untouched, all at nice 10 so that the host's
//! event loops come first):
//! * `ckv-runtime`: a single-threaded tokio runtime. In the leader (and when
//!   standalone) it runs one watch per server, the dump writer and the stats
//!   writer.
//! * `ckv-follow` (sharing on): follows the leader's snapshots through the
//!   futex and tries the leader lock every 50 ms until it gets it.

mod follower;
mod leader;
mod startup;
mod state;
mod threads;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::config::Config;
use crate::log::{Level, LogQueue};
use crate::snapshot::Snapshot;
pub use startup::config_fingerprint;
pub use state::Role;
use state::Shared;

#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    pid: u32,
}

impl Engine {
    /// Starts the engine for `config`. Everything checkable is checked here,
    /// so that a bad configuration fails `ckv_init`: the TLS setup (CA file),
    /// the dump directory, the runtime. Blocking work done here, before the
    /// first request: joining the group, reading the current shared snapshot
    /// or the dump file. Consul is never contacted on this thread.
    pub fn start(config: Config) -> Result<Engine, String> {
        let config = Arc::new(config);
        startup::check_dump_dir(&config)?;
        let client = crate::watcher::build_client(&config)?;
        let runtime = leader::build_runtime()?;
        let (group, share_error) = startup::join_group(&config);
        let shared = Arc::new(Shared::new(config, group, share_error));
        if let Some(e) = &shared.share_error {
            shared.log(
                Level::Warn,
                format!("ckv: not sharing a watch: {e}; this process watches Consul itself (standalone)"),
            );
        }
        startup::load_initial(&shared);

        let (stop, stop_rx) = watch::channel(false);
        let mut threads = Vec::new();
        let rt_shared = shared.clone();
        let rt_stop = stop_rx.clone();
        threads.push(threads::spawn_quiet("ckv-runtime", move || {
            leader::run(runtime, client, rt_shared, rt_stop)
        })?);
        if shared.group.load().is_some() {
            let f_shared = shared.clone();
            threads.push(threads::spawn_quiet("ckv-follow", move || {
                follower::follow(f_shared, stop_rx)
            })?);
        } else {
            leader::take_leadership(&shared);
        }
        Ok(Engine {
            shared,
            stop,
            threads: Mutex::new(threads),
            pid: std::process::id(),
        })
    }

    /// The process that started the engine (to detect use after fork).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The snapshot to read from now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// A counter that moves whenever the snapshot is replaced.
    pub fn generation(&self) -> &std::sync::atomic::AtomicU32 {
        &self.shared.generation
    }

    /// Wakes C readers after every publish (`ckv_wait_change`, `ckv_notify_fd`).
    pub fn change_signal(&self) -> &crate::notify::ChangeSignal {
        &self.shared.change
    }

    pub fn logs(&self) -> &LogQueue {
        &self.shared.logs
    }

    /// This process's role now.
    pub fn role(&self) -> Role {
        self.shared.role()
    }

    /// Statistics as JSON. A follower reports the leader's view of the
    /// servers (from the shared directory) with its own snapshot figures.
    pub fn stats_json(&self) -> String {
        let stats = self.shared.stats_now();
        serde_json::to_string(&stats).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The statistics in Prometheus' text format ([`crate::metrics`]).
    pub fn metrics_text(&self) -> String {
        crate::metrics::render(&self.shared.stats_now())
    }

    /// Stops the threads, waiting at most `timeout`, and gives up leadership
    /// so that another process of the group takes over the watch. Returns
    /// false when a thread did not stop in time (it is then left detached).
    pub fn shutdown(&self, timeout: Duration) -> bool {
        if self.shared.stopped.swap(true, Ordering::AcqRel) {
            return true;
        }
        let _ = self.stop.send(true);
        self.shared.dump_dirty.notify_one();
        let deadline = Instant::now() + timeout;
        let mut all = true;
        for t in self.threads.lock().drain(..) {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                all = false;
            }
        }
        if let Some(g) = self.shared.group.swap(None) {
            if self.shared.swap_role(Role::Follower) == Role::Leader {
                self.shared.log(
                    Level::Notice,
                    format!(
                        "ckv: process {} stopped watching Consul; another worker takes over",
                        std::process::id()
                    ),
                );
            }
            g.release_leadership();
        }
        all
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if std::process::id() == self.pid {
            self.shutdown(Duration::from_secs(2));
        }
    }
}
