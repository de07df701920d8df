//! The decoders of what oxbow writes into its own logs and snapshots: the group and
//! transaction coordinators' commands and states, the metadata log's entries and state, and a partition's
//! snapshot. A replica decodes them from its log at every apply and restart, so no input may
//! panic or allocate without bound, and whatever decodes must encode to the same value.
//!
//! Input: one byte choosing the decoder, then the bytes to decode.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oxbow_core::coordinator::{Command, StoredState};
use oxbow_core::metadata::{decode_entry, encode_entry, MetadataCommand, MetadataState};
use oxbow_core::snapshot::SnapshotData;
use oxbow_core::txn::{TxnCommand, TxnStored};

fuzz_target!(|input: &[u8]| {
    let Some((&which, bytes)) = input.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(command) = Command::decode(bytes) {
                assert_eq!(Command::decode(&command.encode()).as_ref(), Ok(&command));
            }
        }
        1 => {
            if let Ok(state) = StoredState::decode(bytes) {
                assert_eq!(StoredState::decode(&state.encode()).as_ref(), Ok(&state));
            }
        }
        2 => {
            if let Ok(entry) = decode_entry(bytes) {
                let again = decode_entry(&encode_entry(&entry.command, entry.origin, entry.limits));
                assert_eq!(again.as_ref(), Ok(&entry));
            }
        }
        3 => {
            if let Ok(command) = MetadataCommand::decode(bytes) {
                assert_eq!(
                    MetadataCommand::decode(&command.encode()).as_ref(),
                    Ok(&command)
                );
            }
        }
        4 => {
            if let Ok(state) = MetadataState::decode(bytes) {
                assert_eq!(MetadataState::decode(&state.encode()).as_ref(), Ok(&state));
            }
        }
        6 => {
            if let Ok(command) = TxnCommand::decode(bytes) {
                assert_eq!(TxnCommand::decode(&command.encode()).as_ref(), Ok(&command));
            }
        }
        7 => {
            if let Ok(state) = TxnStored::decode(bytes) {
                assert_eq!(TxnStored::decode(&state.encode()).as_ref(), Ok(&state));
            }
        }
        _ => {
            if let Ok(snapshot) = SnapshotData::decode(bytes) {
                assert_eq!(
                    SnapshotData::decode(&snapshot.encode()).as_ref(),
                    Ok(&snapshot)
                );
            }
        }
    }
});
