//! Every exported function against hostile arguments: NULL pointers, zero
//! lengths, invalid UTF-8, oversized inputs, small buffers, use after fork.
//! Each must answer with its documented status code and never crash.

use std::ffi::CStr;
use std::ptr;

use ckv::ffi::*;

const CONFIG: &str = r#"{"servers":["http://127.0.0.1:1"],"share":{"enabled":false},
    "backoff":{"initial":1000,"max":1000}}"#;

fn init(config: &str) -> Result<*mut ckv_handle, (ckv_status, String)> {
    let mut h = ptr::null_mut();
    let mut err = [0u8; 512];
    let mut err_len = err.len();
    let rc = ckv_init(
        config.as_ptr(),
        config.len(),
        &mut h,
        err.as_mut_ptr(),
        &mut err_len,
    );
    if rc == ckv_status::CKV_OK {
        Ok(h)
    } else {
        Err((rc, String::from_utf8_lossy(&err[..err_len]).into_owned()))
    }
}

#[test]
fn versions_and_status_strings() {
    assert_eq!(ckv_abi_version(), CKV_ABI_VERSION);
    let v = unsafe { CStr::from_ptr(ckv_version()) }.to_str().unwrap();
    assert_eq!(v, concat!("ckv/", env!("CARGO_PKG_VERSION")));
    let s = |code| {
        unsafe { CStr::from_ptr(ckv_status_str(code)) }
            .to_str()
            .unwrap()
    };
    assert_eq!(s(0), "ok");
    assert_eq!(s(5), "output buffer too small");
    assert_eq!(s(99), "internal error (panic caught)");
    assert_eq!(s(-1), "unknown status");
    assert_eq!(s(12345), "unknown status");
}

#[test]
fn init_rejects_bad_arguments_with_messages() {
    // NULL out.
    let rc = ckv_init(
        CONFIG.as_ptr(),
        CONFIG.len(),
        ptr::null_mut(),
        ptr::null_mut(),
        ptr::null_mut(),
    );
    assert_eq!(rc, ckv_status::CKV_ERR_NULL_ARGUMENT);
    // NULL config with a length.
    let mut h = ptr::null_mut();
    let rc = ckv_init(ptr::null(), 10, &mut h, ptr::null_mut(), ptr::null_mut());
    assert_eq!(rc, ckv_status::CKV_ERR_NULL_ARGUMENT);
    assert!(h.is_null(), "out written on failure");
    // Zero length: an empty document is not a config.
    let rc = ckv_init(ptr::null(), 0, &mut h, ptr::null_mut(), ptr::null_mut());
    assert_eq!(rc, ckv_status::CKV_ERR_INVALID_CONFIG);
    // Invalid UTF-8.
    let bad = b"{\"servers\":[\"\xff\"]}";
    let rc = ckv_init(
        bad.as_ptr(),
        bad.len(),
        &mut h,
        ptr::null_mut(),
        ptr::null_mut(),
    );
    assert_eq!(rc, ckv_status::CKV_ERR_INVALID_UTF8);
    // Oversized.
    let huge = vec![b' '; CKV_MAX_CONFIG_BYTES + 1];
    let rc = ckv_init(
        huge.as_ptr(),
        huge.len(),
        &mut h,
        ptr::null_mut(),
        ptr::null_mut(),
    );
    assert_eq!(rc, ckv_status::CKV_ERR_TOO_LARGE);
    // A refused field is named in the message.
    let (rc, msg) = init(r#"{"servers":["ftp://x"]}"#).unwrap_err();
    assert_eq!(rc, ckv_status::CKV_ERR_INVALID_CONFIG);
    assert!(msg.starts_with("servers[0]: "), "{msg}");
    // A short error buffer truncates, never overflows.
    let mut err = [0u8; 8];
    let mut err_len = err.len();
    let bad = br#"{"servers":[]}"#;
    let rc = ckv_init(
        bad.as_ptr(),
        bad.len(),
        &mut h,
        err.as_mut_ptr(),
        &mut err_len,
    );
    assert_eq!(rc, ckv_status::CKV_ERR_INVALID_CONFIG);
    assert_eq!(err_len, 8);
}

#[test]
fn token_never_in_errors() {
    let (_, msg) = init(
        r#"{"servers":["http://127.0.0.1:1"],"token":"s3cr3t-token","weight":"s3cr3t-token"}"#,
    )
    .unwrap_err();
    assert!(!msg.contains("s3cr3t"), "{msg}");
}

#[test]
fn null_handles_are_refused_everywhere() {
    let mut len = 0usize;
    let mut gen = 0u64;
    let mut level = 0i32;
    let mut buf = [0u8; 16];
    let name = b"x";
    let null = ptr::null();
    assert!(ckv_generation_ptr(null).is_null());
    assert_eq!(
        ckv_nodes(
            null,
            name.as_ptr(),
            1,
            buf.as_mut_ptr(),
            16,
            &mut len,
            &mut gen
        ),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        ckv_service_generation(null, name.as_ptr(), 1, &mut gen),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        ckv_all_nodes(null, buf.as_mut_ptr(), 16, &mut len, &mut gen),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        ckv_stats(null, buf.as_mut_ptr(), 16, &mut len),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        ckv_log_next(null, buf.as_mut_ptr(), 16, &mut len, &mut level),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        ckv_shutdown(ptr::null_mut(), 10),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    ckv_free(ptr::null_mut());
}

#[test]
fn reads_check_every_argument() {
    let h = init(CONFIG).unwrap();
    let mut len = 0usize;
    let mut gen = 0u64;
    let mut buf = [0u8; 64];
    // Unknown service.
    let name = b"http://127.0.0.1:1/v1/kv/upstreams/none/";
    assert_eq!(
        ckv_nodes(
            h,
            name.as_ptr(),
            name.len(),
            buf.as_mut_ptr(),
            64,
            &mut len,
            &mut gen
        ),
        ckv_status::CKV_ERR_NOT_FOUND
    );
    // NULL name with a length; zero-length name is just unknown.
    assert_eq!(
        ckv_nodes(h, ptr::null(), 3, buf.as_mut_ptr(), 64, &mut len, &mut gen),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        ckv_service_generation(h, b"".as_ptr(), 0, &mut gen),
        ckv_status::CKV_ERR_NOT_FOUND
    );
    // NULL out_generation for service_generation.
    assert_eq!(
        ckv_service_generation(h, name.as_ptr(), name.len(), ptr::null_mut()),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    // Invalid UTF-8 and oversized names.
    let bad = b"\xc3\x28";
    assert_eq!(
        ckv_nodes(h, bad.as_ptr(), 2, buf.as_mut_ptr(), 64, &mut len, &mut gen),
        ckv_status::CKV_ERR_INVALID_UTF8
    );
    let long = vec![b'a'; CKV_MAX_NAME_BYTES + 1];
    assert_eq!(
        ckv_service_generation(h, long.as_ptr(), long.len(), &mut gen),
        ckv_status::CKV_ERR_TOO_LARGE
    );
    // Size query: NULL buffer and zero capacity report the size needed.
    assert_eq!(
        ckv_all_nodes(h, ptr::null_mut(), 0, &mut len, ptr::null_mut()),
        ckv_status::CKV_ERR_BUFFER_TOO_SMALL
    );
    assert_eq!(len, 2, "{{}} for no services");
    // NULL out_len.
    assert_eq!(
        ckv_all_nodes(h, buf.as_mut_ptr(), 64, ptr::null_mut(), ptr::null_mut()),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    // Stats: too small, then right.
    assert_eq!(
        ckv_stats(h, buf.as_mut_ptr(), 4, &mut len),
        ckv_status::CKV_ERR_BUFFER_TOO_SMALL
    );
    // The watcher may change the figures between the two calls (its state,
    // its last error): grow and call again, as the conventions say.
    let mut big = Vec::new();
    let mut status = ckv_status::CKV_ERR_BUFFER_TOO_SMALL;
    for _ in 0..10 {
        big.resize(len + 256, 0);
        status = ckv_stats(h, big.as_mut_ptr(), big.len(), &mut len);
        if status != ckv_status::CKV_ERR_BUFFER_TOO_SMALL {
            break;
        }
    }
    assert_eq!(status, ckv_status::CKV_OK);
    let stats: serde_json::Value = serde_json::from_slice(&big[..len]).unwrap();
    assert_eq!(stats["role"], "standalone");
    assert_eq!(stats["servers"][0]["url"], "http://127.0.0.1:1");
    // The generation pointer is readable.
    let g = ckv_generation_ptr(h);
    assert!(!g.is_null());
    let _ = unsafe { ptr::read_volatile(g) };
    // Logs: a zero-capacity buffer with NULL is fine; NULL out params are not.
    let mut level = 0i32;
    assert_eq!(
        ckv_log_next(h, ptr::null_mut(), 8, &mut len, &mut level),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        ckv_log_next(h, buf.as_mut_ptr(), 64, ptr::null_mut(), &mut level),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    // Log records drain until EMPTY. The watcher logs its start (and its
    // connection failures: port 1 refuses).
    let mut got = 0;
    let mut big = vec![0u8; 4096];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while got < 2 && std::time::Instant::now() < deadline {
        let rc = ckv_log_next(h, big.as_mut_ptr(), big.len(), &mut len, &mut level);
        if rc == ckv_status::CKV_ERR_EMPTY {
            std::thread::sleep(std::time::Duration::from_millis(5));
            continue;
        }
        assert_eq!(rc, ckv_status::CKV_OK);
        assert!(len <= big.len());
        assert!((4..=8).contains(&level));
        got += 1;
    }
    assert_eq!(got, 2, "the watcher logs its start and its first failure");
    assert_eq!(ckv_shutdown(h, 2000), ckv_status::CKV_OK);
    // Shut down twice is fine; reads still answer from the last snapshot.
    assert_eq!(ckv_shutdown(h, 2000), ckv_status::CKV_OK);
    assert_eq!(
        ckv_all_nodes(h, buf.as_mut_ptr(), 64, &mut len, ptr::null_mut()),
        ckv_status::CKV_OK
    );
    ckv_free(h);
}

#[test]
fn a_handle_used_after_fork_refuses_to_work() {
    let h = init(CONFIG).unwrap();
    let mut gen = 0u64;
    // SAFETY: the child only makes FFI calls that check the pid first and
    // then leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let name = b"x";
        let ok = ckv_service_generation(h, name.as_ptr(), 1, &mut gen)
            == ckv_status::CKV_ERR_FORKED
            && ckv_generation_ptr(h).is_null()
            && ckv_shutdown(h, 10) == ckv_status::CKV_ERR_FORKED;
        ckv_free(h); // leaks in the child on purpose; must not hang
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    ckv_free(h);
}

mod common;

use std::time::{Duration, Instant};

fn status_text(code: ckv_status) -> String {
    unsafe { CStr::from_ptr(ckv_status_str(code as i32)) }
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn every_status_has_its_own_text() {
    for s in ckv_status::ALL {
        assert_ne!(status_text(*s), "unknown status", "{s:?}");
    }
    assert_eq!(status_text(ckv_status::CKV_ERR_TIMEOUT), "timed out");
}

/// D19: a record that does not fit is kept, with its size, not lost.
#[test]
fn a_log_record_too_big_for_the_buffer_is_kept_and_sized() {
    let h = init(CONFIG).unwrap();
    let mut len = usize::MAX;
    let mut level = 0i32;
    // Wait for the first record (the watcher logs its start).
    let deadline = Instant::now() + Duration::from_secs(5);
    let rc = loop {
        let rc = ckv_log_next(h, ptr::null_mut(), 0, &mut len, &mut level);
        if rc != ckv_status::CKV_ERR_EMPTY || Instant::now() > deadline {
            break rc;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(rc, ckv_status::CKV_ERR_BUFFER_TOO_SMALL);
    let size = len;
    assert!(size > 4, "the size of the record: {size}");
    // Too small again: the same record, the same size.
    let mut small = [0u8; 4];
    assert_eq!(
        ckv_log_next(h, small.as_mut_ptr(), small.len(), &mut len, &mut level),
        ckv_status::CKV_ERR_BUFFER_TOO_SMALL
    );
    assert_eq!(len, size);
    // Big enough: the whole record, then the queue goes on.
    let mut buf = vec![0u8; size];
    assert_eq!(
        ckv_log_next(h, buf.as_mut_ptr(), buf.len(), &mut len, &mut level),
        ckv_status::CKV_OK
    );
    assert_eq!(len, size);
    let text = std::str::from_utf8(&buf[..len]).unwrap();
    assert!(text.starts_with("ckv"), "{text}");
    assert!((4..=8).contains(&level));
    ckv_free(h);
}

#[test]
fn a_config_that_is_not_utf8_names_the_byte_offset() {
    let bad = b"{\"servers\":[\"http://a\xff\"]}";
    let mut h = ptr::null_mut();
    let mut err = [0u8; 256];
    let mut err_len = err.len();
    let rc = ckv_init(
        bad.as_ptr(),
        bad.len(),
        &mut h,
        err.as_mut_ptr(),
        &mut err_len,
    );
    assert_eq!(rc, ckv_status::CKV_ERR_INVALID_UTF8);
    let msg = std::str::from_utf8(&err[..err_len]).unwrap();
    assert_eq!(msg, "config: not valid UTF-8 at byte offset 21");
    assert!(h.is_null());
}

/// A handle on the double with `prefix`, fast timeouts.
fn init_on(double: &common::Double, extra: &str) -> *mut ckv_handle {
    let config = format!(
        r#"{{"servers":["{}"],"prefix":"upstreams",{extra}
            "timeout":{{"connect":200,"read":300,"wait":1}},
            "backoff":{{"initial":20,"max":200}},"share":{{"enabled":false}}}}"#,
        double.url()
    );
    init(&config).unwrap()
}

fn name_of(double: &common::Double, service: &str) -> String {
    format!("{}/v1/kv/upstreams/{service}/", double.url())
}

fn get_list(h: *const ckv_handle, name: &str) -> Result<*const ckv_node_list, ckv_status> {
    let mut list = ptr::null();
    match ckv_nodes_get(h, name.as_ptr(), name.len(), &mut list) {
        ckv_status::CKV_OK => Ok(list),
        rc => Err(rc),
    }
}

fn node(list: *const ckv_node_list, i: usize) -> ckv_node {
    let mut n = std::mem::MaybeUninit::<ckv_node>::uninit();
    assert_eq!(
        ckv_node_list_get(list, i, n.as_mut_ptr()),
        ckv_status::CKV_OK
    );
    unsafe { n.assume_init() }
}

fn host(n: &ckv_node) -> &str {
    let b = unsafe { std::slice::from_raw_parts(n.host, n.host_len + 1) };
    assert_eq!(b[n.host_len], 0, "host is NUL-terminated");
    std::str::from_utf8(&b[..n.host_len]).unwrap()
}

fn metadata(n: &ckv_node) -> Option<&str> {
    if n.metadata.is_null() {
        return None;
    }
    let b = unsafe { std::slice::from_raw_parts(n.metadata, n.metadata_len) };
    Some(std::str::from_utf8(b).unwrap())
}

fn wait_seq(h: *const ckv_handle, seen: u64) -> u64 {
    let mut seq = 0;
    assert_eq!(
        ckv_wait_change(h, seen, 5000, &mut seq),
        ckv_status::CKV_OK,
        "no change after {seen}"
    );
    assert_ne!(seq, seen);
    seq
}

#[test]
fn typed_nodes_views_and_readiness() {
    let double = common::Double::start();
    double.put(
        "upstreams/web/10.0.0.1:8080",
        r#"{"weight":3,"max_fails":2,"fail_timeout":1.5,"priority":-1,"metadata":{"v":"1"}}"#,
    );
    double.put("upstreams/web/[2001:db8::1]:9000", r#"{"weight":0}"#);
    let h = init_on(&double, "");
    let web = name_of(&double, "web");
    assert!(common::wait_until(common::WAIT, || ckv_ready(h) != 0));
    let mut seen = ckv_change_seq(h);
    assert_ne!(seen, 0);

    let list = get_list(h, &web).unwrap();
    assert_eq!(ckv_node_list_len(list), 2);
    assert_eq!(ckv_node_list_seq(list), seen);
    let generation = ckv_node_list_generation(list);
    assert_ne!(generation, 0);
    let a = node(list, 0);
    assert_eq!((host(&a), a.port, a.weight), ("10.0.0.1", 8080, 3));
    assert_eq!(
        a.present,
        CKV_NODE_HAS_MAX_FAILS | CKV_NODE_HAS_FAIL_TIMEOUT | CKV_NODE_HAS_PRIORITY
    );
    assert_eq!((a.max_fails, a.fail_timeout, a.priority), (2, 1.5, -1));
    assert_eq!(metadata(&a), Some(r#"{"v":"1"}"#));
    let b = node(list, 1);
    assert_eq!((host(&b), b.port, b.weight), ("[2001:db8::1]", 9000, 0));
    assert_eq!(
        (b.present, b.max_fails, b.priority),
        (0, 0, 0),
        "absent, not zero"
    );
    assert_eq!(metadata(&b), None);
    assert_eq!(b.metadata_len, 0);
    // Past the end, NULLs.
    let mut out = std::mem::MaybeUninit::<ckv_node>::uninit();
    assert_eq!(
        ckv_node_list_get(list, 2, out.as_mut_ptr()),
        ckv_status::CKV_ERR_NOT_FOUND
    );
    assert_eq!(
        ckv_node_list_get(list, 0, ptr::null_mut()),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    assert_eq!(
        ckv_node_list_get(ptr::null(), 0, out.as_mut_ptr()),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    assert_eq!(ckv_node_list_len(ptr::null()), 0);
    assert_eq!(
        get_list(h, &name_of(&double, "none")).unwrap_err(),
        ckv_status::CKV_ERR_NOT_FOUND
    );

    // The view is pinned: a change publishes a new snapshot, the old view
    // still reads the old nodes (with valid pointers).
    let host_ptr = a.host;
    double.put("upstreams/web/10.0.0.1:8080", r#"{"weight":9}"#);
    seen = wait_seq(h, seen);
    let again = node(list, 0);
    assert_eq!(again.host, host_ptr);
    assert_eq!((host(&again), again.weight), ("10.0.0.1", 3));
    let fresh = get_list(h, &web).unwrap();
    assert_eq!(node(fresh, 0).weight, 9);
    assert_eq!(ckv_node_list_seq(fresh), seen);
    assert!(ckv_node_list_generation(fresh) > generation);
    // A list outlives its handle.
    ckv_free(h);
    assert_eq!(host(&node(list, 0)), "10.0.0.1");
    ckv_node_list_free(list);
    ckv_node_list_free(fresh);
    ckv_node_list_free(ptr::null());
}

#[test]
fn a_service_list_reads_one_snapshot() {
    let double = common::Double::start();
    double.put("upstreams/b/10.0.0.2:80", "{}");
    double.put("upstreams/a/10.0.0.1:80", "{}");
    let h = init_on(&double, "");
    assert!(common::wait_until(common::WAIT, || ckv_ready(h) != 0));
    let mut list = ptr::null();
    assert_eq!(ckv_services_get(h, &mut list), ckv_status::CKV_OK);
    let seq = ckv_service_list_seq(list);
    assert_eq!(ckv_service_list_len(list), 2);
    let name = |i| {
        let (mut p, mut n) = (ptr::null(), 0usize);
        assert_eq!(
            ckv_service_list_name(list, i, &mut p, &mut n),
            ckv_status::CKV_OK
        );
        String::from_utf8(unsafe { std::slice::from_raw_parts(p, n) }.to_vec()).unwrap()
    };
    assert_eq!(name(0), name_of(&double, "a"));
    assert_eq!(name(1), name_of(&double, "b"));
    // Deleting a service does not remove it from the pinned list.
    double.delete("upstreams/a/", true);
    wait_seq(h, seq);
    assert!(get_list(h, &name_of(&double, "a")).is_err());
    let mut nodes = ptr::null();
    assert_eq!(
        ckv_service_list_nodes(list, 0, &mut nodes),
        ckv_status::CKV_OK
    );
    assert_eq!(ckv_node_list_seq(nodes), seq);
    assert_eq!(host(&node(nodes, 0)), "10.0.0.1");
    assert_eq!(
        ckv_service_list_nodes(list, 2, &mut nodes),
        ckv_status::CKV_ERR_NOT_FOUND
    );
    let (mut p, mut n) = (ptr::null(), 0usize);
    assert_eq!(
        ckv_service_list_name(list, 2, &mut p, &mut n),
        ckv_status::CKV_ERR_NOT_FOUND
    );
    assert_eq!(
        ckv_services_get(h, ptr::null_mut()),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    ckv_service_list_free(list);
    ckv_node_list_free(nodes);
    ckv_free(h);
}

#[test]
fn wait_change_and_the_notify_fd_see_every_publish() {
    let double = common::Double::start();
    let h = init_on(&double, "");
    assert!(common::wait_until(common::WAIT, || ckv_ready(h) != 0));
    let seen = ckv_change_seq(h);
    let mut out = 0u64;
    // Nothing changes: a poll and a short wait time out, nothing written.
    assert_eq!(
        ckv_wait_change(h, seen, 0, &mut out),
        ckv_status::CKV_ERR_TIMEOUT
    );
    let t0 = Instant::now();
    assert_eq!(
        ckv_wait_change(h, seen, 50, &mut out),
        ckv_status::CKV_ERR_TIMEOUT
    );
    assert!(t0.elapsed() >= Duration::from_millis(50));
    assert_eq!(out, 0);
    assert_eq!(
        ckv_wait_change(h, seen, 0, ptr::null_mut()),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    // A seen value that is not current returns at once.
    assert_eq!(
        ckv_wait_change(h, seen + 1000, 0, &mut out),
        ckv_status::CKV_OK
    );
    assert_eq!(out, seen);

    let fd = ckv_notify_fd(h);
    assert!(fd >= 0);
    assert_eq!(ckv_notify_fd(h), fd, "the same descriptor every time");
    let drain = || {
        let mut total = 0u64;
        loop {
            let mut n = 0u64;
            let r = unsafe { libc::read(fd, (&mut n as *mut u64).cast(), 8) };
            if r != 8 {
                return total;
            }
            total += n;
        }
    };
    assert_eq!(drain(), 0, "not readable before a change");
    // A thread blocked in ckv_wait_change is woken by the change.
    let hp = h as usize;
    let waiter = std::thread::spawn(move || {
        let mut out = 0u64;
        let rc = ckv_wait_change(hp as *const ckv_handle, seen, 10_000, &mut out);
        (rc, out)
    });
    double.put("upstreams/web/10.0.0.1:80", "{}");
    let (rc, new_seq) = waiter.join().unwrap();
    assert_eq!(rc, ckv_status::CKV_OK);
    assert_ne!(new_seq, seen);
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5000) }, 1, "fd readable");
    assert!(drain() >= 1);
    assert_eq!(ckv_change_seq(h), new_seq);
    // NULL and freed handles.
    assert_eq!(ckv_notify_fd(ptr::null()), -1);
    assert_eq!(ckv_change_seq(ptr::null()), 0);
    assert_eq!(ckv_ready(ptr::null()), 0);
    // (That ckv_free closes the fd is checked by examples/pick.c, a
    // single-threaded process where the number cannot be reused meanwhile.)
    ckv_free(h);
}

#[test]
fn not_ready_until_a_server_answered() {
    let h = init(CONFIG).unwrap();
    assert_eq!(ckv_ready(h), 0, "port 1 never answers");
    assert_eq!(ckv_change_seq(h), 0);
    ckv_free(h);
}

/// `ckv_metrics`: NULL handle, the two-call sizing, and what a response did
/// to the histograms (applied in this process, propagated to it).
#[test]
fn metrics_are_sized_like_stats_and_count_each_response() {
    let mut len = 0usize;
    let mut small = [0u8; 8];
    assert_eq!(
        ckv_metrics(ptr::null(), small.as_mut_ptr(), small.len(), &mut len),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    let double = common::Double::start();
    double.put("upstreams/web/10.0.0.1:80", "{}");
    let h = init_on(&double, "");
    assert!(common::wait_until(common::WAIT, || ckv_ready(h) != 0));
    let read = |h: *const ckv_handle| -> String {
        let mut len = 0usize;
        assert_eq!(
            ckv_metrics(h, ptr::null_mut(), 0, &mut len),
            ckv_status::CKV_ERR_BUFFER_TOO_SMALL
        );
        // Grows between calls when a request went out meanwhile: loop.
        loop {
            let mut buf = vec![0u8; len];
            match ckv_metrics(h, buf.as_mut_ptr(), buf.len(), &mut len) {
                ckv_status::CKV_OK => return String::from_utf8(buf[..len].to_vec()).unwrap(),
                ckv_status::CKV_ERR_BUFFER_TOO_SMALL => continue,
                other => panic!("ckv_metrics: {other:?}"),
            }
        }
    };
    assert_eq!(
        ckv_metrics(h, ptr::null_mut(), 0, ptr::null_mut()),
        ckv_status::CKV_ERR_NULL_ARGUMENT
    );
    let first = read(h);
    assert!(first.contains("ckv_ready 1\n"), "{first}");
    let count = |text: &str, family: &str| -> u64 {
        let prefix = format!("{family}_count");
        text.lines()
            .find(|l| l.starts_with(&prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {text}"))
    };
    let applied = count(&first, "ckv_apply_seconds");
    let propagated = count(&first, "ckv_propagation_seconds");
    assert!(applied >= 1 && propagated >= 1, "{first}");
    double.put("upstreams/web/10.0.0.2:80", "{}");
    let web = name_of(&double, "web");
    assert!(common::wait_until(common::WAIT, || {
        get_list(h, &web).map(|l| {
            let n = ckv_node_list_len(l);
            ckv_node_list_free(l);
            n == 2
        }) == Ok(true)
    }));
    let second = read(h);
    assert!(count(&second, "ckv_apply_seconds") > applied, "{second}");
    assert!(
        count(&second, "ckv_propagation_seconds") > propagated,
        "{second}"
    );
    assert!(second.contains(&format!("ckv_nodes{{server=\"{}\"}} 2\n", double.url())));
    ckv_free(h);
}
