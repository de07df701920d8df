//! Tests of the coordinator's commands and stored state: the codec, the sizes applying
//! counts against the encoded state, the growth bounds, and the transactional offsets.

use super::*;

/// Found by the `decoders` fuzz target: a state whose group's generation goes back
/// panicked in `apply` instead of being refused.
#[test]
fn a_state_whose_generation_goes_back_is_refused() {
    let meta = |generation| GroupMeta {
        generation: Generation(generation),
        protocol_type: "consumer".into(),
        protocol: "range".into(),
        leader: String::new(),
        members: Vec::new(),
        state_time_ms: 1_000,
    };
    let mut w = Writer::default();
    w.u8(VERSION);
    w.u32(2);
    for generation in [5, 4] {
        let command = Command::Group {
            group_id: "g".into(),
            meta: meta(generation),
        };
        w.bytes(&command.encode());
    }
    assert_eq!(
        StoredState::decode(&w.bytes),
        Err(DecodeError(
            "a group's generation goes back in a coordinator state"
        ))
    );
}

/// Memberships stored before they carried a time still decode, with the time unknown, and
/// leave retention to the offsets' commit times.
#[test]
fn a_membership_without_a_time_decodes_as_unknown() {
    let mut w = Writer::default();
    w.u8(VERSION);
    w.u8(GROUP_WITHOUT_TIME);
    put_str(&mut w, "g");
    w.i32(4);
    for s in ["consumer", "range", ""] {
        put_str(&mut w, s);
    }
    w.u32(0);
    let command = Command::decode(&w.bytes).expect("decodes");
    let Command::Group { meta, .. } = &command else {
        panic!("{command:?}")
    };
    assert_eq!((meta.generation, meta.state_time_ms), (Generation(4), -1));
    let mut state = StoredState::default();
    state.apply(&command);
    assert_eq!(state.groups["g"].changed_ms(), None);
    state.apply(&Command::Offsets {
        group_id: "g".into(),
        offsets: vec![(
            "t".into(),
            0,
            CommittedOffset {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_time_ms: 7_000,
            },
        )],
    });
    assert_eq!(state.groups["g"].changed_ms(), Some(7_000));
}

#[test]
fn commands_round_trip() {
    let commands = vec![
        Command::Offsets {
            group_id: "g".into(),
            offsets: vec![(
                "t".into(),
                3,
                CommittedOffset {
                    offset: 42,
                    leader_epoch: 7,
                    metadata: "m".into(),
                    commit_time_ms: 1000,
                },
            )],
        },
        Command::Group {
            group_id: "g".into(),
            meta: GroupMeta {
                generation: Generation(3),
                protocol_type: "consumer".into(),
                protocol: "range".into(),
                leader: "a".into(),
                members: vec![StoredMember {
                    member_id: "a".into(),
                    instance_id: Some("i".into()),
                    client_id: "c".into(),
                    client_host: "/1.2.3.4".into(),
                    session_timeout_ms: 10_000,
                    rebalance_timeout_ms: 30_000,
                    subscription: Bytes::from_static(b"sub"),
                    assignment: Bytes::from_static(b"asg"),
                }],
                state_time_ms: 1_234,
            },
        },
        Command::Delete {
            group_id: "g".into(),
        },
        Command::DeleteOffsets {
            group_id: "g".into(),
            partitions: vec![("t".into(), 3), ("u".into(), 0)],
        },
        Command::TxnOffsets {
            group_id: "g".into(),
            producer_id: ProducerId(9),
            epoch: ProducerEpoch(2),
            txn_start_ms: 5_000,
            offsets: vec![(
                "t".into(),
                1,
                CommittedOffset {
                    offset: 8,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_time_ms: 6_000,
                },
            )],
        },
        Command::TxnEnd(TxnEnd {
            producer_id: ProducerId(9),
            epoch: ProducerEpoch(2),
            txn_start_ms: 5_000,
            commit: true,
            ended_ms: 7_000,
        }),
    ];
    for command in commands {
        let bytes = command.encode();
        assert_eq!(Command::decode(&bytes).unwrap(), command);
        assert!(Command::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}

/// A command of a small alphabet of groups, topics and partitions, so that commands
/// overwrite, delete and recreate each other's keys; memberships get `generation`.
fn command(choice: (u8, u8, u8, u8, usize), generation: i32) -> Command {
    let (kind, group, key, size, members) = choice;
    let group_id = ["a", "bb"][usize::from(group % 2)].to_string();
    let topic = ["t", "topic"][usize::from(key % 2)].to_string();
    let partition = i32::from(key / 2 % 3);
    let offset = CommittedOffset {
        offset: 7,
        leader_epoch: -1,
        metadata: "m".repeat(usize::from(size)),
        commit_time_ms: 1_000,
    };
    match kind % 4 {
        0 => Command::Offsets {
            group_id,
            offsets: vec![
                (topic.clone(), partition, offset.clone()),
                (topic, (partition + 1) % 3, offset),
            ],
        },
        1 => Command::Group {
            group_id,
            meta: GroupMeta {
                generation: Generation(generation),
                protocol_type: "consumer".into(),
                protocol: "range".repeat(usize::from(size % 3)),
                leader: "m0".into(),
                members: (0..members)
                    .map(|i| StoredMember {
                        member_id: format!("m{i}"),
                        instance_id: (i % 2 == 1).then(|| format!("i{i}")),
                        client_id: "c".into(),
                        client_host: "/1.2.3.4".into(),
                        session_timeout_ms: 10_000,
                        rebalance_timeout_ms: 30_000,
                        subscription: Bytes::from(vec![1; usize::from(size)]),
                        assignment: Bytes::from(vec![2; i]),
                    })
                    .collect(),
                state_time_ms: 1_234,
            },
        },
        2 => Command::Delete { group_id },
        3 => Command::DeleteOffsets {
            group_id,
            partitions: vec![(topic, partition)],
        },
        // Two producers, whose transactions start at one of three times.
        4 => Command::TxnOffsets {
            group_id,
            producer_id: ProducerId(i64::from(key % 2)),
            epoch: ProducerEpoch(1),
            txn_start_ms: i64::from(size % 3),
            offsets: vec![(topic, partition, offset)],
        },
        _ => Command::TxnEnd(TxnEnd {
            producer_id: ProducerId(i64::from(key % 2)),
            epoch: ProducerEpoch(1),
            txn_start_ms: i64::from(size % 3),
            commit: group == 0,
            // Far enough apart that markers forget earlier ones.
            ended_ms: i64::from(generation) * (ENDED_KEEP_MS / 3),
        }),
    }
}

fn commands(choices: &[(u8, u8, u8, u8, usize)], first: i32) -> Vec<Command> {
    (first..)
        .zip(choices)
        .map(|(g, c)| command(*c, g))
        .collect()
}

proptest::proptest! {
    #![proptest_config(crate::test_support::fixed_seed_config(256))]

    /// The size each command's `Resize` gives, added up from the empty state, is the
    /// encoded state's size after every command, and so is the recount.
    #[test]
    fn applied_sizes_are_the_encoded_size(
        choices in proptest::collection::vec((0u8..6, 0u8..2, 0u8..6, 0u8..40, 0usize..3), 0..40)
    ) {
        let mut state = StoredState::default();
        let mut bytes = StoredState::HEADER_BYTES;
        proptest::prop_assert_eq!(state.encode().len(), bytes);
        for command in commands(&choices, 1) {
            bytes = state.apply(&command).applied_to(bytes);
            proptest::prop_assert_eq!(state.encode().len(), bytes, "{:?}", command);
            proptest::prop_assert_eq!(state.encoded_len(), bytes);
            state.txn_invariants();
            // The snapshot rebuilds the same state, indexes included.
            proptest::prop_assert_eq!(&StoredState::decode(&state.encode()).unwrap(), &state);
        }
    }

    /// Commands a leader proposed against one state, applied after it in any order and
    /// overwriting each other, never grow it past their growth bounds summed.
    #[test]
    fn growth_bounds_sum_to_at_most_what_the_commands_add(
        before in proptest::collection::vec((0u8..6, 0u8..2, 0u8..6, 0u8..40, 0usize..3), 0..20),
        proposed in proptest::collection::vec((0u8..6, 0u8..2, 0u8..6, 0u8..40, 0usize..3), 1..20),
    ) {
        let mut state = StoredState::default();
        for command in commands(&before, 1) {
            state.apply(&command);
        }
        let size = state.encode().len();
        let proposed = commands(&proposed, 100);
        let bound: usize = proposed.iter().map(|c| state.growth_bound(c)).sum();
        for command in &proposed {
            state.apply(command);
        }
        proptest::prop_assert!(state.encode().len() <= size + bound);
    }
}

/// The case the bound must not miss: one commit grows a key and shrinks another, whose
/// shrinking a later commit undoes. Neither commit's net change is growth; their keys' are.
#[test]
fn a_shrink_a_later_commit_undoes_is_not_counted_as_room() {
    let offset = |metadata: usize| CommittedOffset {
        offset: 1,
        leader_epoch: -1,
        metadata: "m".repeat(metadata),
        commit_time_ms: 0,
    };
    let commit = |offsets: Vec<(&str, usize)>| Command::Offsets {
        group_id: "g".into(),
        offsets: offsets
            .into_iter()
            .map(|(t, m)| (t.to_string(), 0, offset(m)))
            .collect(),
    };
    let mut state = StoredState::default();
    state.apply(&commit(vec![("a", 10), ("b", 100)]));
    let size = state.encode().len();
    let swap = commit(vec![("a", 100), ("b", 10)]);
    let back = commit(vec![("b", 100)]);
    assert_eq!(state.growth_bound(&swap), 90);
    assert_eq!(state.growth_bound(&back), 0);
    state.apply(&swap);
    state.apply(&back);
    assert_eq!(state.encode().len(), size + 90);
}

fn txn_offsets(producer: i64, txn_start_ms: i64, offset: i64) -> Command {
    Command::TxnOffsets {
        group_id: "g".into(),
        producer_id: ProducerId(producer),
        epoch: ProducerEpoch(0),
        txn_start_ms,
        offsets: vec![(
            "in".into(),
            0,
            CommittedOffset {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_time_ms: 1_000,
            },
        )],
    }
}

fn txn_end(producer: i64, txn_start_ms: i64, commit: bool, ended_ms: i64) -> Command {
    Command::TxnEnd(TxnEnd {
        producer_id: ProducerId(producer),
        epoch: ProducerEpoch(0),
        txn_start_ms,
        commit,
        ended_ms,
    })
}

fn committed(state: &StoredState) -> Option<i64> {
    state.groups["g"]
        .offsets
        .get(&("in".to_string(), 0))
        .map(|o| o.offset)
}

/// Transactional offsets are pending until their marker: a commit makes them the group's
/// offsets, an abort drops them, and a late commit of an ended transaction stays dropped.
#[test]
fn transactional_offsets_wait_for_their_marker() {
    let mut state = StoredState::default();
    state.apply(&txn_offsets(1, 100, 10));
    assert!(state.is_pending("g", "in", 0));
    assert_eq!(committed(&state), None);
    state.apply(&txn_end(1, 100, true, 2_000));
    assert!(!state.is_pending("g", "in", 0));
    assert_eq!(committed(&state), Some(10));

    state.apply(&txn_offsets(1, 200, 20));
    assert!(state.is_pending("g", "in", 0));
    state.apply(&txn_end(1, 200, false, 3_000));
    assert!(!state.is_pending("g", "in", 0));
    assert_eq!(committed(&state), Some(10), "an abort leaves the offsets");

    // Verified before its marker, applied after it: dropped, not pending forever.
    state.apply(&txn_offsets(1, 200, 25));
    assert!(!state.is_pending("g", "in", 0));
    // Another producer's marker ends nothing of this one's.
    state.apply(&txn_offsets(1, 300, 30));
    state.apply(&txn_end(2, 300, true, 4_000));
    assert!(state.is_pending("g", "in", 0));
    assert_eq!(committed(&state), Some(10));
    // A late duplicate of an earlier marker ends nothing either.
    state.apply(&txn_end(1, 200, true, 5_000));
    assert!(state.is_pending("g", "in", 0));
    state.apply(&txn_end(1, 300, true, 6_000));
    assert_eq!(committed(&state), Some(30));
    state.txn_invariants();
}

/// A partition forgets a producer's ended transaction a day after it, by the markers' time.
#[test]
fn ended_transactions_are_forgotten_after_a_day() {
    let mut state = StoredState::default();
    state.apply(&txn_end(1, 100, true, 1_000));
    state.apply(&txn_end(2, 100, true, 1_000 + ENDED_KEEP_MS));
    assert_eq!(state.txn_ended.len(), 2);
    state.apply(&txn_end(3, 100, false, 1_001 + ENDED_KEEP_MS));
    assert_eq!(
        state.txn_ended.keys().copied().collect::<Vec<_>>(),
        [ProducerId(2), ProducerId(3)]
    );
    assert_eq!(state.encoded_len(), state.encode().len());
    state.txn_invariants();
}
