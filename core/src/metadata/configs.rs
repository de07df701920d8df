//! Topic configuration: the keys oxbow implements, their defaults (Kafka's), the check of each
//! value (Kafka's ranges, from its `LogConfig`/`TopicConfig`), the check of the whole set
//! (Kafka's `LogConfig.validateValues`: the compaction lags), and the cleanup policy a topic's
//! `cleanup.policy` names.
//!
//! Configurations live in [`super::TopicMeta::configs`] as strings, as clients sent them; the
//! metadata log's commands and snapshots carry that map whole, so a key added here needs no
//! new encoding (a snapshot without it reads as "default").

use std::collections::BTreeMap;

use super::TopicMeta;

/// Topic configuration keys that can change on an existing topic (IncrementalAlterConfigs,
/// AlterConfigs); they take effect at once (retention reads them at every check, a partition's
/// leader the cleanup policy at every produce).
pub const RUNTIME_TOPIC_CONFIGS: &[&str] = &[
    "cleanup.policy",
    "delete.retention.ms",
    "max.compaction.lag.ms",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

/// Topic configuration keys oxbow implements, with their defaults. Anything else is refused,
/// rather than accepted and ignored.
/// The defaults are Kafka's; a node's own defaults for retention (its `[log]` settings) take
/// their place where it answers.
pub const TOPIC_CONFIGS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("delete.retention.ms", "86400000"),
    ("max.compaction.lag.ms", "9223372036854775807"),
    ("message.timestamp.type", "CreateTime"),
    ("min.cleanable.dirty.ratio", "0.5"),
    ("min.compaction.lag.ms", "0"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "1073741824"),
    ("segment.ms", "604800000"),
];

/// What a topic's `cleanup.policy` asks for: deleting old records (retention, DeleteRecords),
/// keeping the latest record per key (compaction), or both. At least one is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// `delete` is listed: retention by time and size applies, and DeleteRecords is allowed.
    pub delete: bool,
    /// `compact` is listed: records must have keys, and superseded records may be cleaned.
    pub compact: bool,
}

impl Cleanup {
    /// Kafka's default, `delete`.
    pub const DELETE: Self = Self {
        delete: true,
        compact: false,
    };

    /// Reads a `cleanup.policy` value: Kafka's list syntax (comma-separated, blanks around the
    /// items ignored), items `compact` or `delete` in any order, at least one.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut cleanup = Self {
            delete: false,
            compact: false,
        };
        for item in value.split(',').map(str::trim) {
            match item {
                "delete" => cleanup.delete = true,
                "compact" => cleanup.compact = true,
                _ => {
                    return Err(format!(
                        "cleanup.policy={value:?}: {item:?} is not a policy; list delete, \
                         compact, or both (e.g. \"compact,delete\")"
                    ))
                }
            }
        }
        Ok(cleanup)
    }

    /// Whether the policy is `compact` alone: nothing is ever deleted by offset (retention
    /// skips the topic, DeleteRecords is refused).
    pub fn compact_only(self) -> bool {
        self.compact && !self.delete
    }
}

impl TopicMeta {
    /// What the topic's `cleanup.policy` asks for (checked when it was set).
    pub fn cleanup(&self) -> Cleanup {
        self.config("cleanup.policy")
            .and_then(|value| Cleanup::parse(value).ok())
            .unwrap_or(Cleanup::DELETE)
    }
}

/// Checks one topic configuration entry, with Kafka's bounds.
pub fn check_topic_config(key: &str, value: &str) -> Result<(), String> {
    // (lowest, highest) of the whole-number keys.
    let whole: Option<(i64, i64)> = match key {
        "retention.ms" | "retention.bytes" => Some((-1, i64::MAX)),
        "segment.ms" | "max.compaction.lag.ms" => Some((1, i64::MAX)),
        "min.compaction.lag.ms" | "delete.retention.ms" => Some((0, i64::MAX)),
        // Kafka's bounds: at least a record's overhead, at most an int.
        "segment.bytes" => Some((14, i64::from(i32::MAX))),
        _ => None,
    };
    if let Some((low, high)) = whole {
        return match value.parse::<i64>() {
            Ok(n) if (low..=high).contains(&n) => Ok(()),
            _ => Err(format!(
                "{key}={value:?} is not a whole number from {low} to {high}{}",
                if low == -1 { " (-1: no limit)" } else { "" }
            )),
        };
    }
    match key {
        "cleanup.policy" => return Cleanup::parse(value).map(|_| ()),
        "min.cleanable.dirty.ratio" => {
            return match value.parse::<f64>() {
                Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(()),
                _ => Err(format!(
                    "{key}={value:?} is not a number from 0 to 1 (a fraction of the log)"
                )),
            }
        }
        _ => {}
    }
    let allowed: &[&str] = match key {
        "message.timestamp.type" => &["CreateTime", "LogAppendTime"],
        _ => {
            return Err(format!(
                "topic config {key:?} is not supported; supported: {}",
                TOPIC_CONFIGS
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    };
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{key}={value:?} is not supported; use one of {allowed:?}"
        ))
    }
}

/// Checks a topic's whole set of overrides (each entry checked already) as Kafka's
/// `LogConfig.validateValues` does: `min.compaction.lag.ms` at most `max.compaction.lag.ms`,
/// either one the default when not set; with Kafka's message.
pub fn check_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), String> {
    let lag = |key: &str| -> i64 {
        configs
            .get(key)
            .map(String::as_str)
            .or_else(|| default_of(key))
            .and_then(|v| v.parse().ok())
            .expect("checked, or Kafka's default")
    };
    let (min, max) = (lag("min.compaction.lag.ms"), lag("max.compaction.lag.ms"));
    if min > max {
        return Err(format!(
            "conflict topic config setting min.compaction.lag.ms ({min}) > max.compaction.lag.ms ({max})"
        ));
    }
    Ok(())
}

/// The default of a supported key.
pub(super) fn default_of(key: &str) -> Option<&'static str> {
    TOPIC_CONFIGS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_policy_is_a_kafka_list_of_delete_and_compact() {
        let both = Cleanup {
            delete: true,
            compact: true,
        };
        for (value, expected) in [
            ("delete", Cleanup::DELETE),
            (
                "compact",
                Cleanup {
                    delete: false,
                    compact: true,
                },
            ),
            ("compact,delete", both),
            ("delete,compact", both),
            (" compact , delete ", both),
            (
                "compact,compact",
                Cleanup {
                    delete: false,
                    compact: true,
                },
            ),
        ] {
            assert_eq!(Cleanup::parse(value), Ok(expected), "{value:?}");
            assert_eq!(check_topic_config("cleanup.policy", value), Ok(()));
        }
        assert!(Cleanup::parse("compact").expect("valid").compact_only());
        assert!(!both.compact_only());
        // Kafka's list validator refuses an unknown or empty item, and is case-sensitive;
        // oxbow also asks for at least one policy.
        for value in [
            "",
            "compact,",
            "Compact",
            "delete;compact",
            "compaction",
            ",",
        ] {
            let refused = check_topic_config("cleanup.policy", value);
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|m| m.contains("cleanup.policy")),
                "{value:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn compaction_keys_take_kafkas_ranges() {
        for (key, good, bad) in [
            (
                "min.cleanable.dirty.ratio",
                &["0", "0.01", "0.5", "1", "1.0"][..],
                &["-0.1", "1.01", "half", "NaN", ""][..],
            ),
            (
                "min.compaction.lag.ms",
                &["0", "1000", "9223372036854775807"],
                &["-1", "1.5", "soon"],
            ),
            (
                "max.compaction.lag.ms",
                &["1", "9223372036854775807"],
                &["0", "-1", "9223372036854775808"],
            ),
            ("delete.retention.ms", &["0", "86400000"], &["-1", "a day"]),
            ("segment.ms", &["1", "604800000"], &["0", "-1"]),
            (
                "segment.bytes",
                &["14", "52428800", "2147483647"],
                &["13", "2147483648"],
            ),
        ] {
            for value in good {
                assert_eq!(check_topic_config(key, value), Ok(()), "{key}={value}");
            }
            for value in bad {
                let refused = check_topic_config(key, value);
                assert!(
                    refused.as_ref().is_err_and(|m| m.contains(key)),
                    "{key}={value}: {refused:?}"
                );
            }
        }
        // Every supported key's default passes its own check.
        for (key, default) in TOPIC_CONFIGS {
            assert_eq!(check_topic_config(key, default), Ok(()), "{key}");
        }
    }

    #[test]
    fn the_minimum_compaction_lag_may_not_pass_the_maximum() {
        let configs = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(check_topic_configs(&configs(&[])), Ok(()));
        assert_eq!(
            check_topic_configs(&configs(&[
                ("min.compaction.lag.ms", "5"),
                ("max.compaction.lag.ms", "5")
            ])),
            Ok(())
        );
        assert_eq!(
            check_topic_configs(&configs(&[("min.compaction.lag.ms", "60000"), ("max.compaction.lag.ms", "1")])),
            Err("conflict topic config setting min.compaction.lag.ms (60000) > max.compaction.lag.ms (1)".into())
        );
        // Against the other's default (Long.MAX_VALUE and 0).
        assert_eq!(
            check_topic_configs(&configs(&[(
                "min.compaction.lag.ms",
                "9223372036854775807"
            )])),
            Ok(())
        );
        assert_eq!(
            check_topic_configs(&configs(&[("max.compaction.lag.ms", "1")])),
            Ok(())
        );
    }
}
