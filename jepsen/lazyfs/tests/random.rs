//! Random appends, positional writes, truncations, fsyncs and losses through the mount, on a few
//! files with handles held open, checked after every step against a model of the bytes readers
//! see and the bytes the backing directory holds.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::{within, Mounted};

/// A small xorshift generator: varied operations, not good randomness.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const FILES: usize = 4;

struct Handles {
    append: Vec<File>,
    positional: Vec<File>,
}

fn open(m: &Mounted) -> Handles {
    let name = |i: usize| m.path(&format!("f{i}"));
    Handles {
        append: (0..FILES)
            .map(|i| OpenOptions::new().append(true).open(name(i)).unwrap())
            .collect(),
        positional: (0..FILES)
            .map(|i| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(name(i))
                    .unwrap()
            })
            .collect(),
    }
}

fn run(m: &Mounted, seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for i in 0..FILES {
        File::create(m.path(&format!("f{i}"))).unwrap();
    }
    let mut visible = vec![Vec::<u8>::new(); FILES];
    let mut durable = vec![Vec::<u8>::new(); FILES];
    let mut handles = open(m);
    for step in 0..200 {
        let i = rng.below(FILES as u64) as usize;
        let data: Vec<u8> = (0..1 + rng.below(3000))
            .map(|_| rng.below(256) as u8)
            .collect();
        match rng.below(12) {
            0..=3 => {
                handles.append[i].write_all(&data).unwrap();
                visible[i].extend_from_slice(&data);
            }
            4..=6 => {
                let offset = rng.below(visible[i].len() as u64 + 100) as usize;
                handles.positional[i]
                    .write_all_at(&data, offset as u64)
                    .unwrap();
                if visible[i].len() < offset + data.len() {
                    visible[i].resize(offset + data.len(), 0);
                }
                visible[i][offset..offset + data.len()].copy_from_slice(&data);
            }
            7 => {
                let len = rng.below(visible[i].len() as u64 + 100);
                handles.positional[i].set_len(len).unwrap();
                visible[i].resize(len as usize, 0);
            }
            8 | 9 => {
                let file = if rng.below(2) == 0 {
                    &handles.append[i]
                } else {
                    &handles.positional[i]
                };
                if rng.below(2) == 0 {
                    file.sync_data().unwrap();
                } else {
                    file.sync_all().unwrap();
                }
                durable[i] = visible[i].clone();
            }
            _ => {
                // A power failure stops the processes first: close every handle.
                drop(handles);
                m.lazy().lose_unsynced();
                visible = durable.clone();
                handles = open(m);
            }
        }
        for f in 0..FILES {
            let what = format!("seed {seed} step {step} file f{f}");
            let path = m.path(&format!("f{f}"));
            assert_eq!(
                fs::metadata(&path).unwrap().len(),
                visible[f].len() as u64,
                "{what}: size"
            );
            assert_eq!(fs::read(&path).unwrap(), visible[f], "{what}: content");
            assert_eq!(
                fs::read(m.backing(&format!("f{f}"))).unwrap(),
                durable[f],
                "{what}: backing"
            );
        }
    }
}

#[test]
fn random_file_operations_through_the_mount_match_the_model() {
    for seed in 1..=4 {
        let m = Arc::new(Mounted::new());
        let mounted = m.clone();
        within("a random run", move || run(&mounted, seed));
    }
}
