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
    let mut big = vec![0u8; len];
    assert_eq!(
        ckv_stats(h, big.as_mut_ptr(), big.len(), &mut len),
        ckv_status::CKV_OK
    );
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
    // Log records drain until EMPTY, truncated to the buffer. The watcher
    // logs its start (and its connection failures: port 1 refuses).
    let mut got = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while got < 2 && std::time::Instant::now() < deadline {
        let rc = ckv_log_next(h, buf.as_mut_ptr(), 10, &mut len, &mut level);
        if rc == ckv_status::CKV_ERR_EMPTY {
            std::thread::sleep(std::time::Duration::from_millis(5));
            continue;
        }
        assert_eq!(rc, ckv_status::CKV_OK);
        assert!(len <= 10);
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
