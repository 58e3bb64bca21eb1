//! `make bench`, part 3 (full refresh): CPU time ckv spends on one full-prefix
//! Consul response, step by step, next to serde_json merely parsing the same
//! bytes.
//!
//! Usage: ckv-bench SERVER_URL PREFIX=BODY_FILE... (one JSON line per file on
//! stdout). Each figure is the median over several repetitions, in thread CPU
//! time (CLOCK_THREAD_CPUTIME_ID) and wall time. Heap figures come from a
//! counting global allocator (live bytes and the peak since a reset).

use std::borrow::Cow;
use std::time::Instant;

use base64::Engine as _;
use ckv::kv::{self, Field, RawEntry, Rules};
use ckv::model::ServerModel;
use ckv::shared::codec;
use ckv::snapshot::Snapshot;

mod heap;

fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[derive(Clone, Copy)]
struct Sample {
    cpu: u64,
    wall: u64,
}

/// Runs `f` `reps` times (after one warm-up), returns the median CPU and wall
/// times. `setup` runs before each repetition, outside the measurement.
fn measure<S, T>(reps: usize, mut setup: impl FnMut() -> S, mut f: impl FnMut(S) -> T) -> Sample {
    let s = setup();
    std::hint::black_box(f(s));
    let mut cpu = Vec::with_capacity(reps);
    let mut wall = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = setup();
        let c0 = cpu_ns();
        let w0 = Instant::now();
        let out = f(s);
        let w = w0.elapsed().as_nanos() as u64;
        let c = cpu_ns() - c0;
        std::hint::black_box(out);
        cpu.push(c);
        wall.push(w);
    }
    cpu.sort_unstable();
    wall.sort_unstable();
    Sample {
        cpu: cpu[reps / 2],
        wall: wall[reps / 2],
    }
}

fn snapshot_of(model: &ServerModel, seq: u64) -> Snapshot {
    // As the engine's publish_from: every model's services in one table.
    let meta = ckv::snapshot::Meta {
        seq,
        synced: true,
        ..Default::default()
    };
    Snapshot::new(meta, ckv::model::service_refs(std::slice::from_ref(model)))
}

/// A read-only mapping of one of the bench's own snapshot files (opened
/// and mapped inside the measurement, as a follower does).
fn map(path: &std::path::Path) -> memmap2::Mmap {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: the bench's own file, not written while mapped.
    unsafe { memmap2::Mmap::map(&f) }.unwrap()
}

/// The same entries with one value changed (a weight edit on one node).
fn with_one_change<'a>(entries: &[RawEntry<'a>]) -> Vec<RawEntry<'a>> {
    let mut out = entries.to_vec();
    let i = out.len() / 2;
    out[i].value = Field::Ok(Cow::Owned(
        base64::engine::general_purpose::STANDARD.encode(r#"{"weight":77}"#),
    ));
    out
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: ckv-bench SERVER_URL PREFIX=BODY_FILE...");
        std::process::exit(2);
    }
    let url = args[1].clone();
    for arg in &args[2..] {
        let (prefix, file) = arg.split_once('=').expect("PREFIX=BODY_FILE");
        let rules = Rules {
            prefix: prefix.to_owned(),
            skip_keys: vec![],
            default_weight: 1,
        };
        let body = std::fs::read(file).expect("read body");
        let n_keys = kv::parse_response(&body).expect("parse").len();
        let reps = if n_keys >= 50_000 {
            7
        } else if n_keys >= 5_000 {
            21
        } else {
            101
        };

        // serde_json alone.
        let value = measure(
            reps,
            || (),
            |()| serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        );
        let ignored = measure(
            reps,
            || (),
            |()| serde_json::from_slice::<serde::de::IgnoredAny>(&body).unwrap(),
        );
        // ckv steps.
        let parse = measure(reps, || (), |()| kv::parse_response(&body).unwrap());
        let entries = kv::parse_response(&body).unwrap();
        let apply_cold = measure(
            reps,
            || ServerModel::new(0, &url, rules.clone()),
            |mut m| {
                let _ = m.apply(&entries, 1);
                m
            },
        );
        let changed = with_one_change(&entries);
        let apply_warm = measure(
            reps,
            || {
                let mut m = ServerModel::new(0, &url, rules.clone());
                let _ = m.apply(&entries, 1);
                m
            },
            |mut m| {
                // (the return type is not relied on: it is evolving)
                let _ = m.apply(&changed, 2);
                m
            },
        );
        let mut model = ServerModel::new(0, &url, rules.clone());
        let _ = model.apply(&entries, 1);
        let services = model.service_count();
        let render = measure(
            reps,
            || (),
            |()| {
                let s = snapshot_of(&model, 1);
                let b = codec::encode(&s);
                (s, b)
            },
        );
        let snap1 = snapshot_of(&model, 1);
        let file1 = codec::encode(&snap1);
        let mut model2 = ServerModel::new(0, &url, rules.clone());
        let _ = model2.apply(&entries, 1);
        let _ = model2.apply(&changed, 2);
        let file2 = codec::encode(&snapshot_of(&model2, 2));
        // The leader after one changed value: the previous snapshot patched
        // (no service added or removed), against building it anew.
        let meta2 = ckv::snapshot::Meta {
            seq: 2,
            synced: true,
            ..Default::default()
        };
        // As the leader does it: from the model's services as they are
        // listed, into the buffer of the snapshot the previous patch made.
        let models2 = std::slice::from_ref(&model2);
        let patch = |room| {
            Snapshot::patched(&snap1, meta2, ckv::model::each_service(models2), room)
                .expect("patchable")
        };
        let snapshot_patched = measure(
            reps,
            || Snapshot::into_heap_bytes(std::sync::Arc::new(patch(Vec::new()))).unwrap(),
            patch,
        );
        let snapshot_built = measure(reps, || (), |()| snapshot_of(&model2, 2));
        let decode_cold = measure(reps, || (), |()| codec::decode(&file1, None).unwrap());
        // What a follower does: map the leader's file read-only and validate
        // it in place (tmpfs, as the shared directory).
        let shm = if std::path::Path::new("/dev/shm").is_dir() {
            std::path::PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let snap_path = shm.join(format!("ckv-bench-snap.{}", std::process::id()));
        std::fs::write(&snap_path, &file1).expect("write snapshot file");
        let map_open = measure(reps, || (), |()| codec::open(map(&snap_path)).unwrap());
        // The next file (one changed value, patched by the leader) opened
        // against the mapping the follower serves.
        let held = codec::open(map(&snap_path)).unwrap();
        let next_file = codec::encode(&patch(Vec::new()));
        let next_path = shm.join(format!("ckv-bench-next.{}", std::process::id()));
        std::fs::write(&next_path, &next_file).expect("write snapshot file");
        let map_open_after = measure(
            reps,
            || (),
            |()| codec::open_after(map(&next_path), &held).unwrap(),
        );
        let _ = std::fs::remove_file(&next_path);
        let _ = std::fs::remove_file(&snap_path);
        let decode_warm = measure(
            reps,
            || (),
            |()| codec::decode(&file2, Some(&snap1)).unwrap(),
        );
        // The whole leader path for one response, as the watcher does it.
        let total_cold = measure(
            reps,
            || ServerModel::new(0, &url, rules.clone()),
            |mut m| {
                // The parsed entries are dropped inside (as after each
                // response); the model is kept (returned), as the leader does.
                let e = kv::parse_response(&body).unwrap();
                let _ = m.apply(&e, 1);
                drop(e);
                let s = snapshot_of(&m, 1);
                let bytes = codec::encode(&s);
                (m, s, bytes)
            },
        );

        // Heap: what a cold apply leaves behind (model, then model +
        // snapshot; the parsed entries and the encoded file are dropped, as
        // the leader drops them) and the peak while it runs; then what one
        // follower's decoded copy holds.
        heap::counting(true);
        let (heap_model, heap_model_snapshot, heap_peak) = {
            let base = heap::live();
            heap::reset_peak();
            let mut m = ServerModel::new(0, &url, rules.clone());
            let e = kv::parse_response(&body).unwrap();
            let _ = m.apply(&e, 1);
            drop(e);
            let model_only = heap::live() - base;
            let s = snapshot_of(&m, 1);
            let bytes = codec::encode(&s);
            drop(bytes);
            let both = heap::live() - base;
            let peak = heap::peak() - base;
            drop((m, s));
            (model_only, both, peak)
        };
        let (heap_follower, heap_follower_peak) = {
            let base = heap::live();
            heap::reset_peak();
            let s = codec::decode(&file1, None).unwrap();
            let live = heap::live() - base;
            let peak = heap::peak() - base;
            drop(s);
            (live, peak)
        };
        heap::counting(false);

        // The rows of issue 14: first full sync = leader's whole path for a
        // cold response + one follower's map and validation of the file;
        // one change = parse of the whole response + warm apply (one changed
        // value).
        let first_sync = total_cold.cpu + map_open.cpu;
        let one_change = parse.cpu + apply_warm.cpu;

        let mb = body.len() as f64 / 1e6;
        let rate = |s: Sample| mb / (s.cpu as f64 / 1e9);
        let j = serde_json::json!({
            "file": file,
            "keys": n_keys,
            "services": services,
            "bytes": body.len(),
            "snapshot_file_bytes": file1.len(),
            "reps": reps,
            "first_full_sync_cpu_ms": ms(first_sync),
            "one_change_parse_apply_cpu_ms": ms(one_change),
            "heap_bytes": {
                "model_after_cold_apply": heap_model,
                "model_and_snapshot_after_cold_apply": heap_model_snapshot,
                "peak_during_cold_apply_and_encode": heap_peak,
                "follower_decoded_snapshot": heap_follower,
                "follower_decode_peak": heap_follower_peak,
                "body": body.len(),
            },
            "cpu_ms": {
                "serde_value": ms(value.cpu),
                "serde_ignored": ms(ignored.cpu),
                "parse_response": ms(parse.cpu),
                "apply_cold": ms(apply_cold.cpu),
                "apply_warm_one_change": ms(apply_warm.cpu),
                "render_snapshot_encode": ms(render.cpu),
                "snapshot_one_change_built": ms(snapshot_built.cpu),
                "snapshot_one_change_patched": ms(snapshot_patched.cpu),
                "follower_decode_cold": ms(decode_cold.cpu),
                "follower_decode_warm": ms(decode_warm.cpu),
                "follower_map_open": ms(map_open.cpu),
                "follower_map_open_after_one_change": ms(map_open_after.cpu),
                "leader_total_cold": ms(total_cold.cpu),
            },
            "wall_ms": {
                "serde_value": ms(value.wall),
                "serde_ignored": ms(ignored.wall),
                "parse_response": ms(parse.wall),
                "apply_cold": ms(apply_cold.wall),
                "apply_warm_one_change": ms(apply_warm.wall),
                "render_snapshot_encode": ms(render.wall),
                "snapshot_one_change_built": ms(snapshot_built.wall),
                "snapshot_one_change_patched": ms(snapshot_patched.wall),
                "follower_decode_cold": ms(decode_cold.wall),
                "follower_decode_warm": ms(decode_warm.wall),
                "follower_map_open": ms(map_open.wall),
                "follower_map_open_after_one_change": ms(map_open_after.wall),
                "leader_total_cold": ms(total_cold.wall),
            },
            "mb_per_s": {
                "serde_value": rate(value),
                "serde_ignored": rate(ignored),
                "parse_response": rate(parse),
                "leader_total_cold": rate(total_cold),
            },
        });
        println!("{j}");
    }
}
