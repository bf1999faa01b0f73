//! A lane: one chain (the beacon, or a shard) that a validator keeps, in one of two roles behind one
//! interface. A member runs the chain's BFT [`Replica`]; anyone else runs a [`Follower`] that applies the
//! chain's finalised blocks. The role is an enum, not a member index with a sentinel, so that code asking
//! "which member am I" cannot mistake a follower for member `u16::MAX`.

use crate::ids::MemberIndex;
use std::sync::Arc;

use crate::ShardId;
use crate::address::Address;
use crate::bft::{
    self, Committee, FOLLOWER, Follower, Input, Message, Output, QuorumCertificate, Replica,
    ReplicaError, VoteScheme,
};
use crate::block::Block;
use crate::ledger::App;
use crate::store::StoreError;

use super::schedule::FOLLOWER_ASK_EVERY_MS;

/// One chain this validator keeps, in its current role.
pub enum Role<S: VoteScheme, A: App> {
    /// Boxed: a replica carries its round state and is much larger than a follower.
    Member(Box<Replica<S, A>>),
    Follower(Follower<S, A>),
}

/// A seat a validator holds in a committee: its member index there and the committee itself. What the plan
/// gives a lane to become a member of; no duty means follow.
#[derive(Debug, Clone)]
pub struct Duty<S: VoteScheme> {
    pub member: MemberIndex,
    pub committee: Committee<S>,
}

/// What a lane produced since it was last drained.
pub struct Drained<S: VoteScheme> {
    /// The index the lane's messages go out from: its member index, or [`FOLLOWER`].
    pub from: MemberIndex,
    /// The committee it is a member of (`None` while following).
    pub committee: Option<Committee<S>>,
    /// A member's replica outputs, in order.
    pub outputs: Vec<Output<S>>,
    /// A follower's `Status`, when it is due to ask members for blocks.
    pub ask: Option<Message<S>>,
}

/// A lane: its chain and its role.
pub struct Lane<S: VoteScheme, A: App> {
    pub shard: ShardId,
    pub role: Role<S, A>,
}

impl<S: VoteScheme, A: App> Lane<S, A> {
    /// A lane that starts as a follower of `shard` (it becomes a member at the next [`Lane::set_role`]
    /// that names a committee seat).
    pub fn follower(chain_id: u32, shard: ShardId, app: A) -> Self {
        Lane {
            shard,
            role: Role::Follower(Follower::new(chain_id, shard, app, FOLLOWER_ASK_EVERY_MS)),
        }
    }

    pub fn app(&self) -> &A {
        match &self.role {
            Role::Member(r) => r.app(),
            Role::Follower(f) => f.app(),
        }
    }

    pub fn app_mut(&mut self) -> &mut A {
        match &mut self.role {
            Role::Member(r) => r.app_mut(),
            Role::Follower(f) => f.app_mut(),
        }
    }

    /// The height being decided (or awaited).
    pub fn height(&self) -> u64 {
        self.app().tip().height + 1
    }

    /// Its member index, while a member.
    pub fn member(&self) -> Option<MemberIndex> {
        match &self.role {
            Role::Member(r) => Some(r.me()),
            Role::Follower(_) => None,
        }
    }

    /// The round being decided (a follower has none: 0).
    pub fn round(&self) -> u32 {
        match &self.role {
            Role::Member(r) => r.round(),
            Role::Follower(_) => 0,
        }
    }

    /// When the lane next wants a [`Lane::tick`] (a follower: when it is due to ask again).
    pub fn poll_timeout(&self) -> Option<u64> {
        match &self.role {
            Role::Member(r) => r.poll_timeout(),
            Role::Follower(f) => Some(f.poll_timeout()),
        }
    }

    /// Runs a member's due timers; a follower's asks are polled in [`Lane::drain`].
    pub fn tick(&mut self, now_ms: u64) {
        if let Role::Member(r) = &mut self.role {
            r.handle(now_ms, Input::Tick);
        }
    }

    /// The store error that stopped a member's replica, if one did.
    pub fn halted(&self) -> Option<&StoreError> {
        match &self.role {
            Role::Member(r) => r.halted(),
            Role::Follower(_) => None,
        }
    }

    /// One line on what the lane waits for: what a stalled committee is diagnosed from.
    pub fn describe(&self) -> String {
        match &self.role {
            Role::Member(r) => format!("shard {} member: {}", self.shard, r.describe()),
            Role::Follower(f) => format!("shard {} follower at height {}", self.shard, f.height()),
        }
    }

    /// Takes what the lane produced: a member's outputs, or a follower's due `Status`.
    pub fn drain(&mut self, now_ms: u64) -> Drained<S> {
        match &mut self.role {
            Role::Member(r) => {
                let mut outputs = Vec::new();
                while let Some(o) = r.poll_output() {
                    outputs.push(o);
                }
                Drained {
                    from: r.me(),
                    committee: Some(r.committee().clone()),
                    outputs,
                    ask: None,
                }
            }
            Role::Follower(f) => Drained {
                from: FOLLOWER,
                committee: None,
                outputs: Vec::new(),
                ask: f.poll_status(now_ms),
            },
        }
    }

    /// Hands a consensus message to a member's replica (if it is for everyone or for this member), or
    /// returns a finalised block for a follower (if it is for everyone or for followers) together with the
    /// follower, which the caller feeds with the committees it knows; anything else is dropped.
    #[allow(clippy::type_complexity)]
    pub fn route(
        &mut self,
        now_ms: u64,
        from: MemberIndex,
        to: Option<MemberIndex>,
        message: Message<S>,
    ) -> Option<(&mut Follower<S, A>, Arc<Block>, QuorumCertificate<S>)> {
        match &mut self.role {
            Role::Member(r) => {
                if to.is_none_or(|to| to == r.me()) {
                    r.handle(now_ms, Input::Message { from, message });
                }
                None
            }
            Role::Follower(f) => match message {
                Message::Decided { block, certificate } if to.is_none_or(|to| to == FOLLOWER) => {
                    Some((f, block, certificate))
                }
                _ => None,
            },
        }
    }

    /// Puts the lane in the role `want` (a seat in a committee, or following), keeping the
    /// ledger. A replica is rebuilt only when its committee changes, which happens only between heights,
    /// so a role change never loses a vote of the height in progress.
    pub fn set_role(
        self,
        want: Option<Duty<S>>,
        config: bft::Config,
        secret: &S::Secret,
        now_ms: u64,
    ) -> Result<Self, ReplicaError> {
        let Lane { shard, role } = self;
        let same = match (&role, &want) {
            (Role::Member(r), Some(duty)) => {
                let c = &duty.committee;
                r.me() == duty.member
                    && r.committee().seed == c.seed
                    && r.committee()
                        .members
                        .iter()
                        .map(|m| m.id)
                        .eq(c.members.iter().map(|m| m.id))
            }
            (Role::Follower(_), None) => true,
            _ => false,
        };
        if same {
            return Ok(Lane { shard, role });
        }
        let app = match role {
            Role::Member(r) => r.into_app(),
            Role::Follower(f) => f.into_app(),
        };
        let chain_id = config.chain_id;
        let role = match want {
            Some(Duty { member, committee }) => {
                let mut replica = Replica::new(config, committee, member, secret.clone(), app)?;
                // Started now, so that its timers run even before a message arrives.
                replica.handle(now_ms, Input::Tick);
                Role::Member(Box::new(replica))
            }
            None => Role::Follower(Follower::new(chain_id, shard, app, FOLLOWER_ASK_EVERY_MS)),
        };
        Ok(Lane { shard, role })
    }
}

/// The member index of `account` in `committee`.
pub fn index_in<S: VoteScheme>(committee: &Committee<S>, account: &Address) -> Option<MemberIndex> {
    committee
        .members
        .iter()
        .position(|m| m.id == *account)
        .and_then(MemberIndex::at)
}
