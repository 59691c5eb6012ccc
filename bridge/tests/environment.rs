//! The environment refusing resources gives typed errors, never panics: an
//! id drawn with no file descriptor left, and the bridge driver when no
//! thread can be started. Each case runs in a child process of this test
//! binary, whose limits it lowers (the limits are per process).

use std::process::Command;

/// Not a test: the body of the child processes the tests below start.
#[test]
#[ignore = "helper: run as a child process by the other tests in this file"]
fn child_entry() {
    let Ok(mode) = std::env::var("CNM_ENV_CHILD") else { return };
    match mode.as_str() {
        "no-descriptors" => {
            // Every descriptor from 3 up is taken: nothing more can be opened.
            let limit = nix::libc::rlimit { rlim_cur: 3, rlim_max: 3 };
            // SAFETY: plain system call on a local struct.
            assert_eq!(unsafe { nix::libc::setrlimit(nix::libc::RLIMIT_NOFILE, &limit) }, 0);
            assert!(std::fs::File::open("/dev/null").is_err(), "the limit holds");
            let id = cnm_core::Id::random().expect("an id needs no descriptor");
            println!("RESULT OK {}", id.short());
        }
        "no-threads" => {
            // No room for another thread's stack.
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let vm_kb: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmSize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap();
            let cap = (vm_kb + 512) * 1024;
            let limit = nix::libc::rlimit { rlim_cur: cap, rlim_max: cap };
            // SAFETY: plain system call on a local struct.
            assert_eq!(unsafe { nix::libc::setrlimit(nix::libc::RLIMIT_AS, &limit) }, 0);
            match cnm_bridge::BridgeDriver::try_new() {
                Err(e) => println!("RESULT ERR {e}"),
                Ok(_) => println!("RESULT STARTED"),
            }
            // `new` falls back to deleting veths one by one.
            let _ = cnm_bridge::BridgeDriver::new();
            println!("RESULT NEW OK");
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn child(mode: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--ignored", "--nocapture", "--test-threads=1"])
        .env("CNM_ENV_CHILD", mode)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{mode}: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn an_id_is_drawn_with_no_descriptor_left() {
    assert!(child("no-descriptors").contains("RESULT OK"));
}

#[test]
fn the_bridge_driver_without_a_thread_is_an_error_not_a_panic() {
    let out = child("no-threads");
    assert!(out.contains("RESULT ERR") && out.contains("starting the bridge driver's reaper thread"), "{out}");
    assert!(out.contains("RESULT NEW OK"), "{out}");
}
