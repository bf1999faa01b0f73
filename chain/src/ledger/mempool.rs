//! The mempool: transactions admitted for later blocks, bounded, with the admission checks that tell a
//! client at once why a transaction can never apply, and the signatures already verified.

use super::{
    EXPIRY_WINDOW_MAX, MEMPOOL_TXS_MAX, PENDING_PER_SENDER_MAX, ShardApp, VERIFIED_TXS_MAX,
};
use crate::address::shard_of;
use crate::amount::Amount;
use crate::crypto::Hash;
use crate::store::Store;
use crate::tx::{SignedTransaction, TxError, TxKind};
use crate::types::volume::volume_id;

impl<St: Store> ShardApp<St> {
    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    /// Admits a transaction to the mempool if it could be valid on this shard now or after the sender's
    /// pending transactions. The mempool is bounded.
    pub fn submit(&mut self, tx: SignedTransaction) -> Result<(), TxError> {
        let id = tx.id();
        if !self.verified.contains(&id) {
            tx.check_stateless(self.state.params().chain_id)?;
        }
        self.admissible(&tx)?;
        if self.mempool.len() >= MEMPOOL_TXS_MAX {
            return Err(TxError::MempoolFull);
        }
        self.remember_verified(id);
        self.mempool
            .insert((tx.tx.sender_address(), tx.tx.nonce), tx);
        Ok(())
    }

    /// Every admission check but the signature: what a validator runs on gossiped transactions before it
    /// spends a signature check on them, so that junk (wrong shard, stale or far nonces, unfunded senders,
    /// low fees) costs a peer's flood no CPU beyond decoding.
    pub fn admissible(&self, tx: &SignedTransaction) -> Result<(), TxError> {
        let params = self.state.params();
        tx.check_stateless_signature_verified(params.chain_id)?;
        let sender = tx.tx.sender_address();
        let sender_shard = shard_of(&sender, params.shard_count);
        if sender_shard != self.state.shard() {
            return Err(TxError::WrongShard {
                shard: self.state.shard(),
                sender_shard,
            });
        }
        let nonce = self.state.account(&sender).map_or(0, |a| a.nonce);
        if tx.tx.nonce < nonce {
            return Err(TxError::ReplayedNonce {
                expected: nonce,
                got: tx.tx.nonce,
            });
        }
        if tx.tx.nonce - nonce >= PENDING_PER_SENDER_MAX {
            return Err(TxError::NonceTooFar {
                expected: nonce,
                got: tx.tx.nonce,
                window: PENDING_PER_SENDER_MAX,
            });
        }
        self.check_admission(tx, nonce)
    }

    /// Records that the signed transaction with this id passed its signature check, so executing it in a
    /// block does not check it again. Bounded: past the limit the set starts over (transactions are then
    /// simply verified again).
    pub(super) fn remember_verified(&mut self, id: Hash) {
        if self.verified.len() >= VERIFIED_TXS_MAX {
            self.verified.clear();
        }
        self.verified.insert(id);
    }

    /// Whether a transaction with this id passed its signature check here lately (then a copy of it needs
    /// no new check).
    pub fn signature_known(&self, id: &Hash) -> bool {
        self.verified.contains(id)
    }

    /// Admits transactions whose signatures the caller already verified (in a batch): `verified[i]` says
    /// whether transaction `i`'s signature is good. The others, and any without a verdict, are refused with
    /// the signature error.
    pub fn submit_verified(
        &mut self,
        txs: Vec<SignedTransaction>,
        verified: &[bool],
    ) -> Vec<Result<(), TxError>> {
        txs.into_iter()
            .enumerate()
            .map(|(i, tx)| {
                if verified.get(i).copied().unwrap_or(false) {
                    self.remember_verified(tx.id());
                }
                self.submit(tx)
            })
            .collect()
    }

    /// The checks a transaction can fail at admission, so that a client hears the reason at once instead of
    /// the transaction waiting in the mempool until it expires: fee, expiry (not past, not too far ahead),
    /// and the balance against the sender's whole pending chain.
    pub(super) fn check_admission(
        &self,
        tx: &SignedTransaction,
        account_nonce: u64,
    ) -> Result<(), TxError> {
        let params = self.state.params();
        let t = &tx.tx;
        let min = t.fee_floor(params.fee_min)?;
        if t.fee < min {
            return Err(TxError::FeeTooLow { min, got: t.fee });
        }
        let height = self.tip.height + 1;
        if t.expiry_height < height {
            return Err(TxError::Expired {
                expiry_height: t.expiry_height,
                height,
            });
        }
        let max = height.saturating_add(EXPIRY_WINDOW_MAX);
        if t.expiry_height > max {
            return Err(TxError::ExpiryTooFar {
                expiry_height: t.expiry_height,
                max,
            });
        }
        // A deal transaction that the committed state already refuses never applies whatever comes before
        // it: kept, it would sit at its nonce until expiry and hold back the sender's later transactions
        // for free.
        match &t.kind {
            TxKind::OpenDeal { terms, .. }
                if self.state.deal(&terms.id(&t.sender_address())).is_some() =>
            {
                return Err(TxError::DealExists);
            }
            TxKind::EndDeal { deal } => {
                let record = self.state.deal(deal).ok_or(TxError::UnknownDeal)?;
                if record.owner != t.sender_address() {
                    return Err(TxError::NotDealOwner);
                }
                record.end_at(height)?;
            }
            // A publish that replaces a version already replaced can never apply (one that replaces a later
            // version may, after the sender's pending publishes).
            TxKind::PublishVolume { name, replaces, .. } => {
                let head = self
                    .state
                    .volume_head(&volume_id(&t.sender_address(), name));
                if *replaces < head {
                    return Err(TxError::VolumeVersion {
                        head,
                        replaces: *replaces,
                    });
                }
            }
            _ => {}
        }
        // The balance must cover the sender's whole pending chain with this transaction in it (a pending
        // transaction of the same nonce is the one this replaces), so that a sender cannot queue more than
        // it can pay for, whichever nonces it picks.
        let sender = t.sender_address();
        let account = self.state.account(&sender);
        let mut available = account.map_or(Amount::ZERO, |a| a.balance);
        if let Some(a) = account.filter(|a| height >= a.unbonding_release_height) {
            available = available
                .checked_add(a.unbonding)
                .ok_or(TxError::Overflow)?;
        }
        let mut needed = cost(t)?;
        for ((_, nonce), pending) in self
            .mempool
            .range((sender, account_nonce)..=(sender, u64::MAX))
        {
            if *nonce != t.nonce {
                needed = needed
                    .checked_add(cost(&pending.tx)?)
                    .ok_or(TxError::Overflow)?;
            }
        }
        if needed > available {
            return Err(TxError::Overspend { needed, available });
        }
        Ok(())
    }
}

/// What a transaction takes from its sender's balance: its fee and what it sends or stakes.
fn cost(t: &crate::tx::Transaction) -> Result<Amount, TxError> {
    t.fee.checked_add(t.outgoing()?).ok_or(TxError::Overflow)
}
