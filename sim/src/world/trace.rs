//! The trace: a running hash of everything observable in a world, and the slog drain that
//! feeds every node's log records into it.

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};

use slog::{Drain, KV as _};

use super::sim_ms;

/// A running FNV-1a hash of everything observable, shared by every host.
#[derive(Clone, Debug, Default)]
pub struct Trace(Arc<Mutex<TraceState>>);

#[derive(Debug)]
struct TraceState {
    hash: u64,
    print: bool,
}

impl Default for TraceState {
    fn default() -> Self {
        Self {
            hash: 0xcbf2_9ce4_8422_2325,
            print: false,
        }
    }
}

impl Trace {
    pub(super) fn new(print: bool) -> Self {
        Self(Arc::new(Mutex::new(TraceState {
            print,
            ..TraceState::default()
        })))
    }

    /// Adds a line (simulated time first) to the hash, and prints it if asked to.
    pub fn line(&self, line: &str) {
        let mut state = self.0.lock().expect("not poisoned");
        for b in line.bytes().chain(std::iter::once(b'\n')) {
            state.hash ^= u64::from(b);
            state.hash = state.hash.wrapping_mul(0x0100_0000_01b3);
        }
        if state.print {
            eprintln!("{line}");
        }
    }

    /// The hash so far.
    pub fn hash(&self) -> u64 {
        self.0.lock().expect("not poisoned").hash
    }
}
/// A slog drain that feeds every record at info level and above into the trace. (Lower levels
/// are compiled out of release builds, and the hash must not depend on the build.)
pub(super) struct TraceDrain {
    pub(super) trace: Trace,
    pub(super) host: String,
}

struct LineSerializer<'a>(&'a mut String);

impl slog::Serializer for LineSerializer<'_> {
    fn emit_arguments(&mut self, key: slog::Key, value: &fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

impl Drain for TraceDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        if !record.level().is_at_least(slog::Level::Info) {
            return Ok(());
        }
        let mut line = format!(
            "{:>7} {} {} {}",
            sim_ms(),
            self.host,
            record.level().as_short_str(),
            record.msg()
        );
        let mut serializer = LineSerializer(&mut line);
        let _ = record.kv().serialize(record, &mut serializer);
        let _ = values.serialize(record, &mut serializer);
        self.trace.line(&line);
        Ok(())
    }
}
