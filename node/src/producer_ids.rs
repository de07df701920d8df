//! Producer ids for idempotent producers (InitProducerId), unique in the cluster and across
//! restarts: `node_id << 40 | counter`, where the counter is reserved in blocks that are made
//! durable before any id of the block is handed out. (The metadata group will take this over.)

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::runtime::env::ProducerIdStore;

/// The largest node id producer ids have room for (22 bits above the 40-bit counter).
pub const NODE_ID_MAX: u64 = (1 << 22) - 1;

/// Ids reserved per durable write.
const BLOCK: u64 = 1_000;
const FILE: &str = "producer-ids";

/// The reservation in a file of the data directory, replaced atomically (write, fsync,
/// rename, fsync the directory).
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// The store in `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(FILE),
        }
    }
}

impl ProducerIdStore for FileStore {
    fn load(&mut self) -> std::io::Result<u64> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse().map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a number; restore it or remove it if no producer ever wrote",
                        self.path.display()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn save(&mut self, until: u64) -> std::io::Result<()> {
        let temporary = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&temporary)?;
        writeln!(file, "{until}")?;
        file.sync_all()?;
        std::fs::rename(&temporary, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// The reservation in memory that outlives the node (the simulator's: a save is durable at
/// once, and a crash keeps it).
#[derive(Clone, Debug, Default)]
pub struct MemoryStore(pub Arc<Mutex<u64>>);

impl ProducerIdStore for MemoryStore {
    fn load(&mut self) -> std::io::Result<u64> {
        Ok(*self.0.lock().expect("not poisoned"))
    }

    fn save(&mut self, until: u64) -> std::io::Result<()> {
        *self.0.lock().expect("not poisoned") = until;
        Ok(())
    }
}

/// Hands out producer ids.
pub struct ProducerIds {
    node_id: u64,
    store: Box<dyn ProducerIdStore>,
    next: u64,
    reserved_until: u64,
}

impl std::fmt::Debug for ProducerIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerIds")
            .field("node_id", &self.node_id)
            .field("next", &self.next)
            .field("reserved_until", &self.reserved_until)
            .finish_non_exhaustive()
    }
}

impl ProducerIds {
    /// Loads the allocator state from `store`.
    pub fn open(mut store: Box<dyn ProducerIdStore>, node_id: u64) -> std::io::Result<Self> {
        // Node 0's ids are 0 to 2^40 - 1: valid Kafka producer ids (only negative ones mean
        // "not idempotent").
        assert!(
            node_id <= NODE_ID_MAX,
            "node ids must fit 22 bits for producer ids"
        );
        let next = store.load()?;
        Ok(Self {
            node_id,
            store,
            next,
            reserved_until: next,
        })
    }

    /// The next producer id.
    pub fn allocate(&mut self) -> std::io::Result<i64> {
        if self.next >= self.reserved_until {
            let until = self.next + BLOCK;
            self.store.save(until)?;
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

    fn open(dir: &Path, node: u64) -> ProducerIds {
        ProducerIds::open(Box::new(FileStore::new(dir)), node).expect("open")
    }

    #[test]
    fn ids_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ids = open(dir.path(), 3);
        let first: Vec<i64> = (0..5).map(|_| ids.allocate().expect("id")).collect();
        drop(ids);
        let mut again = open(dir.path(), 3);
        let next = again.allocate().expect("id");
        assert!(
            first.iter().all(|id| *id < next),
            "a restart skips the rest of the block"
        );
        assert_eq!(first[0] >> 40, 3, "the node id is in the high bits");
        let other_dir = tempfile::tempdir().expect("tempdir");
        let mut other = open(other_dir.path(), 4);
        assert_ne!(other.allocate().expect("id"), first[0]);
    }

    /// Node 0 (Kafka counts from 0) hands out valid, non-negative ids that no other node does.
    #[test]
    fn node_zero_has_ids_of_its_own() {
        let mut zero = ProducerIds::open(Box::new(MemoryStore::default()), 0).expect("open");
        let mut one = ProducerIds::open(Box::new(MemoryStore::default()), 1).expect("open");
        let zeros: Vec<i64> = (0..3).map(|_| zero.allocate().expect("id")).collect();
        assert_eq!(zeros, vec![0, 1, 2]);
        assert_eq!(one.allocate().expect("id"), 1 << 40);
        let top = ProducerIds::open(Box::new(MemoryStore::default()), NODE_ID_MAX)
            .expect("open")
            .allocate()
            .expect("id");
        assert!(top > 0, "the largest node's ids are not negative");
    }

    #[test]
    fn the_memory_store_outlives_the_allocator() {
        let store = MemoryStore::default();
        let mut ids = ProducerIds::open(Box::new(store.clone()), 2).expect("open");
        let first = ids.allocate().expect("id");
        drop(ids);
        let mut again = ProducerIds::open(Box::new(store), 2).expect("reopen");
        assert!(again.allocate().expect("id") > first);
    }
}
