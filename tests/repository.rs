//! The repository stands on its own: no file refers to a path outside it. Every relative path
//! that climbs with `../` is resolved from its file's folder and must stay inside the checkout,
//! and no absolute path names a machine's private folders.

use std::path::{Component, Path, PathBuf};

/// Folders that are generated or installed, not part of the repository.
const SKIP_DIRS: [&str; 6] = [
    ".git",
    "target",
    ".tools",
    "node_modules",
    ".cluster",
    "bench-results",
];
/// Absolute prefixes that only exist on someone's machine, and the folder of reference material
/// that lives beside (not in) the repository.
const FOREIGN_PREFIXES: [&str; 5] = [
    "/work/",
    "/root/",
    "/home/",
    "shared/reference/",
    "shared/seed/",
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            let generated = name.starts_with("conformance-results");
            if !SKIP_DIRS.contains(&name.as_str()) && !generated {
                files(&path, out);
            }
        } else if path.is_file() {
            out.push(path);
        }
    }
}

/// Normalizes `a/b/../c` lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The `../`-climbing relative paths in a text: each run of `../` with what follows it.
fn climbing_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("../") {
        let start = i + pos;
        // Only the start of a path: not in the middle of `a/../b`.
        let prev = start.checked_sub(1).map(|p| bytes[p]);
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || b"./_-".contains(&bytes[end]))
        {
            end += 1;
        }
        if !matches!(prev, Some(b'.') | Some(b'/')) || prev.is_none() {
            out.push(text[start..end].to_owned());
        }
        i = end.max(start + 3);
    }
    out
}

#[test]
fn no_file_points_outside_the_repository() {
    let root = normalize(Path::new(env!("CARGO_MANIFEST_DIR")));
    let mut all = Vec::new();
    files(&root, &mut all);
    assert!(all.len() > 50, "walked only {} files", all.len());
    let mut problems = Vec::new();
    for file in &all {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue; // binary
        };
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        if rel == "tests/repository.rs" {
            continue;
        }
        for prefix in FOREIGN_PREFIXES {
            if text.contains(prefix) {
                problems.push(format!(
                    "{rel}: names {prefix}…, which is not in the repository"
                ));
            }
        }
        let dir = file.parent().unwrap_or(&root);
        for p in climbing_paths(&text) {
            let target = normalize(&dir.join(&p));
            if !target.starts_with(&root) {
                problems.push(format!("{rel}: {p} leaves the repository"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_a_path_that_leaves() {
    assert_eq!(
        climbing_paths("see ../shared/reference/x.md and ../../docs/a"),
        ["../shared/reference/x.md", "../../docs/a"]
    );
    let root = Path::new("/r");
    assert!(!normalize(&root.join("src/../../shared")).starts_with(root));
    assert!(normalize(&root.join("src/config/../../docs/a")).starts_with(root));
}
