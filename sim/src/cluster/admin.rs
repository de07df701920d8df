//! The admin workload: create the topic the clients write to, then create and delete a
//! scratch topic, each step retried until its outcome is known.

use std::collections::BTreeMap;

use oxbow_core::ids::RequestId;
use oxbow_core::io::{AdminRequest, Forward, Input, Request, Response};
use oxbow_core::metadata::{AdminError, CreateTopic, MetadataCommand};

use super::{Cluster, Event, REQUEST_TIMEOUT_MS, SCRATCH_PARTITIONS};

impl Cluster {
    pub(super) fn admin_command(&self) -> Option<MetadataCommand> {
        let create = |name: &str, partitions: u32, replication_factor: u16| {
            MetadataCommand::CreateTopic(CreateTopic {
                name: name.into(),
                partitions,
                replication_factor,
                configs: BTreeMap::new(),
                assignment: Vec::new(),
            })
        };
        let nodes = self.options.nodes as u16;
        match self.admin.step {
            0 => Some(create("sim", self.options.groups as u32, nodes)),
            1 => Some(create("scratch", SCRATCH_PARTITIONS, nodes.min(2))),
            2 => Some(MetadataCommand::DeleteTopic {
                name: "scratch".into(),
            }),
            _ => None,
        }
    }

    pub(super) fn admin_send(&mut self) {
        if self.admin.in_flight.is_some() {
            return;
        }
        let Some(command) = self.admin_command() else {
            return;
        };
        let node = self.admin.guess;
        if self.slots[node].running.is_none() {
            self.admin.guess = self.admin_rng.below(self.options.nodes as u64) as usize;
            return self.admin_later();
        }
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.admin.in_flight = Some((id, node));
        self.mix(&[30, self.now_us, node as u64, self.admin.step as u64]);
        let request = Request::Admin(AdminRequest {
            command,
            validate_only: false,
            forward: Forward::No,
            timeout_ms: REQUEST_TIMEOUT_MS,
        });
        self.feed(node, Input::Request { id, request });
    }

    pub(super) fn admin_later(&mut self) {
        let pause = self.admin_rng.between(50, 300) * 1_000;
        self.schedule(self.now_us + pause, Event::Admin);
    }

    /// The step is done once its outcome is known: applied now, or found applied by an
    /// earlier attempt whose answer was lost.
    pub(super) fn admin_reply(&mut self, response: Response) {
        self.admin.in_flight = None;
        let Response::Admin(result) = response else {
            panic!("an admin request answered with {response:?}")
        };
        let done = match (&result, self.admin.step) {
            (Ok(Some(_)), _) => true,
            (Err(AdminError::TopicAlreadyExists), 0 | 1) => true,
            (Err(AdminError::UnknownTopic), 2) => true,
            (Err(AdminError::NotController { leader }), _) => {
                self.admin.guess = match leader {
                    Some(n) => (n.0 - 1) as usize,
                    None => self.admin_rng.below(self.options.nodes as u64) as usize,
                };
                false
            }
            (Err(AdminError::TimedOut | AdminError::Backpressure), _) => false,
            (other, step) => {
                self.checker
                    .violation(format!("admin step {step}: unexpected answer {other:?}"));
                false
            }
        };
        if done {
            self.admin.step += 1;
        }
        self.admin_later();
    }
}
