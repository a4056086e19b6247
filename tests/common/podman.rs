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

/// The images `hack/image-test.sh` built for this run (its `ABACUS_IMAGE_TEST_*` variables).
pub struct Images {
    /// The Abacus image from the Dockerfile's `prebuilt` stage.
    pub abacus: String,
    /// The same image under a new tag: the "new version" of a rolling replacement.
    pub next: String,
    /// A Redis image with `sh`, `cat`, `grep` and `redis-cli`, as the chart's Redis container
    /// and probes need (the official image has them).
    pub redis: String,
    /// The run id: a prefix for names and the value of the `abacus.test.run` label.
    pub run: String,
}

/// The images of this run; panics with how to get them when the tests run outside
/// `make image-test`.
pub fn images() -> Images {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: run these tests through `make image-test` (needs podman, \
                 helm and the images built by hack/image-test.sh)"
            )
        })
    };
    Images {
        abacus: var("ABACUS_IMAGE_TEST_IMAGE"),
        next: var("ABACUS_IMAGE_TEST_NEXT"),
        redis: var("ABACUS_IMAGE_TEST_REDIS"),
        run: var("ABACUS_IMAGE_TEST_RUN"),
    }
}
