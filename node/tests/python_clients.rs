//! The Python clients (kafka-python, and confluent-kafka on librdkafka) against `oxbow dev`:
//! runs `tests/python` with pytest in a virtual environment this test makes (under Cargo's
//! target directory, reused while `tests/python/requirements.txt` is unchanged).
//! Needs `python3` with the `venv` module and PyPI; `.ci/run` installs them when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn run(command: &mut Command, what: &str) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{what}: cannot run ({e}); install python3 and python3-venv"));
    assert!(status.success(), "{what} failed: {status}");
}

/// The virtual environment with the pinned requirements installed.
fn venv() -> PathBuf {
    let requirements = workspace().join("tests/python/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).expect("requirements.txt");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-venv");
    let stamp = venv.join("installed-requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return venv;
    }
    let _ = std::fs::remove_dir_all(&venv);
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    );
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements),
        "pip install -r tests/python/requirements.txt",
    );
    std::fs::write(&stamp, wanted).expect("stamp");
    venv
}

#[test]
fn kafka_python_and_confluent_kafka_work_unchanged() {
    let venv = venv();
    run(
        Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-W",
                "ignore::DeprecationWarning",
            ])
            .arg(workspace().join("tests/python"))
            .env("OXBOW_BIN", env!("CARGO_BIN_EXE_oxbow"))
            .current_dir(workspace()),
        "pytest tests/python",
    );
}
