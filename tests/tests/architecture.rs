//! Checks the architecture invariants that the compiler cannot: what `oxbow-core` may depend on
//! and use, and the habits every source file keeps.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            // Build output, and vendored crates (not ours: node/vendor/*/VENDORED.md).
            if path
                .file_name()
                .is_some_and(|n| n == "target" || n == "vendor")
            {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The normal dependency tree of a workspace package, one crate per line.
fn tree(package: &str) -> String {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(workspace())
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// Architecture Invariant: the client is a Kafka client; it depends on none of oxbow's crates.
#[test]
fn client_depends_on_no_oxbow_crate() {
    let tree = tree("oxbow-client");
    assert!(
        tree.contains("kafka-protocol"),
        "the tree is the client's: {tree}"
    );
    for line in tree.lines().skip(1) {
        assert!(
            !line.starts_with("oxbow-"),
            "oxbow-client depends on {line}"
        );
    }
}

/// Architecture Invariant: `jepsen/` depends on nothing of ours, so it can check histories of
/// any Kafka-like system.
#[test]
fn jepsen_depends_on_no_oxbow_crate() {
    let tree = tree("oxbow-jepsen");
    assert!(
        tree.starts_with("oxbow-jepsen"),
        "the tree is jepsen's: {tree}"
    );
    for line in tree.lines().skip(1) {
        assert!(!line.contains("oxbow-"), "oxbow-jepsen depends on {line}");
    }
}

/// Architecture Invariant: the core does no IO and has no runtime. Its normal dependency tree
/// holds no async runtime, no socket library and no simulator.
#[test]
fn core_depends_on_no_runtime_socket_or_simulator() {
    let tree = tree("oxbow-core");
    assert!(tree.contains("raft v0.7"), "the tree is the core's: {tree}");
    for banned in ["tokio", "mio", "turmoil", "socket2", "futures", "async-std"] {
        let hit = tree
            .lines()
            .find(|line| line.split_whitespace().next() == Some(banned));
        assert!(hit.is_none(), "oxbow-core depends on {banned}: {hit:?}");
    }
}

/// Architecture Invariant: no clock, OS randomness, thread or default-hasher map in the core's
/// sources (clippy bans the calls; this also catches imports of the modules).
#[test]
fn core_sources_use_no_clock_randomness_threads_or_hash_maps() {
    let mut files = Vec::new();
    rust_files(&workspace().join("core/src"), &mut files);
    assert!(files.len() > 5);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        // Code only: comments may name what is banned, to say why.
        let code: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect();
        for banned in [
            "std::time",
            "thread_rng",
            "std::thread",
            "HashMap",
            "HashSet",
            "tokio",
            "std::fs",
            "std::net",
        ] {
            let hit = code.iter().find(|line| line.contains(banned));
            assert!(hit.is_none(), "{} uses {banned}: {hit:?}", file.display());
        }
    }
}

/// Every source file says what it owns; no test is ignored or expected to panic.
#[test]
fn sources_are_tidy() {
    let mut files = Vec::new();
    for dir in ["core", "node", "sim", "client", "jepsen", "tests"] {
        rust_files(&workspace().join(dir), &mut files);
    }
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        let name = file.display();
        assert!(
            text.starts_with("//!"),
            "{name} does not open with a //! module comment"
        );
        let ignore = ["#[", "ignore]"].concat();
        let should_panic = ["#[", "should_panic"].concat();
        assert!(!text.contains(&ignore), "{name} ignores a test");
        assert!(
            !text.contains(&should_panic),
            "{name} has a should_panic test"
        );
        let fixme = ["FIX", "ME"].concat();
        assert!(!text.contains(&fixme), "{name} has a leftover marker");
    }
}
