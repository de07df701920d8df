//! A real `oxbow node` with its data directory on the lazy filesystem: it starts, writes its
//! segment files, and keeps every record it acknowledged with acks=all (produced with kcat)
//! across a SIGKILL and a loss of everything unsynced, as its fsyncs promise.
//!
//! The node binary is `$OXBOW_BIN`, or the workspace's `oxbow` next to this test's target
//! directory (`cargo test --workspace` builds it); without either, or without kcat, the test
//! fails saying what to do.

mod common;

use std::fs::{self, File};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{eventually, wait_for, Mounted};

fn node_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("OXBOW_BIN") {
        return Some(PathBuf::from(bin));
    }
    // target/debug/deps/node-HASH -> target/debug/oxbow
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.parent()?.join("oxbow");
    candidate.exists().then_some(candidate)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(binary: &Path, config: &Path, log: &Path) -> Child {
    let log = File::options().create(true).append(true).open(log).unwrap();
    Command::new(binary)
        .args(["--log-level", "info", "node", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start oxbow")
}

fn readies(log: &Path) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .matches(" ready")
        .count()
}

fn has_kcat() -> bool {
    Command::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_node_on_the_mount_keeps_what_it_acknowledged_across_a_power_loss() {
    let binary = node_binary()
        .expect("no oxbow binary: set OXBOW_BIN, or `cargo build -p oxbow-node` first");
    assert!(has_kcat(), "kcat is needed: apt-get install kcat");
    let m = Mounted::new();
    let scratch = tempfile::tempdir().unwrap();
    let (config, log) = (
        scratch.path().join("node.toml"),
        scratch.path().join("node.log"),
    );
    let kafka = free_port();
    fs::write(
        &config,
        format!(
            "node_id = 1\ndata_dir = {:?}\nkafka_listen = \"127.0.0.1:{kafka}\"\n\
             peer_listen = \"127.0.0.1:{}\"\ntick_ms = 50\n\
             [[topics]]\nname = \"events\"\npartitions = 1\nreplication_factor = 1\n",
            m.path("data"),
            free_port()
        ),
    )
    .unwrap();
    let mut node = start(&binary, &config, &log);
    let ready = eventually(Duration::from_secs(30), || readies(&log) >= 1);
    assert!(
        ready,
        "the node is not ready: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    let segments = || {
        fs::read_dir(m.backing("data"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".seg")
            })
            .count()
    };
    assert!(segments() > 0, "the node wrote its segment files");
    assert!(m.backing("data/node-id").exists());

    let records: Vec<String> = (0..50).map(|i| format!("record-{i}")).collect();
    {
        let mut produce = Command::new("kcat")
            .args(["-P", "-b", &format!("127.0.0.1:{kafka}"), "-t", "events"])
            .args(["-X", "acks=all"])
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        produce
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{}\n", records.join("\n")).as_bytes())
            .unwrap();
        assert!(
            wait_for(&mut produce, Duration::from_secs(30)),
            "kcat produced"
        );
    }

    // Power failure: the node dies and whatever it did not fsync is gone.
    node.kill().unwrap();
    node.wait().unwrap();
    let loss = m.lazy().lose_unsynced();
    eprintln!("lost {loss:?}");

    let mut node = start(&binary, &config, &log);
    let ready = eventually(Duration::from_secs(30), || readies(&log) >= 2);
    assert!(
        ready,
        "the node did not restart: {}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    {
        let consume = Command::new("timeout")
            .arg("30")
            .args([
                "kcat",
                "-C",
                "-b",
                &format!("127.0.0.1:{kafka}"),
                "-t",
                "events",
            ])
            .args(["-o", "beginning", "-e", "-f", "%s\\n"])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let read = String::from_utf8_lossy(&consume.stdout);
        let read: Vec<&str> = read.lines().collect();
        assert_eq!(read, records, "every acknowledged record survived");
    }
    node.kill().unwrap();
    node.wait().unwrap();
}
