//! An account: the leaf record of a shard's state tree, and its versioned encoding.
//!
//! It lives in the types layer because proofs about accounts ([`crate::types::proof::AccountProof`]) carry
//! it; the execution that changes accounts is [`crate::state`], which re-exports it.

use crate::address::Address;
use crate::amount::Amount;
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{Hash, bls, hash_with};

const ACCOUNT_VERSION: u8 = 1;

/// The state-tree key of an account: its address hashed under the account namespace.
///
/// Every leaf of a shard's tree lives under a key hashed with its own domain (accounts here, Atomix locks,
/// done marks and totals in `atomix`, registry checkpoints in `registry`, the fee pool in `state`), so no
/// 32 bytes a transaction can name (a transfer may pay any address) reach another kind's leaf: paying the
/// address equal to a lock's key creates an account beside the lock instead of overwriting it.
pub fn account_key(address: &Address) -> Hash {
    hash_with("IOS account key v1", &[&address.0])
}

/// What one address holds on its shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    pub balance: Amount,
    pub nonce: u64,
    pub validator_stake: Amount,
    pub validator_key: Option<bls::PublicKey>,
    pub storage_stake: Amount,
    pub storage_registered: bool,
    pub unbonding: Amount,
    pub unbonding_release_height: u64,
}

impl Account {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(ACCOUNT_VERSION)
            .u64(self.balance.0)
            .u64(self.nonce)
            .u64(self.validator_stake.0);
        match &self.validator_key {
            Some(k) => w.bool(true).fixed(&k.0),
            None => w.bool(false),
        };
        w.u64(self.storage_stake.0).bool(self.storage_registered);
        w.u64(self.unbonding.0).u64(self.unbonding_release_height);
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != ACCOUNT_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let balance = Amount(r.u64()?);
        let nonce = r.u64()?;
        let validator_stake = Amount(r.u64()?);
        let validator_key = if r.bool()? {
            Some(bls::PublicKey(r.array()?))
        } else {
            None
        };
        let account = Self {
            balance,
            nonce,
            validator_stake,
            validator_key,
            storage_stake: Amount(r.u64()?),
            storage_registered: r.bool()?,
            unbonding: Amount(r.u64()?),
            unbonding_release_height: r.u64()?,
        };
        r.finish()?;
        Ok(account)
    }

    /// Everything the account holds, spendable or not.
    pub fn holdings(&self) -> u128 {
        u128::from(self.balance.0)
            + u128::from(self.validator_stake.0)
            + u128::from(self.storage_stake.0)
            + u128::from(self.unbonding.0)
    }

    pub fn value_hash(&self) -> Hash {
        hash_with("IOS account v1", &[&self.encode()])
    }
}
