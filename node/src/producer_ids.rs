//! Producer ids for idempotent producers (InitProducerId), unique in the cluster and across
//! restarts: `node_id << 40 | counter`, where the counter is reserved in blocks that are made
//! durable before any id of the block is handed out. (The metadata group will take this over.)

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Ids reserved per durable write.
const BLOCK: u64 = 1_000;
const FILE: &str = "producer-ids";

/// Hands out producer ids.
#[derive(Debug)]
pub struct ProducerIds {
    node_id: u64,
    path: PathBuf,
    next: u64,
    reserved_until: u64,
}

impl ProducerIds {
    /// Opens the allocator state in `data_dir`.
    pub fn open(data_dir: &Path, node_id: u64) -> std::io::Result<Self> {
        assert!(
            node_id > 0 && node_id < 1 << 22,
            "node ids must fit 22 bits for producer ids"
        );
        let path = data_dir.join(FILE);
        let next = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a number; restore it or remove it if no producer ever wrote",
                        path.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(Self {
            node_id,
            path,
            next,
            reserved_until: next,
        })
    }

    /// The next producer id.
    pub fn allocate(&mut self) -> std::io::Result<i64> {
        if self.next >= self.reserved_until {
            let until = self.next + BLOCK;
            let temporary = self.path.with_extension("tmp");
            let mut file = std::fs::File::create(&temporary)?;
            writeln!(file, "{until}")?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            self.reserved_until = until;
        }
        let counter = self.next;
        self.next += 1;
        assert!(counter < 1 << 40, "producer id counter exhausted");
        Ok(((self.node_id << 40) | counter) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ids = ProducerIds::open(dir.path(), 3).expect("open");
        let first: Vec<i64> = (0..5).map(|_| ids.allocate().expect("id")).collect();
        drop(ids);
        let mut again = ProducerIds::open(dir.path(), 3).expect("reopen");
        let next = again.allocate().expect("id");
        assert!(
            first.iter().all(|id| *id < next),
            "a restart skips the rest of the block"
        );
        assert_eq!(first[0] >> 40, 3, "the node id is in the high bits");
        let other_dir = tempfile::tempdir().expect("tempdir");
        let mut other = ProducerIds::open(other_dir.path(), 4).expect("open");
        assert_ne!(other.allocate().expect("id"), first[0]);
    }
}
