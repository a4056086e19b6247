//! podman for the container tests (hack/image-test.sh sets `CONTAINERS_CONF`).

use std::process::{Command, Output, Stdio};

/// Runs podman; panics only if it cannot be started.
pub fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run podman {args:?}: {e}"))
}

/// Runs podman and returns its trimmed stdout; panics with its stderr unless it succeeds.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
