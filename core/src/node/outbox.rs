//! What the core tells the shell: the command queue, and the role and member changes
//! reported once each.

use super::ClusterCore;
use crate::event::{Command, Delivery};
use crate::id::{Address, NodeId};
use crate::membership::Membership;
use crate::message::{Envelope, Message, PROTOCOL_VERSION};
use crate::status::Role;
use crate::time::Instant;
use std::collections::VecDeque;
use tracing::info;

/// Commands waiting for [`ClusterCore::poll_command`], and what was last reported.
#[derive(Debug)]
pub(super) struct Outbox {
    pub(super) commands: VecDeque<Command>,
    /// The (role, term, primary) last reported in a `RoleChanged`.
    reported_role: (Role, u64, Option<NodeId>),
    reported_members: Option<Membership>,
    /// The committed configuration may have changed since it was last reported.
    pub(super) members_dirty: bool,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            commands: VecDeque::with_capacity(64),
            reported_role: (Role::Inactive, 0, None),
            reported_members: None,
            members_dirty: false,
        }
    }
}

impl ClusterCore {
    pub(super) fn send(&mut self, to: Address, to_id: Option<NodeId>, msg: Message) {
        self.send_in(self.hard.cluster, to, to_id, msg);
    }

    /// Sends `msg` in an envelope that names `cluster` rather than this node's.
    pub(super) fn send_in(
        &mut self,
        cluster: Option<crate::id::ClusterId>,
        to: Address,
        to_id: Option<NodeId>,
        msg: Message,
    ) {
        let to = match to_id.and_then(|id| self.peers.route(id)) {
            Some(route) => route.clone(),
            None => to,
        };
        let class = Delivery::of(cluster, to_id, &msg);
        let env = Envelope {
            version: PROTOCOL_VERSION,
            cluster,
            from: self.me.id,
            from_addr: self.me.addr.clone(),
            to: to_id,
            msg,
        };
        self.out.commands.push_back(Command::Send {
            to,
            msg: env,
            class,
        });
    }

    /// Reports a change of the application's role or primary, and of the committed
    /// members, once each.
    pub(super) fn emit_changes(&mut self, now: Instant) {
        let role = self.app_role(now);
        let primary = self.primary_info(now);
        let key = (role, self.hard.term, primary.as_ref().map(|p| p.id));
        if key != self.out.reported_role {
            if key.0 != self.out.reported_role.0 || key.2 != self.out.reported_role.2 {
                info!(?role, primary = ?primary.as_ref().map(|p| p.id), "role changed");
            }
            self.out.reported_role = key;
            let lease_until = self
                .role
                .leading()
                .filter(|_| role == Role::Primary)
                .map(|l| l.lease_until);
            self.out.commands.push_back(Command::RoleChanged {
                role,
                term: self.hard.term,
                primary,
                lease_until,
                fencing_token: self.fencing_token(now),
            });
        }
        if self.out.members_dirty {
            self.out.members_dirty = false;
            let committed = self.log.committed();
            if self.out.reported_members.as_ref() != Some(committed) {
                self.out.reported_members = Some(committed.clone());
                let list = committed
                    .members
                    .iter()
                    .map(|(id, m)| (*id, m.clone()))
                    .collect();
                self.out.commands.push_back(Command::MembersChanged(list));
            }
        }
    }
}
