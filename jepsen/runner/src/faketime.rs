//! The `clock` nemesis's clocks: one node's wall clock jumps or strobes while every other
//! clock, and its own monotonic clock, runs on (Jepsen's clock nemesis, without touching the
//! machine's clock: the node runs under libfaketime, from Debian's `faketime` package).
//!
//! Each node is started with `LD_PRELOAD` naming libfaketime, `FAKETIME_TIMESTAMP_FILE`
//! naming a file of its own that holds the offset in seconds (`+0.000`, `-2.500`), re-read on
//! every clock call (`FAKETIME_NO_CACHE`), and `DONT_FAKE_MONOTONIC` so timers and Raft's ticks
//! keep real time, as they would on a machine whose NTP stepped the wall clock. Changing the
//! offset is writing the file (atomically, through a rename).

use std::io;
use std::path::{Path, PathBuf};

/// Where Debian's `faketime` package puts the library (the thread-safe variant).
const LIBRARY_PATHS: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
];

/// libfaketime, if installed.
fn library() -> Option<PathBuf> {
    LIBRARY_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

/// One node's faked wall clock.
pub struct FakeClock {
    library: PathBuf,
    file: PathBuf,
}

impl FakeClock {
    /// A clock at no offset kept in `file`. Fails when libfaketime is not installed, saying
    /// how to install it.
    pub fn new(file: &Path) -> Result<Self, String> {
        let library = library().ok_or_else(|| {
            format!(
                "the clock nemesis needs libfaketime (none of {LIBRARY_PATHS:?}): apt-get install faketime"
            )
        })?;
        let clock = Self {
            library,
            file: file.to_path_buf(),
        };
        clock.set_offset_ms(0)?;
        Ok(clock)
    }

    /// The environment a node's process must start with to run on this clock.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", self.library.display().to_string()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".to_string()),
            ("DONT_FAKE_MONOTONIC", "1".to_string()),
        ]
    }

    /// Moves the node's wall clock to `offset_ms` from real time (a jump forwards or back).
    pub fn set_offset_ms(&self, offset_ms: i64) -> Result<(), String> {
        let sign = if offset_ms < 0 { '-' } else { '+' };
        let abs = offset_ms.unsigned_abs();
        let text = format!("{sign}{}.{:03}\n", abs / 1000, abs % 1000);
        let temporary = self.file.with_extension("tmp");
        std::fs::write(&temporary, text)
            .and_then(|()| std::fs::rename(&temporary, &self.file))
            .map_err(|e: io::Error| format!("cannot write {}: {e}", self.file.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::FakeClock;

    /// A process started on the clock sees its wall clock at the offset, whichever way it
    /// moved, without being restarted.
    #[test]
    fn a_process_on_the_clock_sees_its_wall_clock_jump() {
        let dir =
            std::env::temp_dir().join(format!("oxbow-jepsen-faketime-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let clock = FakeClock::new(&dir.join("faketime")).expect("libfaketime is installed");
        clock.set_offset_ms(-3_600_000).expect("offset");
        let run = |clock: &FakeClock| {
            let output = std::process::Command::new("date")
                .arg("+%s")
                .envs(clock.env())
                .output()
                .expect("date runs");
            let text = String::from_utf8(output.stdout).expect("utf-8");
            text.trim().parse::<f64>().expect("a time")
        };
        let real = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs_f64()
        };
        let wall = run(&clock);
        assert!(
            (real() - 3600.0 - wall).abs() < 30.0,
            "an hour back: {wall}"
        );
        clock.set_offset_ms(90_500).expect("offset");
        let wall = run(&clock);
        assert!((wall - real() - 90.5).abs() < 30.0, "90.5 s ahead: {wall}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
