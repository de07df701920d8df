//! Admin requests: changes to the cluster metadata, proposed by the metadata group's leader
//! or handed to it from any other node, and answered once their entry applies here.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::ids::{GroupId, RaftIndex, RequestId, Term};
use crate::io::{AdminRequest, Forward, Response};
use crate::metadata::{encode_entry, AdminError, MetadataChange, Origin, METADATA_GROUP};
use crate::time::{Instant, Now};

use super::{Node, Sink};

/// An admin request proposed to the metadata group, waiting for its entry to apply.
#[derive(Debug)]
pub(super) struct AdminPending {
    pub(super) id: RequestId,
    pub(super) index: RaftIndex,
    pub(super) term: Term,
    pub(super) deadline: Instant,
}

/// An admin request handed to the metadata leader, waiting for its entry (tagged with this
/// node's token) to apply here.
#[derive(Debug)]
pub(super) struct Forwarded {
    id: RequestId,
    deadline: Instant,
}

impl Node {
    pub(super) fn handle_admin(
        &mut self,
        now: Now,
        id: RequestId,
        admin: AdminRequest,
        sink: &mut Sink,
        touched: &mut BTreeSet<GroupId>,
    ) {
        let answer = |sink: &mut Sink, result| sink.reply(id, Response::Admin(result));
        let (Some(state), Some(replica)) =
            (self.metadata.as_ref(), self.groups.get_mut(&METADATA_GROUP))
        else {
            return answer(sink, Err(AdminError::NotController { leader: None }));
        };
        let serving = replica.status().serving;
        if serving || (admin.forward == Forward::Await && admin.validate_only) {
            // The serving leader's state holds every earlier change: check against it, so a
            // refused change costs no log entry (apply checks again, authoritatively). A
            // follower checks a validation against what it applied.
            if let Err(error) = state.check(&admin.command, self.config.partition_limits) {
                return answer(sink, Err(error));
            }
            if admin.validate_only {
                return answer(sink, Ok(None));
            }
        }
        if self.admin_pending.len() + self.forwarded.len() >= self.config.pending_requests_max {
            return answer(sink, Err(AdminError::Backpressure));
        }
        if !serving && admin.forward != Forward::No {
            // The token's top bits are drawn from this start's seed (production seeds differ
            // per start, and its incarnation is always 0): an entry an earlier start forwarded
            // may still apply, and must not answer a request of this one.
            let origin = (admin.forward == Forward::Await).then_some(Origin {
                node: self.config.node_id,
                token: self.forward_prefix | self.forward_next,
            });
            let limits = self.config.partition_limits;
            let data = Bytes::from(encode_entry(&admin.command, origin, limits));
            return match replica.forward_metadata(data) {
                Ok(()) => {
                    touched.insert(METADATA_GROUP);
                    match origin {
                        None => answer(sink, Ok(None)),
                        Some(origin) => {
                            self.forward_next += 1;
                            let deadline = now.mono.plus_ms(u64::from(admin.timeout_ms));
                            self.forwarded
                                .insert(origin.token, Forwarded { id, deadline });
                        }
                    }
                }
                Err(leader) => answer(sink, Err(AdminError::NotController { leader })),
            };
        }
        let limits = self.config.partition_limits;
        let data = Bytes::from(encode_entry(&admin.command, None, limits));
        match replica.propose_command(data) {
            Err(leader) => answer(sink, Err(AdminError::NotController { leader })),
            Ok((index, term)) => {
                touched.insert(METADATA_GROUP);
                self.admin_pending.push_back(AdminPending {
                    id,
                    index,
                    term,
                    deadline: now.mono.plus_ms(u64::from(admin.timeout_ms)),
                });
            }
        }
    }

    /// A metadata entry this node forwarded applied here: answers the request that waits.
    pub(super) fn forwarded_applied(
        &mut self,
        origin: Origin,
        result: &Result<MetadataChange, AdminError>,
        sink: &mut Sink,
    ) {
        if origin.node != self.config.node_id {
            return;
        }
        // Gone if it timed out, or if an earlier incarnation forwarded it.
        if let Some(forwarded) = self.forwarded.remove(&origin.token) {
            sink.reply(forwarded.id, Response::Admin(result.clone().map(Some)));
        }
    }

    /// Answers `TimedOut` to admin requests past their deadline. A forwarded one may still
    /// apply later: as with any timeout, the client cannot tell.
    pub(super) fn expire_admin(&mut self, now: Now, sink: &mut Sink) {
        let mut keep = std::collections::VecDeque::with_capacity(self.admin_pending.len());
        for pending in self.admin_pending.drain(..) {
            if pending.deadline <= now.mono {
                sink.reply(pending.id, Response::Admin(Err(AdminError::TimedOut)));
            } else {
                keep.push_back(pending);
            }
        }
        self.admin_pending = keep;
        self.forwarded.retain(|_, forwarded| {
            let expired = forwarded.deadline <= now.mono;
            if expired {
                sink.reply(forwarded.id, Response::Admin(Err(AdminError::TimedOut)));
            }
            !expired
        });
    }
}
