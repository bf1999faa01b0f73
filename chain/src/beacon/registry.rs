//! The registry: the validators and storage nodes the beacon chain knows, as the shards' registry outboxes
//! report their stakes (`specs/consensus.md` §4.6).

use super::{BeaconState, STORAGE_NODES_MAX, VALIDATORS_MAX};
use crate::address::Address;
use crate::amount::Amount;
use crate::crypto::bls;
use crate::pol::{self, Signals};
use crate::registry::RegistryEvent;

/// A storage node in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageNodeRecord {
    pub id: Address,
    pub stake: Amount,
    /// Periods it missed (one per shard and period with a missed slot) since the newest epoch began.
    pub faults: u32,
    /// Those it missed in the epoch before.
    pub faults_before: u32,
}

impl StorageNodeRecord {
    /// A newly registered node: no faults.
    pub fn new(id: Address, stake: Amount) -> Self {
        Self {
            id,
            stake,
            faults: 0,
            faults_before: 0,
        }
    }

    /// Its standing for placement (`pol::storage_reputation_ppm` of its faults this epoch and the one
    /// before).
    pub fn reputation_ppm(&self) -> u64 {
        pol::storage_reputation_ppm(self.faults.saturating_add(self.faults_before))
    }
}

/// A validator in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorRecord {
    pub id: Address,
    pub stake: Amount,
    pub key: bls::PublicKey,
    /// The reputation the newest epoch's weight is computed from (earned in the epoch before; 0 at genesis).
    pub reputation_ppm: u64,
    /// What the chain has recorded about it since the newest epoch began.
    pub signals: Signals,
}

impl ValidatorRecord {
    pub fn weight(&self) -> u128 {
        pol::weight(self.stake, self.reputation_ppm)
    }
}

impl BeaconState {
    pub fn validator(&self, id: &Address) -> Option<&ValidatorRecord> {
        self.validators
            .binary_search_by_key(id, |v| v.id)
            .ok()
            .map(|i| &self.validators[i])
    }

    pub fn storage_node(&self, id: &Address) -> Option<&StorageNodeRecord> {
        self.storage_nodes
            .binary_search_by_key(id, |n| n.id)
            .ok()
            .map(|i| &self.storage_nodes[i])
    }

    /// Whether some validator record holds `key`.
    pub fn validator_key_taken(&self, key: &bls::PublicKey) -> bool {
        self.validator_keys.contains(key)
    }

    /// A stake from a shard's registry outbox: the account's stake in that role is now this. A new
    /// validator joins with reputation 0 (its weight is its stake); one whose stake falls to 0 keeps its
    /// record (and signals) but is no longer drawn. A full registry ignores newcomers, and so does the
    /// registry for a newcomer whose key another account's record holds (records are never removed, so a
    /// key once registered stays taken): each key is one validator's, so two accounts cannot sit on two
    /// seats with one key, nor have one's votes counted as the other's.
    pub(super) fn apply_event(&mut self, event: &RegistryEvent) {
        match event {
            RegistryEvent::Validator { id, key, stake } => {
                match self.validators.binary_search_by_key(id, |v| v.id) {
                    Ok(i) => self.validators[i].stake = *stake,
                    Err(_) if self.validator_keys.contains(key) => {}
                    Err(i) if self.validators.len() < VALIDATORS_MAX => {
                        self.validator_keys.insert(*key);
                        self.validators.insert(
                            i,
                            ValidatorRecord {
                                id: *id,
                                stake: *stake,
                                key: *key,
                                reputation_ppm: 0,
                                signals: Signals::default(),
                            },
                        );
                    }
                    Err(_) => {}
                }
            }
            RegistryEvent::StorageNode { id, stake } => {
                match self.storage_nodes.binary_search_by_key(id, |n| n.id) {
                    Ok(i) => self.storage_nodes[i].stake = *stake,
                    Err(i) if self.storage_nodes.len() < STORAGE_NODES_MAX => {
                        self.storage_nodes
                            .insert(i, StorageNodeRecord::new(*id, *stake));
                    }
                    Err(_) => {}
                }
            }
            // A fault counts against the node's placement standing and, where the account is also a
            // validator, against the reputation its next epoch's weight is computed from. A fault of an
            // account the registry does not hold changes nothing.
            RegistryEvent::StorageFault { id } => {
                if let Ok(i) = self.storage_nodes.binary_search_by_key(id, |n| n.id) {
                    let n = &mut self.storage_nodes[i];
                    n.faults = n.faults.saturating_add(1);
                }
                if let Ok(i) = self.validators.binary_search_by_key(id, |v| v.id) {
                    let s = &mut self.validators[i].signals;
                    s.storage_faults = s.storage_faults.saturating_add(1);
                }
            }
        }
    }
}
