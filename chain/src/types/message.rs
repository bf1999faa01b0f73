//! The messages BFT replicas exchange: proposals, which carry whole blocks, and the other messages of the
//! protocol (`specs/consensus.md` §2); their encoding is [`super::wire`].

use crate::ids::{MemberIndex, ShardId};
use crate::types::block::Block;
use crate::types::vote::{
    Committee, QuorumCertificate, SignedProposalHeader, Vote, VoteScheme, proposal_message,
};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Proposal<S: VoteScheme> {
    pub shard: ShardId,
    pub height: u64,
    pub round: u32,
    pub block: Arc<Block>,
    /// The round in which this block gathered a prevote quorum (Tendermint's "valid round"), if any.
    pub valid_round: Option<u32>,
    /// The prevote certificate of `valid_round`, so receivers need not have seen those prevotes.
    pub polka: Option<QuorumCertificate<S>>,
    pub proposer: MemberIndex,
    pub signature: S::Sig,
}

impl<S: VoteScheme> Proposal<S> {
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        chain_id: u32,
        shard: ShardId,
        height: u64,
        round: u32,
        block: Arc<Block>,
        valid_round: Option<u32>,
        polka: Option<QuorumCertificate<S>>,
        proposer: MemberIndex,
        secret: &S::Secret,
    ) -> Self {
        let msg = proposal_message(chain_id, shard, height, round, &block.hash(), valid_round);
        let signature = S::sign(secret, &msg);
        Self {
            shard,
            height,
            round,
            block,
            valid_round,
            polka,
            proposer,
            signature,
        }
    }

    pub fn verify_signature(&self, chain_id: u32, committee: &Committee<S>) -> bool {
        let msg = proposal_message(
            chain_id,
            self.shard,
            self.height,
            self.round,
            &self.block.hash(),
            self.valid_round,
        );
        committee.member_signed(self.proposer, &msg, &self.signature)
    }
}

/// What replicas send each other.
#[derive(Debug, Clone)]
pub enum Message<S: VoteScheme> {
    Proposal(Proposal<S>),
    Vote(Vote<S>),
    /// A finalised block and the precommit certificate that finalised it: lets a replica that missed the
    /// votes, or fell behind, commit it after checking the certificate.
    Decided {
        block: Arc<Block>,
        certificate: QuorumCertificate<S>,
    },
    /// "I am at this height and round": peers ahead answer with the finalised blocks it misses, or with
    /// their votes of the rounds it has not finished.
    Status {
        shard: ShardId,
        height: u64,
        round: u32,
    },
    /// A block that gathered a prevote quorum in some round, with that certificate. Members re-send their
    /// latest one so that every honest member learns it and a later honest proposer re-proposes it: this
    /// frees members locked on it, who would otherwise prevote nil on every new block.
    Polka {
        block: Arc<Block>,
        certificate: QuorumCertificate<S>,
    },
}

impl<S: VoteScheme> Proposal<S> {
    pub fn signed_header(&self) -> SignedProposalHeader<S> {
        SignedProposalHeader {
            shard: self.shard,
            height: self.height,
            round: self.round,
            block: self.block.hash(),
            valid_round: self.valid_round,
            proposer: self.proposer,
            signature: self.signature.clone(),
        }
    }
}
