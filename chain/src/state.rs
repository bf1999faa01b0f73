//! Account state of one shard, its authenticated root, and the execution of transactions.
//!
//! Every account is a leaf of the shard's [`SparseMerkleTree`] keyed by [`account_key`] (its address hashed
//! under the account namespace, so no address a transfer names can reach a lock, done mark, checkpoint or
//! pool leaf); the value hash is a hash of the account's versioned encoding. Fees are not burnt: they accumulate in the shard's fee pool (a
//! leaf under a reserved key) from which later slices pay proposers and storage nodes. So the total supply
//! (balances + stakes + unbonding + fee pool) is conserved by every transaction, and tests check it.

use crate::address::{Address, ShardId, shard_of};
use crate::amount::Amount;
use crate::atomix::{self, Inbound, InboundError, Lock, LockKind, Totals};
use crate::codec::Writer;
use crate::crypto::{Hash, PublicKey, hash_with};
use crate::registry::{self, Cursor, RegistryEvent};
use crate::smt::{self, SparseMerkleTree};
use crate::store::{Store, StoreError, WriteBatch};
use crate::tx::{Role, SignedTransaction, TxError, TxKind};
pub use crate::types::account::{Account, account_key};
use crate::types::deal::{DealRecord, DealTerms, deal_key};
use crate::types::storage_proof::{self, HolderProof, HolderSlot, ProofTx, StorageProof};
use crate::types::volume::{VolumeVersion, version_key, volume_id};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const KEY_ACCOUNT_PREFIX: &[u8] = b"state/acct/";
const KEY_FEE_POOL: &[u8] = b"state/fee_pool";
/// `state/registry/<count:u64 BE>` -> the `count`-th registry event (from 1) this shard emitted.
const KEY_REGISTRY_PREFIX: &[u8] = b"state/registry/";
/// `state/atomix/<tree key>` -> the value hash of an Atomix lock or done leaf.
const KEY_ATOMIX_PREFIX: &[u8] = b"state/atomix/";
const KEY_ATOMIX_TOTALS: &[u8] = b"state/atomix_totals";
/// `state/deal/<deal id>` -> the deal's record (`types/deal.rs` encoding).
const KEY_DEAL_PREFIX: &[u8] = b"state/deal/";
/// `state/deal_terms/<deal id>` -> the deal's terms, written once when it opens.
const KEY_DEAL_TERMS_PREFIX: &[u8] = b"state/deal_terms/";
/// `state/deal_proofs/<deal id><holder:u8>` -> where that holder's proofs stand ([`Proven`]).
const KEY_PROVEN_PREFIX: &[u8] = b"state/deal_proofs/";
/// `state/period_seed` -> the newest period's end height (u64) and seed.
const KEY_SEED: &[u8] = b"state/period_seed";
/// `state/congested` -> the end height of the period whose proof window is the newest that had a full block,
/// and how many of its blocks were full (u64 BE each).
const KEY_CONGESTED: &[u8] = b"state/congested";
/// `state/volume/<volume id><version:u64 BE>` -> that version ([`VolumeVersion`] encoding), written once.
const KEY_VOLUME_PREFIX: &[u8] = b"state/volume/";

/// The chain rules that execution needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainParams {
    pub chain_id: u32,
    pub shard_count: u16,
    pub fee_min: Amount,
    /// Blocks between an unstake and the moment its amount is spendable again.
    pub unbonding_delay_blocks: u64,
    /// The shard blocks of one storage period: the unit deals are priced, proven and paid in.
    pub storage_period_blocks: u64,
    /// What a missed proof costs its holder, in periods of its pay in that deal: that much of its storage
    /// stake is burned (at most all of it; `specs/economics.md` §5.7).
    pub slash_periods: u64,
    /// The least storage stake that keeps a storage node in the registry placement chooses from.
    pub storage_stake_min: Amount,
    /// The most a repair order's bounty reaches, in periods of the slot's pay: each period the slot's
    /// holder misses while its order is open adds one period's pay (which stays in the escrow, unpaid), up
    /// to this many (`specs/economics.md` §5.8).
    pub repair_bounty_periods: u64,
    /// The periods in a row a slot's holder must miss before its repair order may be taken (a node that is
    /// only restarting keeps its slot; one that lost its data is replaced).
    pub repair_after_misses: u8,
}

impl ChainParams {
    pub fn devnet(shard_count: u16) -> Self {
        Self {
            chain_id: 0x10_5D_E7,
            shard_count,
            fee_min: Amount(1_000),
            // Three devnet epochs (256 heights each): an unstake takes effect at the next draw or the one
            // after, and a seat lasts to the end of its epoch, so the stake stays locked for as long as the
            // validator can still vote with it.
            unbonding_delay_blocks: 3 * 256,
            // Short, so that a test sees several periods pass within a minute.
            storage_period_blocks: 16,
            slash_periods: 4,
            storage_stake_min: Amount(100 * crate::amount::BASE_UNITS_PER_IOST),
            repair_bounty_periods: 2,
            repair_after_misses: 3,
        }
    }
}

/// The outcome of one executed transaction; its hash goes into the block's receipts root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub tx_id: Hash,
    pub fee: Amount,
    /// The sender's nonce after the transaction.
    pub nonce_after: u64,
}

impl Receipt {
    pub fn hash(&self) -> Hash {
        let mut w = Writer::new();
        w.u8(1)
            .fixed(&self.tx_id)
            .u64(self.fee.0)
            .u64(self.nonce_after);
        hash_with("IOS receipt v1", &[&w.finish()])
    }
}

fn registry_key(count: u64) -> Vec<u8> {
    [KEY_REGISTRY_PREFIX, &count.to_be_bytes()].concat()
}

fn fee_pool_key() -> Hash {
    hash_with("IOS fee pool key v1", &[])
}

/// A storage node key's slots on a shard: (deal, holder slot) -> (its shards, its pay a period).
type KeySlots = BTreeMap<(Hash, u8), (u32, u64)>;

/// The state of one shard.
#[derive(Debug, Clone)]
pub struct State {
    params: ChainParams,
    shard: ShardId,
    accounts: BTreeMap<Address, Account>,
    fee_pool: Amount,
    tree: SparseMerkleTree,
    dirty: BTreeSet<Address>,
    fee_pool_dirty: bool,
    /// The registry outbox: events emitted so far and the chain head after them.
    outbox: Cursor,
    /// Events emitted since the last [`State::persist_into`], with their count.
    new_events: Vec<(u64, RegistryEvent)>,
    /// Atomix value locked out and committed in since genesis (a leaf once either is nonzero).
    totals: Totals,
    totals_dirty: bool,
    /// Atomix lock and done leaves added since the last [`State::persist_into`].
    new_leaves: Vec<(Hash, Hash)>,
    /// Storage deals opened on this shard (ended ones too: their records stay provable), by id.
    deals: BTreeMap<Hash, DealRecord>,
    /// (owner, id) of every deal: an owner's deals are a range of it.
    deals_by_owner: BTreeSet<(Address, Hash)>,
    /// Deals changed since the last [`State::persist_into`].
    dirty_deals: BTreeSet<Hash>,
    /// Terms of deals opened since the last [`State::persist_into`], encoded.
    new_terms: Vec<(Hash, Vec<u8>)>,
    /// The terms of every deal, by id (proofs are checked against them).
    terms: BTreeMap<Hash, Arc<DealTerms>>,
    /// Per deal and holder, where its proofs stand.
    proven: BTreeMap<(Hash, u8), Proven>,
    dirty_proven: BTreeSet<(Hash, u8)>,
    /// Per storage node key, the (deal, holder slot)s it holds now (the terms' holder, or the taker of the
    /// slot's repair order): derived from the terms and proof records, the list a holder proof answers for.
    /// With each slot, its shards and its pay a period (`storage_proof::slot_weight`, fixed by the terms).
    slots_of: BTreeMap<PublicKey, KeySlots>,
    /// The newest period's end height and seed: the hash of the block at that height.
    seed: (u64, Hash),
    seed_dirty: bool,
    /// Every published volume version, by (volume id, version).
    /// (Shared: the state is cloned for every block it executes, and versions never change.)
    volumes: BTreeMap<(Hash, u64), Arc<VolumeVersion>>,
    /// Versions published since the last [`State::persist_into`].
    new_volumes: Vec<(Hash, u64)>,
    /// The slash locks the newest block's [`State::begin_block`] made for holders of other shards.
    slash_locks: Vec<Lock>,
    /// The payout locks the newest block's proofs made for holders of other shards.
    payout_locks: Vec<Lock>,
    /// The end height of the newest period whose proof window had a block with a full proof section (0:
    /// none), and how many of the window's blocks were full: when all were, the window's misses are not
    /// slashed (`specs/economics.md` §5.7).
    congested: (u64, u64),
    congested_dirty: bool,
    /// The proofs the block being executed carries so far, their bytes, and whether it counted as full.
    block_proofs: (usize, usize, bool),
}

/// Where one holder slot's proofs of one deal stand, and who holds it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Proven {
    /// The first period it may still prove (every earlier one was proven or its window closed).
    pub next: u64,
    /// Periods it proved and was paid for.
    pub passed: u64,
    /// Periods whose window closed without its proof.
    pub missed: u64,
    /// The storage stake its misses ordered burned (what its shard could take may be less).
    pub slashed: Amount,
    /// The periods in a row the slot's holder missed up to its newest settled one (0: it proved that one;
    /// at most 63). Its repair order may be taken once this reaches `repair_after_misses`
    /// (`specs/economics.md` §5.8).
    pub streak: u8,
    /// With the order open, the bounty a taker's first proof is paid on top of the period's pay; once a
    /// taker claimed the slot, the bounty that claim was paid.
    pub bounty: Amount,
    /// The storage node that took the slot over through a repair order, if one did: it holds the slot's
    /// shards now, is paid for its proofs and slashed for its misses instead of the deal's holder.
    pub taker: Option<PublicKey>,
}

impl Proven {
    /// `next` and `passed`, then `missed` and `slashed` once it missed a period, then a flags byte (bit 0:
    /// missing, bit 1: taken, bits 2..8: the streak), the bounty and the taker once a miss opened an order
    /// (a record that never missed keeps the 16 bytes it always had).
    fn encode(&self) -> Vec<u8> {
        let mut bytes = [self.next.to_be_bytes(), self.passed.to_be_bytes()].concat();
        let repaired = self.streak != 0 || self.bounty.0 != 0 || self.taker.is_some();
        if self.missed != 0 || self.slashed.0 != 0 || repaired {
            bytes.extend_from_slice(&self.missed.to_be_bytes());
            bytes.extend_from_slice(&self.slashed.0.to_be_bytes());
        }
        if repaired {
            let streak = self.streak.min(STREAK_MAX);
            bytes.push(
                u8::from(streak != 0) | (u8::from(self.taker.is_some()) << 1) | (streak << 2),
            );
            bytes.extend_from_slice(&self.bounty.0.to_be_bytes());
            if let Some(key) = &self.taker {
                bytes.extend_from_slice(&key.0);
            }
        }
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_be_bytes(
                bytes.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        let mut proven = Self {
            next: word(0)?,
            passed: word(1)?,
            ..Self::default()
        };
        if bytes.len() == 16 {
            return Some(proven);
        }
        proven.missed = word(2)?;
        proven.slashed = Amount(word(3)?);
        if bytes.len() == 32 {
            return Some(proven);
        }
        let flags = *bytes.get(32)?;
        proven.streak = flags >> 2;
        if (flags & 1 != 0) != (proven.streak != 0) {
            return None;
        }
        proven.bounty = Amount(u64::from_be_bytes(bytes.get(33..41)?.try_into().ok()?));
        match (flags & 2 != 0, bytes.len()) {
            (false, 41) => {}
            (true, 73) => proven.taker = Some(PublicKey(bytes[41..73].try_into().ok()?)),
            _ => return None,
        }
        Some(proven)
    }

    fn value_hash(&self) -> Hash {
        hash_with("IOS deal proofs v1", &[&self.encode()])
    }
}

/// The longest streak of misses a proof record counts.
const STREAK_MAX: u8 = 63;

/// The key that holds slot `holder` of `terms` given where the slot stands: its taker, else the terms'
/// holder.
fn slot_key(terms: &DealTerms, holder: u8, proven: &Proven) -> PublicKey {
    proven
        .taker
        .unwrap_or_else(|| terms.holders[usize::from(holder)].key)
}

/// The state-tree key of a holder's proof record in a deal.
pub fn proven_key(deal: &Hash, holder: u8) -> Hash {
    hash_with("IOS deal proofs key v1", &[deal, &[holder]])
}

fn congested_key() -> Hash {
    hash_with("IOS congested window key v1", &[])
}

fn congested_value((end, blocks): (u64, u64)) -> Hash {
    hash_with(
        "IOS congested window v1",
        &[&end.to_be_bytes(), &blocks.to_be_bytes()],
    )
}

fn seed_key() -> Hash {
    hash_with("IOS period seed key v1", &[])
}

fn seed_value(end: u64, seed: &Hash) -> Hash {
    hash_with("IOS period seed v1", &[&end.to_be_bytes(), seed])
}

/// The id of the payout a passed proof releases: the Atomix id of its lock when the holder lives on
/// another shard.
pub fn payout_id(deal: &Hash, holder: u8, period: u64) -> Hash {
    hash_with(
        "IOS storage payout v1",
        &[deal, &[holder], &period.to_be_bytes()],
    )
}

/// The id of the slash a missed proof orders: the Atomix id of its lock when the holder lives on another
/// shard.
pub fn slash_id(deal: &Hash, holder: u8, period: u64) -> Hash {
    hash_with(
        "IOS storage slash v1",
        &[deal, &[holder], &period.to_be_bytes()],
    )
}

/// Why a storage proof is refused by the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofRefused {
    #[error("no such deal on this shard")]
    UnknownDeal,
    #[error(
        "period {period} of this deal cannot be proven at height {height}{}",
        match .provable { Some(p) => format!(" (period {p} can)"), None => String::new() }
    )]
    NotProvable {
        period: u64,
        height: u64,
        provable: Option<u64>,
    },
    #[error("holder {holder} already proved period {period}")]
    AlreadyProven { holder: u8, period: u64 },
    #[error("{0}")]
    Invalid(#[from] crate::types::storage_proof::ProofError),
    #[error("the payout overflows or exceeds the escrow")]
    Overflow,
    #[error("holder slot {holder} of this deal has no open repair order to take")]
    NoRepairOrder { holder: u8 },
    #[error("the taker already holds a slot of this deal")]
    TakerHoldsShards,
    #[error("the taker's signature on its repair claim does not verify")]
    BadTakerSignature,
    #[error(
        "a slot proof only claims a repair order (it names a taker); a holder proves its slots with one holder proof"
    )]
    NotAClaim,
    #[error(
        "the period ending at height {end} cannot be proven at height {height}{}",
        match .provable { Some(e) => format!(" (the one ending at {e} can)"), None => String::new() }
    )]
    HolderNotProvable {
        end: u64,
        height: u64,
        provable: Option<u64>,
    },
    #[error(
        "the key holds no slot on this shard whose period ending at height {end} may be proven"
    )]
    NoSlots { end: u64 },
    #[error("every slot of the key already proved the period ending at height {end}")]
    AllProven { end: u64 },
}

/// The id of the payout a holder proof on `shard` releases to its key for the period ending at `end`: the
/// Atomix id of its one lock (the sum over its slots) when the key's account lives on another shard. Period
/// ends are on one grid for every shard, so the shard is part of the id: a key paid by two shards in one
/// period gets two locks its home shard commits both of.
pub fn holder_payout_id(key: &PublicKey, shard: ShardId, end: u64) -> Hash {
    hash_with(
        "IOS holder payout v1",
        &[&key.0, &shard.0.to_be_bytes(), &end.to_be_bytes()],
    )
}

/// What the next block asks of a storage node over its slots on a shard (the chain API's challenge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderDue {
    /// The end height of the period that may be proven, and its seed.
    pub end: u64,
    pub seed: Hash,
    /// The key's slots that ran that period: (deal, holder slot, the deal's period), in the chain's order.
    pub slots: Vec<(Hash, u8, u64)>,
    /// How many of them have not proven it yet.
    pub unproven: usize,
    /// The drawn (deal, slot, position, piece)s the proof must answer.
    pub drawn: storage_proof::HolderChallenge,
}

impl State {
    pub fn new(params: ChainParams, shard: ShardId) -> Self {
        let mut state = Self {
            params,
            shard,
            accounts: BTreeMap::new(),
            fee_pool: Amount::ZERO,
            tree: SparseMerkleTree::new(),
            dirty: BTreeSet::new(),
            fee_pool_dirty: true,
            outbox: Cursor::default(),
            new_events: Vec::new(),
            totals: Totals::default(),
            totals_dirty: false,
            new_leaves: Vec::new(),
            deals: BTreeMap::new(),
            deals_by_owner: BTreeSet::new(),
            dirty_deals: BTreeSet::new(),
            new_terms: Vec::new(),
            terms: BTreeMap::new(),
            proven: BTreeMap::new(),
            dirty_proven: BTreeSet::new(),
            slots_of: BTreeMap::new(),
            seed: (0, [0; 32]),
            seed_dirty: false,
            volumes: BTreeMap::new(),
            new_volumes: Vec::new(),
            slash_locks: Vec::new(),
            payout_locks: Vec::new(),
            congested: (0, 0),
            congested_dirty: false,
            block_proofs: (0, 0, false),
        };
        state.tree.insert(
            fee_pool_key(),
            hash_with("IOS fee pool v1", &[&0u64.to_be_bytes()]),
        );
        state
    }

    pub fn params(&self) -> &ChainParams {
        &self.params
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn account(&self, address: &Address) -> Option<&Account> {
        self.accounts.get(address)
    }

    pub fn accounts(&self) -> impl Iterator<Item = (&Address, &Account)> {
        self.accounts.iter()
    }

    pub fn fee_pool(&self) -> Amount {
        self.fee_pool
    }

    /// Sets an account directly; for genesis only.
    pub fn set_account(&mut self, address: Address, account: Account) {
        assert_eq!(
            shard_of(&address, self.params.shard_count),
            self.shard,
            "account placed on its own shard"
        );
        self.tree
            .insert(account_key(&address), account.value_hash());
        self.accounts.insert(address, account);
        self.dirty.insert(address);
    }

    fn set_fee_pool(&mut self, amount: Amount) {
        self.fee_pool = amount;
        self.tree.insert(
            fee_pool_key(),
            hash_with("IOS fee pool v1", &[&amount.0.to_be_bytes()]),
        );
        self.fee_pool_dirty = true;
    }

    pub fn root(&mut self) -> Hash {
        self.tree.root()
    }

    /// Where this shard's registry outbox stands.
    pub fn outbox(&self) -> Cursor {
        self.outbox
    }

    /// A proof of the checkpoint after the `count`-th registry event against [`State::root`].
    pub fn prove_checkpoint(&self, count: u64) -> smt::Proof {
        self.tree.prove(&registry::checkpoint_key(count))
    }

    fn emit(&mut self, event: RegistryEvent) {
        self.outbox.advance(&event);
        self.tree.insert(
            registry::checkpoint_key(self.outbox.count),
            registry::checkpoint_value(&self.outbox.head),
        );
        self.new_events.push((self.outbox.count, event));
    }

    /// A proof of an account's presence or absence against [`State::root`].
    pub fn prove(&self, address: &Address) -> smt::Proof {
        self.tree.prove(&account_key(address))
    }

    /// Balances, stakes, unbonding amounts, the fee pool and the escrow of deals, summed.
    pub fn total_supply(&self) -> u128 {
        self.accounts.values().map(Account::holdings).sum::<u128>()
            + u128::from(self.fee_pool.0)
            + self.escrow_total()
    }

    /// The escrow every deal of this shard still holds.
    pub fn escrow_total(&self) -> u128 {
        self.deals
            .values()
            .map(|d| u128::from(d.escrow_left.0))
            .sum()
    }

    /// A deal opened on this shard.
    pub fn deal(&self, id: &Hash) -> Option<&DealRecord> {
        self.deals.get(id)
    }

    /// Every deal opened on this shard, by id.
    pub fn deals(&self) -> impl Iterator<Item = (&Hash, &DealRecord)> {
        self.deals.iter()
    }

    /// A proof of a deal's record (or its absence) against [`State::root`].
    pub fn prove_deal(&self, id: &Hash) -> smt::Proof {
        self.tree.prove(&deal_key(id))
    }

    /// The ids of the deals `owner` opened on this shard, in id order, after `after` if given.
    pub fn deals_of(
        &self,
        owner: &Address,
        after: Option<Hash>,
    ) -> impl Iterator<Item = &Hash> + '_ {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let from = match after {
            Some(a) => Excluded((*owner, a)),
            None => Included((*owner, [0; 32])),
        };
        let owner = *owner;
        self.deals_by_owner
            .range((from, Unbounded))
            .take_while(move |(o, _)| *o == owner)
            .map(|(_, id)| id)
    }

    /// The newest version of volume `id` (0: it was never published).
    pub fn volume_head(&self, id: &Hash) -> u64 {
        self.volumes
            .range((*id, 0)..=(*id, u64::MAX))
            .next_back()
            .map_or(0, |((_, n), _)| *n)
    }

    /// The versions of volume `id` after version `after`, oldest first.
    pub fn volume_versions(
        &self,
        id: &Hash,
        after: u64,
    ) -> impl Iterator<Item = (u64, &VolumeVersion)> + '_ {
        self.volumes
            .range((*id, after.saturating_add(1))..=(*id, u64::MAX))
            .filter(move |_| after < u64::MAX)
            .map(|((_, n), v)| (*n, &**v))
    }

    /// A proof of a volume version (or its absence) against [`State::root`].
    pub fn prove_volume_version(&self, id: &Hash, version: u64) -> smt::Proof {
        self.tree.prove(&version_key(id, version))
    }

    /// Version `version` of volume `id`, if the chain has it.
    pub fn volume_version(&self, id: &Hash, version: u64) -> Option<&VolumeVersion> {
        self.volumes.get(&(*id, version)).map(|v| &**v)
    }

    fn add_volume_version(&mut self, id: Hash, version: u64, v: VolumeVersion) {
        self.tree
            .insert(version_key(&id, version), v.value_hash(&id, version));
        self.volumes.insert((id, version), Arc::new(v));
    }

    fn set_deal(&mut self, id: Hash, record: DealRecord) {
        self.deals_by_owner.insert((record.owner, id));
        self.tree.insert(deal_key(&id), record.value_hash());
        self.deals.insert(id, record);
        self.dirty_deals.insert(id);
    }

    /// The terms of a deal, from what [`State::persist_into`] wrote.
    pub fn deal_terms(store: &dyn Store, id: &Hash) -> Result<Option<DealTerms>, StoreError> {
        let key = [KEY_DEAL_TERMS_PREFIX, id].concat();
        store
            .get(&key)?
            .map(|bytes| {
                DealTerms::decode(&bytes).map_err(|e| StoreError::Corrupt {
                    key: format!("{key:?}"),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// The terms of a deal opened on this shard.
    pub fn terms(&self, id: &Hash) -> Option<&DealTerms> {
        self.terms.get(id).map(|t| t.as_ref())
    }

    /// Where holder `holder`'s proofs of deal `id` stand.
    pub fn proven(&self, id: &Hash, holder: u8) -> Proven {
        self.proven.get(&(*id, holder)).copied().unwrap_or_default()
    }

    /// The newest period's end height and seed (the hash of the block at that height).
    pub fn period_seed(&self) -> (u64, Hash) {
        self.seed
    }

    /// The seed a block at `height` on a parent of hash `parent` proves against: the parent's hash when the
    /// parent ends a period of the grid, else the newest seed; with the height its period ended at.
    pub fn seed_for(&self, height: u64, parent: &Hash) -> (u64, Hash) {
        let period = self.params.storage_period_blocks.max(1);
        let end = height.saturating_sub(1);
        if end.is_multiple_of(period) {
            (end, *parent)
        } else {
            self.seed
        }
    }

    /// Starts a block at `height` on a parent of hash `parent`: when the parent ends a period of the
    /// grid, its hash becomes the newest seed. Called before a block's transactions.
    pub fn begin_block(&mut self, height: u64, parent: &Hash) {
        let seed = self.seed_for(height, parent);
        if seed != self.seed {
            self.seed = seed;
            self.tree.insert(seed_key(), seed_value(seed.0, &seed.1));
            self.seed_dirty = true;
        }
        self.slash_locks.clear();
        self.payout_locks.clear();
        self.block_proofs = (0, 0, false);
        self.slash_misses(height);
    }

    /// The first block after a proof window closes records every holder whose proof of that window's
    /// period never came: its `missed` count grows, its `next` moves past the period (the pay stays in
    /// escrow for the owner), and `slash_periods` × its pay per period of the deal is slashed from its
    /// storage stake, here if it lives on this shard, else through a slash lock for its shard
    /// (`specs/economics.md` §5.7). Windows close on the grid: the window of the period ending at `e` is
    /// `e + 1 ..= e + P`, so at height `h` with `h - 1` on the grid, the period that ended at `h - 1 - P`
    /// is settled. One pass over the deals per period.
    fn slash_misses(&mut self, height: u64) {
        let period = self.params.storage_period_blocks.max(1);
        let Some(closed) = height.checked_sub(1) else {
            return;
        };
        if closed % period != 0 || closed < 2 * period {
            return;
        }
        let ended = closed - period;
        // A window in which every block's proof section was full may have kept honest proofs out: its
        // misses are recorded and unpaid, but neither slashed nor opened for repair.
        let congested = self.congested.0 == ended && self.congested.1 >= period;
        let mut misses = Vec::new();
        for (id, record) in &self.deals {
            if record.period_blocks != period || ended < record.start_height + period {
                continue;
            }
            let p = (ended - record.start_height) / period - 1;
            if p >= record.periods {
                continue;
            }
            let Some(terms) = self.terms.get(id) else {
                continue;
            };
            let Ok(pay) = terms.per_period() else {
                continue;
            };
            for h in 0..terms.holders.len() {
                let h = u8::try_from(h).expect("at most 32 holders");
                let proven = self.proven(id, h);
                if proven.next <= p {
                    let holder = Address::of(&slot_key(terms, h, &proven));
                    let pay = pay[usize::from(h)];
                    misses.push((*id, h, holder, record.owner, p, pay, record.periods));
                }
            }
        }
        // A holder missing in many deals is burned once, for the sum, and the beacon hears one new stake and
        // one fault: a missed period, whatever the number of slots.
        let mut burns: BTreeMap<Address, u64> = BTreeMap::new();
        let mut faulty: BTreeSet<Address> = BTreeSet::new();
        for (id, h, holder, owner, p, pay, last) in misses {
            let penalty = Amount(pay.0.saturating_mul(self.params.slash_periods));
            let mut proven = self.proven(&id, h);
            proven.next = p + 1;
            proven.missed += 1;
            if congested {
                self.tree.insert(proven_key(&id, h), proven.value_hash());
                self.proven.insert((id, h), proven);
                self.dirty_proven.insert((id, h));
                continue;
            }
            proven.slashed = Amount(proven.slashed.0.saturating_add(penalty.0));
            // The slot's repair order opens (or stays open): the pay the holder forfeits is its bounty,
            // up to `repair_bounty_periods` periods of it.
            // (None for the deal's last period: no period is left to take it over for.)
            let cap = pay.0.saturating_mul(self.params.repair_bounty_periods);
            let before = if proven.streak != 0 {
                proven.bounty.0
            } else {
                0
            };
            let open = p + 1 < last;
            proven.bounty = Amount(if open {
                before.saturating_add(pay.0).min(cap)
            } else {
                0
            });
            proven.streak = if open {
                proven.streak.saturating_add(1).min(STREAK_MAX)
            } else {
                0
            };
            self.tree.insert(proven_key(&id, h), proven.value_hash());
            self.proven.insert((id, h), proven);
            self.dirty_proven.insert((id, h));
            faulty.insert(holder);
            if penalty.0 == 0 {
                continue;
            }
            if shard_of(&holder, self.params.shard_count) == self.shard {
                let sum = burns.entry(holder).or_default();
                *sum = sum.saturating_add(penalty.0);
            } else {
                let lock = Lock {
                    tx_id: slash_id(&id, h, p),
                    from: owner,
                    to: holder,
                    amount: penalty,
                    kind: LockKind::Slash,
                };
                self.set_leaf(Lock::key(&lock.tx_id), lock.value_hash());
                self.slash_locks.push(lock);
            }
        }
        for (holder, amount) in burns {
            self.burn_storage_stake(holder, Amount(amount));
        }
        for id in faulty {
            self.emit(RegistryEvent::StorageFault { id });
        }
    }

    /// Burns up to `amount` of an account's storage stake, then of what it has unbonding (a holder that
    /// unstakes once it knows it cannot prove still pays from the unbonding amount until it is released;
    /// all of them when it has less; nothing when it has none), and tells the beacon chain its new stake.
    /// Returns what was burned.
    fn burn_storage_stake(&mut self, address: Address, amount: Amount) -> Amount {
        let Some(mut account) = self.accounts.get(&address).cloned() else {
            return Amount::ZERO;
        };
        let from_stake = amount.0.min(account.storage_stake.0);
        let from_unbonding = (amount.0 - from_stake).min(account.unbonding.0);
        let taken = Amount(from_stake + from_unbonding);
        if taken.0 == 0 {
            return taken;
        }
        account.storage_stake = Amount(account.storage_stake.0 - from_stake);
        account.unbonding = Amount(account.unbonding.0 - from_unbonding);
        let registered = account.storage_registered;
        let stake = account.storage_stake;
        self.set_account(address, account);
        let mut totals = self.totals;
        totals.burned += u128::from(taken.0);
        self.set_totals(totals);
        if registered {
            self.emit(RegistryEvent::StorageNode { id: address, stake });
        }
        taken
    }

    /// The slash locks the newest block made for holders of other shards (see [`State::begin_block`]).
    pub fn slash_locks(&self) -> &[Lock] {
        &self.slash_locks
    }

    /// The period of a deal its holders may prove in a block at `height` whose seed ends at `seed_end`: the
    /// period that ended there, if the deal ran it. Its window is the period after it.
    fn provable_period(&self, record: &DealRecord, height: u64, seed_end: u64) -> Option<u64> {
        let period = record.period_blocks.max(1);
        if period != self.params.storage_period_blocks.max(1)
            || seed_end != height.saturating_sub(1) / period * period
            || seed_end < record.start_height + period
        {
            return None;
        }
        let p = (seed_end - record.start_height) / period - 1;
        (p < record.periods).then_some(p)
    }

    /// The period of deal `id` its holders may prove in the block after the newest one, on a parent of
    /// hash `parent`.
    pub fn provable_next(&self, id: &Hash, height: u64, parent: &Hash) -> Option<u64> {
        let record = self.deals.get(id)?;
        self.provable_period(record, height, self.seed_for(height, parent).0)
    }

    /// Checks a storage proof for a block at `height` (whose [`State::begin_block`] ran) and returns what it
    /// pays the holder.
    pub fn check_proof(&self, proof: &StorageProof, height: u64) -> Result<Amount, ProofRefused> {
        self.check_proof_with(proof, height, self.seed, true)
    }

    /// [`State::check_proof`] for the block after the newest one, on a parent of hash `parent`, before its
    /// [`State::begin_block`]; with `verify` false, only whether its deal, holder and period could still be
    /// proven there.
    pub fn check_proof_next(
        &self,
        proof: &StorageProof,
        height: u64,
        parent: &Hash,
        verify: bool,
    ) -> Result<Amount, ProofRefused> {
        self.check_proof_with(proof, height, self.seed_for(height, parent), verify)
    }

    fn check_proof_with(
        &self,
        proof: &StorageProof,
        height: u64,
        (seed_end, seed): (u64, Hash),
        verify: bool,
    ) -> Result<Amount, ProofRefused> {
        let record = self
            .deals
            .get(&proof.deal)
            .ok_or(ProofRefused::UnknownDeal)?;
        let terms = self
            .terms
            .get(&proof.deal)
            .ok_or(ProofRefused::UnknownDeal)?;
        let provable = self.provable_period(record, height, seed_end);
        if provable != Some(proof.period) {
            return Err(ProofRefused::NotProvable {
                period: proof.period,
                height,
                provable,
            });
        }
        if self.proven(&proof.deal, proof.holder).next > proof.period {
            return Err(ProofRefused::AlreadyProven {
                holder: proof.holder,
                period: proof.period,
            });
        }
        let proven = self.proven(&proof.deal, proof.holder);
        // A holder that could prove a slot alone could choose, once the window's draws are known, between its
        // holder proof (when the draw misses what it dropped) and slot proofs of the rest: so slot proofs
        // only claim repair orders.
        let Some(taker) = &proof.taker else {
            return Err(ProofRefused::NotAClaim);
        };
        if !self.order_open(&proven) {
            return Err(ProofRefused::NoRepairOrder {
                holder: proof.holder,
            });
        }
        // A taker must not hold another shard of the deal (two shards of a segment on one node), nor
        // be the slot's own holder reclaiming its order.
        let holds = (0..terms.holders.len()).any(|h| {
            let h = u8::try_from(h).expect("at most 32 holders");
            slot_key(terms, h, &self.proven(&proof.deal, h)) == taker.key
        });
        if holds {
            return Err(ProofRefused::TakerHoldsShards);
        }
        if verify {
            taker
                .verify(self.params.chain_id, proof)
                .map_err(|_| ProofRefused::BadTakerSignature)?;
        }
        if verify {
            proof.verify(terms, &seed)?;
        }
        let pay = terms
            .per_period()
            .ok()
            .and_then(|p| p.get(usize::from(proof.holder)).copied())
            .ok_or(ProofRefused::Overflow)?;
        let pay = pay
            .checked_add(proven.bounty)
            .ok_or(ProofRefused::Overflow)?;
        if pay > record.escrow_left {
            return Err(ProofRefused::Overflow);
        }
        Ok(pay)
    }

    /// Applies a storage proof in a block at `height`: the holder is paid the period's pay from the deal's
    /// escrow, on this shard or through an Atomix lock to its own. On error nothing changes.
    pub fn apply_proof(&mut self, proof: &StorageProof, height: u64) -> Result<(), ProofRefused> {
        let pay = self.check_proof(proof, height)?;
        let mut record = self.deals[&proof.deal].clone();
        record.escrow_left = Amount(record.escrow_left.0 - pay.0);
        record.paid = record.paid.checked_add(pay).ok_or(ProofRefused::Overflow)?;
        let before = self.proven(&proof.deal, proof.holder);
        let mut proven = Proven {
            next: proof.period + 1,
            passed: before.passed + 1,
            streak: 0,
            ..before
        };
        // The holder's credit is computed before anything changes, so that an overflow changes nothing.
        let key_now = match &proof.taker {
            Some(taker) => taker.key,
            None => slot_key(&self.terms[&proof.deal], proof.holder, &before),
        };
        let mut credited = self
            .accounts
            .get(&Address::of(&key_now))
            .cloned()
            .unwrap_or_default();
        credited.balance = credited
            .balance
            .checked_add(pay)
            .ok_or(ProofRefused::Overflow)?;
        match &proof.taker {
            // The taker holds the slot from now on, and the slot's record is its own from this proof on
            // (what the holder before it missed and was slashed stays burned); it keeps the bounty its
            // claim was paid.
            Some(taker) => {
                let before_key = slot_key(&self.terms[&proof.deal], proof.holder, &before);
                let weight = self
                    .slots_of
                    .get_mut(&before_key)
                    .and_then(|slots| slots.remove(&(proof.deal, proof.holder)))
                    .unwrap_or_else(|| {
                        storage_proof::slot_weight(&self.terms[&proof.deal], proof.holder)
                    });
                self.slots_of
                    .entry(taker.key)
                    .or_default()
                    .insert((proof.deal, proof.holder), weight);
                proven.taker = Some(taker.key);
                proven.passed = 1;
                proven.missed = 0;
                proven.slashed = Amount::ZERO;
            }
            // The holder proved again: its order closes and the bounty stays in the escrow.
            None if before.streak != 0 => proven.bounty = Amount::ZERO,
            None => {}
        }
        let holder = Address::of(&slot_key(&self.terms[&proof.deal], proof.holder, &proven));
        if shard_of(&holder, self.params.shard_count) == self.shard {
            self.set_account(holder, credited);
        } else {
            let lock = Lock {
                tx_id: payout_id(&proof.deal, proof.holder, proof.period),
                from: record.owner,
                to: holder,
                amount: pay,
                kind: LockKind::Transfer,
            };
            let mut totals = self.totals;
            totals.locked_out += u128::from(pay.0);
            self.set_leaf(Lock::key(&lock.tx_id), lock.value_hash());
            self.set_totals(totals);
            self.payout_locks.push(lock);
        }
        self.tree
            .insert(proven_key(&proof.deal, proof.holder), proven.value_hash());
        self.proven.insert((proof.deal, proof.holder), proven);
        self.dirty_proven.insert((proof.deal, proof.holder));
        self.set_deal(proof.deal, record);
        self.count_block_proof(proof.encode().len(), height);
        Ok(())
    }

    /// The slots `key` holds on this shard whose deal ran the period that ended at `seed_end` and may prove
    /// it in a block at `height`: (deal, holder slot, the deal's period), in the chain's order (by deal id).
    /// Whether they proved it already does not matter: the list, and so the challenge, is fixed for the
    /// window, whatever the key proves slot by slot. A slot the key claimed through a repair order in this
    /// window (its claim proved the period) joins the list in the next window, so claiming cannot redraw
    /// the key's challenge.
    pub fn holder_slots(
        &self,
        key: &PublicKey,
        height: u64,
        seed_end: u64,
    ) -> Vec<(Hash, u8, u64)> {
        let Some(slots) = self.slots_of.get(key) else {
            return Vec::new();
        };
        slots
            .iter()
            .filter_map(|((id, h), _)| {
                let p = self.provable_period(self.deals.get(id)?, height, seed_end)?;
                let proven = self.proven(id, *h);
                // A claim leaves exactly this record: the taker's first pass, no miss, the period proven.
                let claimed_now = proven.taker == Some(*key)
                    && proven.passed == 1
                    && proven.missed == 0
                    && proven.next == p + 1;
                (!claimed_now).then_some((*id, *h, p))
            })
            .collect()
    }

    /// What a holder proof of `key` in the block after the newest one (on a parent of hash `parent`) must
    /// answer; `None` when the key has no slot to prove there.
    pub fn holder_due(&self, key: &PublicKey, height: u64, parent: &Hash) -> Option<HolderDue> {
        let (end, seed) = self.seed_for(height, parent);
        let slots = self.holder_slots(key, height, end);
        if slots.is_empty() {
            return None;
        }
        let unproven = slots
            .iter()
            .filter(|(id, h, p)| self.proven(id, *h).next <= *p)
            .count();
        let with_terms = self.with_terms(key, &slots);
        let drawn = storage_proof::holder_challenge(&with_terms, &seed, key, end);
        Some(HolderDue {
            end,
            seed,
            slots,
            unproven,
            drawn,
        })
    }

    /// `key`'s `slots` with their terms and the shards and pay kept with them.
    fn with_terms<'a>(&'a self, key: &PublicKey, slots: &[(Hash, u8, u64)]) -> Vec<HolderSlot<'a>> {
        let weights = self.slots_of.get(key);
        slots
            .iter()
            .filter_map(|(id, h, _)| {
                let (shards, pay) = *weights?.get(&(*id, *h))?;
                Some(HolderSlot {
                    deal: *id,
                    holder: *h,
                    terms: self.terms.get(id)?,
                    shards,
                    pay,
                })
            })
            .collect()
    }

    /// Checks a holder proof for a block at `height` whose seed ends at `seed_end`; returns the slots it
    /// pays: (deal, slot, period, pay).
    fn check_holder_with(
        &self,
        proof: &HolderProof,
        height: u64,
        (seed_end, seed): (u64, Hash),
        verify: bool,
    ) -> Result<Vec<(Hash, u8, u64, Amount)>, ProofRefused> {
        if proof.end != seed_end || seed_end == 0 {
            return Err(ProofRefused::HolderNotProvable {
                end: proof.end,
                height,
                provable: (seed_end != 0).then_some(seed_end),
            });
        }
        let slots = self.holder_slots(&proof.key, height, seed_end);
        if slots.is_empty() {
            return Err(ProofRefused::NoSlots { end: proof.end });
        }
        let mut pays = Vec::new();
        let mut per_deal: BTreeMap<Hash, u64> = BTreeMap::new();
        let weights = self.slots_of.get(&proof.key);
        for (id, h, p) in &slots {
            if self.proven(id, *h).next > *p {
                continue;
            }
            // The slot's pay, kept with it (the terms' `per_period`: prices are never 0, so it is at least 1).
            let pay = weights
                .and_then(|w| w.get(&(*id, *h)))
                .map(|(_, pay)| Amount(*pay))
                .ok_or(ProofRefused::Overflow)?;
            let due = per_deal.entry(*id).or_default();
            *due = due.checked_add(pay.0).ok_or(ProofRefused::Overflow)?;
            if *due > self.deals[id].escrow_left.0 {
                return Err(ProofRefused::Overflow);
            }
            pays.push((*id, *h, *p, pay));
        }
        if pays.is_empty() || self.is_locked(&holder_payout_id(&proof.key, self.shard, proof.end)) {
            return Err(ProofRefused::AllProven { end: proof.end });
        }
        if verify {
            proof.verify(&self.with_terms(&proof.key, &slots), &seed)?;
        }
        Ok(pays)
    }

    /// Applies a holder proof in a block at `height`: every slot of its key that has not proven the period
    /// is paid that period's pay from its deal's escrow, the sum credited on this shard or sent through one
    /// Atomix lock to the key's own. On error nothing changes.
    fn apply_holder_proof(&mut self, proof: &HolderProof, height: u64) -> Result<(), ProofRefused> {
        let pays = self.check_holder_with(proof, height, self.seed, true)?;
        let total = pays
            .iter()
            .try_fold(0u64, |t, (.., pay)| t.checked_add(pay.0))
            .ok_or(ProofRefused::Overflow)?;
        let holder = Address::of(&proof.key);
        let same_shard = shard_of(&holder, self.params.shard_count) == self.shard;
        let mut account = self.accounts.get(&holder).cloned().unwrap_or_default();
        if same_shard {
            account.balance = account
                .balance
                .checked_add(Amount(total))
                .ok_or(ProofRefused::Overflow)?;
        }
        for (id, h, p, pay) in pays {
            let mut record = self.deals[&id].clone();
            record.escrow_left = Amount(record.escrow_left.0 - pay.0);
            record.paid = Amount(record.paid.0.saturating_add(pay.0));
            let before = self.proven(&id, h);
            let proven = Proven {
                next: p + 1,
                passed: before.passed + 1,
                streak: 0,
                // The holder proved again: its order closes and the bounty stays in the escrow.
                bounty: if before.streak != 0 {
                    Amount::ZERO
                } else {
                    before.bounty
                },
                ..before
            };
            self.tree.insert(proven_key(&id, h), proven.value_hash());
            self.proven.insert((id, h), proven);
            self.dirty_proven.insert((id, h));
            self.set_deal(id, record);
        }
        if same_shard {
            self.set_account(holder, account);
        } else {
            let lock = Lock {
                tx_id: holder_payout_id(&proof.key, self.shard, proof.end),
                from: holder,
                to: holder,
                amount: Amount(total),
                kind: LockKind::Transfer,
            };
            let mut totals = self.totals;
            totals.locked_out += u128::from(total);
            self.set_leaf(Lock::key(&lock.tx_id), lock.value_hash());
            self.set_totals(totals);
            self.payout_locks.push(lock);
        }
        self.count_block_proof(proof.encode().len(), height);
        Ok(())
    }

    /// Applies a proof of either kind in a block at `height` (see [`State::apply_proof`]).
    pub fn apply_proof_tx(&mut self, proof: &ProofTx, height: u64) -> Result<(), ProofRefused> {
        match proof {
            ProofTx::Slot(p) => self.apply_proof(p, height),
            ProofTx::Holder(p) => self.apply_holder_proof(p, height),
        }
    }

    /// [`State::check_proof_next`] for a proof of either kind; returns what it pays.
    pub fn check_proof_tx_next(
        &self,
        proof: &ProofTx,
        height: u64,
        parent: &Hash,
        verify: bool,
    ) -> Result<Amount, ProofRefused> {
        match proof {
            ProofTx::Slot(p) => self.check_proof_next(p, height, parent, verify),
            ProofTx::Holder(p) => {
                let pays =
                    self.check_holder_with(p, height, self.seed_for(height, parent), verify)?;
                Ok(Amount(
                    pays.iter()
                        .fold(0u64, |t, (.., pay)| t.saturating_add(pay.0)),
                ))
            }
        }
    }

    /// Counts a proof the block at `height` carries; when the block's proof section becomes full (its count
    /// at the maximum, or less room left than the largest proof takes, so the pool may have held a proof
    /// back), one more block of the window `height` is in is full.
    fn count_block_proof(&mut self, bytes: usize, height: u64) {
        use crate::block::{BLOCK_PROOF_BYTES_MAX, BLOCK_PROOFS_MAX};
        use crate::types::storage_proof::PROOF_BYTES_MAX;
        let (count, total, counted) = self.block_proofs;
        let (count, total) = (count + 1, total + bytes);
        let full = count >= BLOCK_PROOFS_MAX || total + PROOF_BYTES_MAX > BLOCK_PROOF_BYTES_MAX;
        self.block_proofs = (count, total, counted || full);
        if full && !counted {
            let period = self.params.storage_period_blocks.max(1);
            let window_of = height.saturating_sub(1) / period * period;
            let blocks = if self.congested.0 == window_of {
                self.congested.1 + 1
            } else {
                1
            };
            self.congested = (window_of, blocks);
            self.congested_dirty = true;
            self.tree
                .insert(congested_key(), congested_value(self.congested));
        }
    }

    /// The end height of the newest period whose proof window had a full block (0: none), and how many of
    /// its blocks were full.
    pub fn congested(&self) -> (u64, u64) {
        self.congested
    }

    /// The payout locks the newest block's proofs made for holders of other shards (kept in the block log
    /// with the block, since a later claim may change a slot's holder).
    pub fn payout_locks(&self) -> &[Lock] {
        &self.payout_locks
    }

    /// The key that holds slot `holder` of deal `id` now: the taker of its repair order if one took it, else
    /// the holder its terms name.
    pub fn holder_key(&self, id: &Hash, holder: u8) -> Option<PublicKey> {
        let terms = self.terms.get(id)?;
        terms.holders.get(usize::from(holder))?;
        Some(slot_key(terms, holder, &self.proven(id, holder)))
    }

    /// Whether a slot standing at `proven` may be taken over: its holder missed `repair_after_misses`
    /// periods in a row (at least one).
    pub fn order_open(&self, proven: &Proven) -> bool {
        proven.streak >= self.params.repair_after_misses.max(1)
    }

    /// Every open repair order on this shard that can still be taken (the deal has a period left for its
    /// slot to prove): the deal and its slot, with where the slot stands.
    pub fn repair_orders(&self) -> impl Iterator<Item = (&Hash, u8, &Proven)> {
        self.proven
            .iter()
            .filter(|((id, _), p)| {
                self.order_open(p) && self.deals.get(id).is_some_and(|d| p.next < d.periods)
            })
            .map(|((id, h), p)| (id, *h, p))
    }

    /// What this shard has locked out to other shards and committed in from them, since genesis.
    pub fn atomix_totals(&self) -> Totals {
        self.totals
    }

    /// The supply this shard answers for: its holdings, plus what it locked out and what slashes burned,
    /// minus what it committed in. Every transaction, inbound and slash leaves it unchanged, so it always
    /// equals the shard's genesis supply.
    pub fn accountable_supply(&self) -> u128 {
        self.total_supply() + self.totals.locked_out + self.totals.burned - self.totals.committed_in
    }

    /// Whether the Atomix lock of transaction `tx_id` (of another shard) was committed here.
    pub fn is_committed(&self, tx_id: &Hash) -> bool {
        self.tree.get(&atomix::done_key(tx_id)).is_some()
    }

    /// Whether transaction `tx_id` (made on this shard) locked value for another shard.
    pub fn is_locked(&self, tx_id: &Hash) -> bool {
        self.tree.get(&Lock::key(tx_id)).is_some()
    }

    /// A proof of the Atomix lock of transaction `tx_id` (made on this shard) against [`State::root`].
    pub fn prove_lock(&self, tx_id: &Hash) -> smt::Proof {
        self.tree.prove(&Lock::key(tx_id))
    }

    fn set_leaf(&mut self, key: Hash, value_hash: Hash) {
        self.tree.insert(key, value_hash);
        self.new_leaves.push((key, value_hash));
    }

    fn set_totals(&mut self, totals: Totals) {
        self.totals = totals;
        self.tree.insert(atomix::totals_key(), totals.value_hash());
        self.totals_dirty = true;
    }

    /// Commits the locks of an inbound whose header the caller has certified: checks every proof and that no
    /// lock was committed before, then credits the recipients. On error nothing changes.
    pub fn apply_inbound(&mut self, inbound: &Inbound) -> Result<(), InboundError> {
        inbound.check_proofs(self.params.chain_id, self.shard, self.params.shard_count)?;
        let mut seen = BTreeSet::new();
        let mut credits: BTreeMap<Address, Account> = BTreeMap::new();
        let mut totals = self.totals;
        let mut slashes = Vec::new();
        for (lock, _) in &inbound.locks {
            if self.is_committed(&lock.tx_id) || !seen.insert(lock.tx_id) {
                return Err(InboundError::AlreadyCommitted(
                    lock.tx_id[..8].iter().map(|b| format!("{b:02x}")).collect(),
                ));
            }
            if lock.kind == LockKind::Slash {
                slashes.push((lock.to, lock.amount));
                continue;
            }
            let account = match credits.get_mut(&lock.to) {
                Some(a) => a,
                None => credits
                    .entry(lock.to)
                    .or_insert(self.accounts.get(&lock.to).cloned().unwrap_or_default()),
            };
            account.balance = account
                .balance
                .checked_add(lock.amount)
                .ok_or(InboundError::Overflow)?;
            totals.committed_in += u128::from(lock.amount.0);
        }
        for (address, account) in credits {
            self.set_account(address, account);
        }
        for tx_id in seen {
            self.set_leaf(atomix::done_key(&tx_id), atomix::done_value());
        }
        self.set_totals(totals);
        // Slashes after the credits: a holder paid and slashed in one inbound loses stake, not pay; one burn
        // (and one new stake for the beacon) per holder.
        let mut burns: BTreeMap<Address, u64> = BTreeMap::new();
        for (holder, amount) in slashes {
            let sum = burns.entry(holder).or_default();
            *sum = sum.saturating_add(amount.0);
        }
        for (holder, amount) in burns {
            self.burn_storage_stake(holder, Amount(amount));
        }
        Ok(())
    }

    /// Executes one transaction in a block at `height`. On error nothing changes.
    pub fn apply(&mut self, stx: &SignedTransaction, height: u64) -> Result<Receipt, TxError> {
        self.apply_checked(stx, height, false)
    }

    /// [`State::apply`], skipping the signature check when `signature_verified` says the caller already
    /// verified this exact signed transaction (by its id).
    pub fn apply_checked(
        &mut self,
        stx: &SignedTransaction,
        height: u64,
        signature_verified: bool,
    ) -> Result<Receipt, TxError> {
        // The cheap checks first; the signatures (up to 33 for a deal) only once the transaction could
        // apply, so a transaction refused for its shard, expiry, fee or nonce costs no signature check.
        stx.check_stateless_signature_verified(self.params.chain_id)?;
        let tx = &stx.tx;
        let from = tx.sender_address();
        let sender_shard = shard_of(&from, self.params.shard_count);
        if sender_shard != self.shard {
            return Err(TxError::WrongShard {
                shard: self.shard,
                sender_shard,
            });
        }
        if height > tx.expiry_height {
            return Err(TxError::Expired {
                expiry_height: tx.expiry_height,
                height,
            });
        }
        let min = tx.fee_floor(self.params.fee_min)?;
        if tx.fee < min {
            return Err(TxError::FeeTooLow { min, got: tx.fee });
        }
        let mut sender = self.accounts.get(&from).cloned().unwrap_or_default();
        if tx.nonce < sender.nonce {
            return Err(TxError::ReplayedNonce {
                expected: sender.nonce,
                got: tx.nonce,
            });
        }
        if tx.nonce > sender.nonce {
            return Err(TxError::FutureNonce {
                expected: sender.nonce,
                got: tx.nonce,
            });
        }
        if !signature_verified {
            stx.check_signature()?;
        }
        // Matured unbonding becomes spendable the first time the account acts after the delay.
        if sender.unbonding.0 > 0 && height >= sender.unbonding_release_height {
            sender.balance = sender
                .balance
                .checked_add(sender.unbonding)
                .ok_or(TxError::Overflow)?;
            sender.unbonding = Amount::ZERO;
        }
        let outgoing = tx.outgoing()?;
        let needed = tx.fee.checked_add(outgoing).ok_or(TxError::Overflow)?;
        sender.balance = sender
            .balance
            .checked_sub(needed)
            .ok_or(TxError::Overspend {
                needed,
                available: sender.balance,
            })?;
        sender.nonce = sender.nonce.checked_add(1).ok_or(TxError::Overflow)?;
        let mut recipient = None;
        let mut lock = None;
        let mut deal = None;
        let mut volume = None;
        match &tx.kind {
            TxKind::Transfer { to, amount } => {
                if shard_of(to, self.params.shard_count) != self.shard {
                    // Atomix: the amount waits in a lock for the recipient's shard to commit it.
                    lock = Some(Lock {
                        tx_id: stx.id(),
                        from,
                        to: *to,
                        amount: *amount,
                        kind: LockKind::Transfer,
                    });
                } else if *to == from {
                    sender.balance = sender
                        .balance
                        .checked_add(*amount)
                        .ok_or(TxError::Overflow)?;
                } else {
                    let mut r = self.accounts.get(to).cloned().unwrap_or_default();
                    r.balance = r.balance.checked_add(*amount).ok_or(TxError::Overflow)?;
                    recipient = Some((*to, r));
                }
            }
            TxKind::RegisterValidator {
                stake,
                bls_public_key,
                ..
            } => {
                if sender.validator_key.is_some() {
                    return Err(TxError::AlreadyRegistered);
                }
                sender.validator_key = Some(*bls_public_key);
                sender.validator_stake = *stake;
            }
            TxKind::RegisterStorageNode { stake } => {
                if sender.storage_registered {
                    return Err(TxError::AlreadyRegistered);
                }
                // A node the registry would not list is not registered at all.
                if *stake < self.params.storage_stake_min {
                    return Err(TxError::StakeBelowMinimum {
                        stake: *stake,
                        min: self.params.storage_stake_min,
                    });
                }
                sender.storage_registered = true;
                sender.storage_stake = *stake;
            }
            TxKind::Unstake { role, amount } => {
                let staked = match role {
                    Role::Validator => &mut sender.validator_stake,
                    Role::StorageNode => &mut sender.storage_stake,
                };
                *staked = staked
                    .checked_sub(*amount)
                    .ok_or(TxError::InsufficientStake {
                        requested: *amount,
                        staked: *staked,
                    })?;
                sender.unbonding = sender
                    .unbonding
                    .checked_add(*amount)
                    .ok_or(TxError::Overflow)?;
                sender.unbonding_release_height =
                    height.saturating_add(self.params.unbonding_delay_blocks);
            }
            TxKind::OpenDeal { terms, .. } => {
                let id = terms.id(&from);
                if self.deals.contains_key(&id) {
                    return Err(TxError::DealExists);
                }
                let per_period = terms
                    .per_period()?
                    .iter()
                    .try_fold(Amount::ZERO, |sum, a| {
                        sum.checked_add(*a).ok_or(TxError::Overflow)
                    })?;
                // Periods sit on the shard's grid of `storage_period_blocks` heights, whose every end draws
                // the seed of that period's challenges: the deal starts at the next line of the grid.
                let period_blocks = self.params.storage_period_blocks.max(1);
                let record = DealRecord {
                    owner: from,
                    terms: terms.hash(),
                    start_height: height.div_ceil(period_blocks) * period_blocks,
                    period_blocks,
                    periods: terms.periods,
                    per_period,
                    escrow_left: outgoing,
                    paid: Amount::ZERO,
                    refunded: Amount::ZERO,
                };
                deal = Some((id, record, Some(terms.clone())));
            }
            TxKind::EndDeal { deal: id } => {
                let mut record = self.deals.get(id).cloned().ok_or(TxError::UnknownDeal)?;
                if record.owner != from {
                    return Err(TxError::NotDealOwner);
                }
                let (ends_after, refund) = record.end_at(height)?;
                record.periods = ends_after;
                record.escrow_left = Amount(record.escrow_left.0 - refund.0);
                record.refunded = record
                    .refunded
                    .checked_add(refund)
                    .ok_or(TxError::Overflow)?;
                sender.balance = sender
                    .balance
                    .checked_add(refund)
                    .ok_or(TxError::Overflow)?;
                deal = Some((*id, record, None));
            }
            TxKind::PublishVolume {
                name,
                replaces,
                root,
            } => {
                let id = volume_id(&from, name);
                let head = self.volume_head(&id);
                if head != *replaces {
                    return Err(TxError::VolumeVersion {
                        head,
                        replaces: *replaces,
                    });
                }
                let version = VolumeVersion {
                    height,
                    root: root.clone(),
                };
                volume = Some((id, head + 1, version));
            }
        }
        let fee_pool = self.fee_pool.checked_add(tx.fee).ok_or(TxError::Overflow)?;
        // Every check passed: commit the changes.
        self.set_account(from, sender.clone());
        if let Some((to, r)) = recipient {
            self.set_account(to, r);
        }
        if let Some(lock) = lock {
            let mut totals = self.totals;
            totals.locked_out += u128::from(lock.amount.0);
            self.set_leaf(Lock::key(&lock.tx_id), lock.value_hash());
            self.set_totals(totals);
        }
        self.set_fee_pool(fee_pool);
        if let Some((id, record, terms)) = deal {
            self.set_deal(id, record);
            if let Some(terms) = terms {
                self.new_terms.push((id, terms.encode()));
                for (h, holder) in terms.holders.iter().enumerate() {
                    let h = u8::try_from(h).expect("at most 32 holders");
                    let weight = storage_proof::slot_weight(&terms, h);
                    self.slots_of
                        .entry(holder.key)
                        .or_default()
                        .insert((id, h), weight);
                }
                self.terms.insert(id, Arc::new(terms));
            }
        }
        if let Some((id, n, version)) = volume {
            self.add_volume_version(id, n, version);
            self.new_volumes.push((id, n));
        }
        let event = match &tx.kind {
            TxKind::Transfer { .. }
            | TxKind::OpenDeal { .. }
            | TxKind::EndDeal { .. }
            | TxKind::PublishVolume { .. } => None,
            TxKind::RegisterValidator { .. }
            | TxKind::Unstake {
                role: Role::Validator,
                ..
            } => sender.validator_key.map(|key| RegistryEvent::Validator {
                id: from,
                key,
                stake: sender.validator_stake,
            }),
            TxKind::RegisterStorageNode { .. }
            | TxKind::Unstake {
                role: Role::StorageNode,
                ..
            } => sender
                .storage_registered
                .then_some(RegistryEvent::StorageNode {
                    id: from,
                    stake: sender.storage_stake,
                }),
        };
        if let Some(event) = event {
            self.emit(event);
        }
        Ok(Receipt {
            tx_id: stx.id(),
            fee: tx.fee,
            nonce_after: sender.nonce,
        })
    }

    /// Executes a block's transactions in order; any invalid transaction makes the whole block invalid, and
    /// then `self` must be discarded (callers execute on a copy).
    pub fn apply_all(
        &mut self,
        txs: &[SignedTransaction],
        height: u64,
    ) -> Result<Vec<Receipt>, (usize, TxError)> {
        txs.iter()
            .enumerate()
            .map(|(i, tx)| self.apply(tx, height).map_err(|e| (i, e)))
            .collect()
    }

    /// Writes the accounts changed since the last call into `batch`.
    pub fn persist_into(&mut self, batch: &mut WriteBatch) {
        for address in std::mem::take(&mut self.dirty) {
            let account = self.accounts.get(&address).expect("dirty accounts exist");
            batch.put([KEY_ACCOUNT_PREFIX, &address.0].concat(), account.encode());
        }
        if std::mem::take(&mut self.fee_pool_dirty) {
            batch.put(KEY_FEE_POOL, self.fee_pool.0.to_be_bytes().to_vec());
        }
        for (count, event) in std::mem::take(&mut self.new_events) {
            batch.put(registry_key(count), event.encode());
        }
        for (key, value_hash) in std::mem::take(&mut self.new_leaves) {
            batch.put([KEY_ATOMIX_PREFIX, &key].concat(), value_hash.to_vec());
        }
        if std::mem::take(&mut self.totals_dirty) {
            batch.put(KEY_ATOMIX_TOTALS, self.totals.encode());
        }
        for id in std::mem::take(&mut self.dirty_deals) {
            let record = self.deals.get(&id).expect("dirty deals exist");
            batch.put([KEY_DEAL_PREFIX, &id].concat(), record.encode());
        }
        for (id, terms) in std::mem::take(&mut self.new_terms) {
            batch.put([KEY_DEAL_TERMS_PREFIX, &id].concat(), terms);
        }
        for (id, holder) in std::mem::take(&mut self.dirty_proven) {
            let proven = self.proven[&(id, holder)];
            batch.put(
                [KEY_PROVEN_PREFIX, &id, &[holder]].concat(),
                proven.encode(),
            );
        }
        for (id, n) in std::mem::take(&mut self.new_volumes) {
            batch.put(
                [KEY_VOLUME_PREFIX, &id, &n.to_be_bytes()].concat(),
                self.volumes[&(id, n)].encode(),
            );
        }
        if std::mem::take(&mut self.congested_dirty) {
            batch.put(
                KEY_CONGESTED,
                [
                    self.congested.0.to_be_bytes(),
                    self.congested.1.to_be_bytes(),
                ]
                .concat(),
            );
        }
        if std::mem::take(&mut self.seed_dirty) {
            batch.put(
                KEY_SEED,
                [self.seed.0.to_be_bytes().as_slice(), &self.seed.1].concat(),
            );
        }
    }

    /// Rebuilds a shard's state from what [`State::persist_into`] wrote.
    pub fn load(
        params: ChainParams,
        shard: ShardId,
        store: &dyn Store,
    ) -> Result<Self, StoreError> {
        let mut state = Self::new(params, shard);
        let corrupt = |key: &[u8], reason: String| StoreError::Corrupt {
            key: format!("{key:?}"),
            reason,
        };
        for (key, value) in store.scan_prefix(KEY_ACCOUNT_PREFIX)? {
            let address: [u8; 32] = key[KEY_ACCOUNT_PREFIX.len()..]
                .try_into()
                .map_err(|_| corrupt(&key, "account key is not 32 bytes".into()))?;
            let account = Account::decode(&value).map_err(|e| corrupt(&key, e.to_string()))?;
            let address = Address(address);
            state
                .tree
                .insert(account_key(&address), account.value_hash());
            state.accounts.insert(address, account);
        }
        if let Some(v) = store.get(KEY_FEE_POOL)? {
            let bytes: [u8; 8] = v
                .try_into()
                .map_err(|_| corrupt(KEY_FEE_POOL, "fee pool is not 8 bytes".into()))?;
            state.set_fee_pool(Amount(u64::from_be_bytes(bytes)));
        }
        for (key, value) in store.scan_prefix(KEY_REGISTRY_PREFIX)? {
            let event = RegistryEvent::decode(&value).map_err(|e| corrupt(&key, e.to_string()))?;
            let count = u64::from_be_bytes(
                key[KEY_REGISTRY_PREFIX.len()..]
                    .try_into()
                    .map_err(|_| corrupt(&key, "registry key is not 8 bytes".into()))?,
            );
            if count != state.outbox.count + 1 {
                return Err(corrupt(
                    &key,
                    format!("registry event {count} out of order"),
                ));
            }
            state.emit(event);
        }
        for (key, value) in store.scan_prefix(KEY_ATOMIX_PREFIX)? {
            let tree_key: Hash = key[KEY_ATOMIX_PREFIX.len()..]
                .try_into()
                .map_err(|_| corrupt(&key, "atomix key is not 32 bytes".into()))?;
            let value_hash: Hash = value
                .as_slice()
                .try_into()
                .map_err(|_| corrupt(&key, "atomix value is not 32 bytes".into()))?;
            state.tree.insert(tree_key, value_hash);
        }
        if let Some(v) = store.get(KEY_ATOMIX_TOTALS)? {
            let totals =
                Totals::decode(&v).map_err(|e| corrupt(KEY_ATOMIX_TOTALS, e.to_string()))?;
            state.set_totals(totals);
        }
        for (key, value) in store.scan_prefix(KEY_DEAL_PREFIX)? {
            let id: Hash = key[KEY_DEAL_PREFIX.len()..]
                .try_into()
                .map_err(|_| corrupt(&key, "deal key is not 32 bytes".into()))?;
            let record = DealRecord::decode(&value).map_err(|e| corrupt(&key, e.to_string()))?;
            state.set_deal(id, record);
        }
        for (key, value) in store.scan_prefix(KEY_DEAL_TERMS_PREFIX)? {
            let id: Hash = key[KEY_DEAL_TERMS_PREFIX.len()..]
                .try_into()
                .map_err(|_| corrupt(&key, "deal terms key is not 32 bytes".into()))?;
            let terms = DealTerms::decode(&value).map_err(|e| corrupt(&key, e.to_string()))?;
            state.terms.insert(id, Arc::new(terms));
        }
        for (key, value) in store.scan_prefix(KEY_PROVEN_PREFIX)? {
            let rest = &key[KEY_PROVEN_PREFIX.len()..];
            let (id, holder): (Hash, u8) = match rest {
                [id @ .., holder] => (
                    id.try_into()
                        .map_err(|_| corrupt(&key, "deal proofs key is not 33 bytes".into()))?,
                    *holder,
                ),
                [] => return Err(corrupt(&key, "deal proofs key is empty".into())),
            };
            let proven = Proven::decode(&value)
                .ok_or_else(|| corrupt(&key, "deal proofs are not 16 bytes".into()))?;
            state
                .tree
                .insert(proven_key(&id, holder), proven.value_hash());
            state.proven.insert((id, holder), proven);
        }
        for (id, terms) in &state.terms {
            for h in 0..terms.holders.len() {
                let h = u8::try_from(h).expect("at most 32 holders");
                let key = slot_key(terms, h, &state.proven(id, h));
                let weight = storage_proof::slot_weight(terms, h);
                state
                    .slots_of
                    .entry(key)
                    .or_default()
                    .insert((*id, h), weight);
            }
        }
        if let Some(v) = store.get(KEY_SEED)? {
            let bytes: [u8; 40] = v
                .as_slice()
                .try_into()
                .map_err(|_| corrupt(KEY_SEED, "period seed is not 40 bytes".into()))?;
            let end = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
            let seed: Hash = bytes[8..].try_into().expect("32 bytes");
            state.seed = (end, seed);
            state.tree.insert(seed_key(), seed_value(end, &seed));
        }
        if let Some(v) = store.get(KEY_CONGESTED)? {
            let bytes: [u8; 16] = v
                .as_slice()
                .try_into()
                .map_err(|_| corrupt(KEY_CONGESTED, "congested window is not 16 bytes".into()))?;
            state.congested = (
                u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
                u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes")),
            );
            state
                .tree
                .insert(congested_key(), congested_value(state.congested));
        }
        for (key, value) in store.scan_prefix(KEY_VOLUME_PREFIX)? {
            let rest = &key[KEY_VOLUME_PREFIX.len()..];
            if rest.len() != 40 {
                return Err(corrupt(&key, "volume key is not 40 bytes".into()));
            }
            let id: Hash = rest[..32].try_into().expect("32 bytes");
            let n = u64::from_be_bytes(rest[32..].try_into().expect("8 bytes"));
            let version =
                VolumeVersion::decode(&value).map_err(|e| corrupt(&key, e.to_string()))?;
            state.add_volume_version(id, n, version);
        }
        state.dirty.clear();
        state.dirty_proven.clear();
        state.seed_dirty = false;
        state.congested_dirty = false;
        state.dirty_deals.clear();
        state.fee_pool_dirty = false;
        state.new_events.clear();
        state.new_leaves.clear();
        state.totals_dirty = false;
        Ok(state)
    }

    /// Registry events `from + 1 ..= to` of this shard, from what [`State::persist_into`] wrote.
    pub fn registry_events(
        store: &dyn Store,
        from: u64,
        to: u64,
    ) -> Result<Vec<RegistryEvent>, StoreError> {
        (from + 1..=to)
            .map(|count| {
                let key = registry_key(count);
                let bytes = store.get(&key)?.ok_or_else(|| StoreError::Corrupt {
                    key: format!("state/registry/{count}"),
                    reason: "missing".into(),
                })?;
                RegistryEvent::decode(&bytes).map_err(|e| StoreError::Corrupt {
                    key: format!("state/registry/{count}"),
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{SecretKey, bls};
    use crate::store::MemStore;
    use crate::tx::Transaction;
    use crate::types::deal::DealEndError;

    const SHARD: ShardId = ShardId(0);

    fn params() -> ChainParams {
        ChainParams {
            shard_count: 1,
            ..ChainParams::devnet(1)
        }
    }

    /// A state with `alice` holding 1000 IOST, and a transaction builder from her.
    fn setup() -> (State, SecretKey) {
        let alice = SecretKey::dev("alice");
        let mut state = State::new(params(), SHARD);
        let account = Account {
            balance: Amount::from_iost(1000).expect("small"),
            ..Account::default()
        };
        state.set_account(Address::of(&alice.public()), account);
        (state, alice)
    }

    /// `state` as a restarted node has it: persisted into a fresh store and loaded back; and the store.
    fn reload(state: &mut State) -> (State, MemStore) {
        let mut store = MemStore::new();
        let mut batch = WriteBatch::default();
        state.persist_into(&mut batch);
        store.write(batch).expect("in-memory");
        let loaded = State::load(state.params().clone(), state.shard(), &store).expect("loads");
        (loaded, store)
    }

    /// An inbound of `locks` under a height-1 header of `input`'s shard at its current root, with no
    /// certificate (`apply_inbound` takes the header as certified).
    fn inbound_of(input: &mut State, locks: &[Lock]) -> Inbound {
        let header = crate::block::BlockHeader {
            chain_id: input.params().chain_id,
            shard: input.shard(),
            height: 1,
            parent: [0; 32],
            state_root: input.root(),
            transactions_root: [0; 32],
            receipts_root: [0; 32],
        };
        Inbound {
            header,
            certificate: Vec::new(),
            locks: locks
                .iter()
                .map(|l| (l.clone(), input.prove_lock(&l.tx_id)))
                .collect(),
        }
    }

    /// A transaction at the least fee it may carry (a deal's prepays its proofs).
    fn tx(key: &SecretKey, nonce: u64, kind: TxKind) -> SignedTransaction {
        let mut t = Transaction {
            chain_id: params().chain_id,
            sender: key.public(),
            nonce,
            fee: Amount(1_000),
            expiry_height: 50,
            kind,
        };
        t.fee = t.fee_floor(Amount(1_000)).expect("fits");
        t.sign(key)
    }

    /// [`tx`], valid up to height `expiry_height`.
    fn tx_until(
        key: &SecretKey,
        nonce: u64,
        kind: TxKind,
        expiry_height: u64,
    ) -> SignedTransaction {
        let mut t = tx(key, nonce, kind).tx;
        t.expiry_height = expiry_height;
        t.sign(key)
    }

    fn pay(key: &SecretKey, nonce: u64, to: &str, iost: u64) -> SignedTransaction {
        let to = Address::of(&SecretKey::dev(to).public());
        tx(
            key,
            nonce,
            TxKind::Transfer {
                to,
                amount: Amount::from_iost(iost).expect("small"),
            },
        )
    }

    #[test]
    fn transfers_move_funds_and_conserve_supply() {
        let (mut state, alice) = setup();
        let supply = state.total_supply();
        let root0 = state.root();
        let receipt = state
            .apply(&pay(&alice, 0, "bob", 10), 1)
            .expect("valid transfer");
        assert_eq!(receipt.nonce_after, 1);
        let bob = Address::of(&SecretKey::dev("bob").public());
        assert_eq!(
            state.account(&bob).map(|a| a.balance),
            Amount::from_iost(10)
        );
        let alice_balance = state
            .account(&Address::of(&alice.public()))
            .map(|a| a.balance);
        assert_eq!(alice_balance, Some(Amount(990 * 100_000_000 - 1_000)));
        assert_eq!(state.fee_pool(), Amount(1_000));
        assert_eq!(state.total_supply(), supply);
        assert_ne!(state.root(), root0);
    }

    #[test]
    fn state_rules_reject_with_reasons_and_change_nothing() {
        let (mut state, alice) = setup();
        state.apply(&pay(&alice, 0, "bob", 1), 1).expect("valid");
        let root = state.root();
        let check = |state: &mut State, stx: SignedTransaction, height: u64, expected: TxError| {
            assert_eq!(state.apply(&stx, height), Err(expected));
        };
        check(
            &mut state,
            pay(&alice, 0, "bob", 1),
            2,
            TxError::ReplayedNonce {
                expected: 1,
                got: 0,
            },
        );
        check(
            &mut state,
            pay(&alice, 5, "bob", 1),
            2,
            TxError::FutureNonce {
                expected: 1,
                got: 5,
            },
        );
        check(
            &mut state,
            pay(&alice, 1, "bob", 1),
            51,
            TxError::Expired {
                expiry_height: 50,
                height: 51,
            },
        );
        let available = state
            .account(&Address::of(&alice.public()))
            .map(|a| a.balance)
            .unwrap_or_default();
        check(
            &mut state,
            pay(&alice, 1, "bob", 1000),
            2,
            TxError::Overspend {
                needed: Amount(1000 * 100_000_000 + 1_000),
                available,
            },
        );
        let mut cheap = pay(&alice, 1, "bob", 1).tx;
        cheap.fee = Amount(1);
        check(
            &mut state,
            cheap.sign(&alice),
            2,
            TxError::FeeTooLow {
                min: Amount(1_000),
                got: Amount(1),
            },
        );
        let unstake = tx(
            &alice,
            1,
            TxKind::Unstake {
                role: Role::Validator,
                amount: Amount(1),
            },
        );
        check(
            &mut state,
            unstake,
            2,
            TxError::InsufficientStake {
                requested: Amount(1),
                staked: Amount(0),
            },
        );
        check(
            &mut state,
            tx(
                &alice,
                1,
                TxKind::RegisterStorageNode {
                    stake: Amount(99 * 100_000_000),
                },
            ),
            2,
            TxError::StakeBelowMinimum {
                stake: Amount(99 * 100_000_000),
                min: params().storage_stake_min,
            },
        );
        let mut foreign = pay(&alice, 1, "bob", 1).tx;
        foreign.chain_id += 1;
        check(
            &mut state,
            foreign.sign(&alice),
            2,
            TxError::WrongChainId {
                expected: params().chain_id,
                got: params().chain_id + 1,
            },
        );
        assert_eq!(state.root(), root);
    }

    #[test]
    fn staking_and_unbonding_after_the_delay() {
        let (mut state, alice) = setup();
        // A delay the test's transactions (which expire at height 50) can outlast.
        state.params.unbonding_delay_blocks = 20;
        let supply = state.total_supply();
        let bls = bls::SecretKey::dev("alice-validator");
        let stake = Amount::from_iost(100).expect("small");
        let register = TxKind::RegisterValidator {
            stake,
            bls_public_key: bls.public(),
            proof_of_possession: bls.proof_of_possession(&Address::of(&alice.public())),
        };
        state
            .apply(&tx(&alice, 0, register.clone()), 1)
            .expect("registers");
        assert_eq!(
            state.apply(&tx(&alice, 1, register), 2),
            Err(TxError::AlreadyRegistered)
        );
        state
            .apply(
                &tx(
                    &alice,
                    1,
                    TxKind::Unstake {
                        role: Role::Validator,
                        amount: stake,
                    },
                ),
                3,
            )
            .expect("unstakes");
        let me = Address::of(&alice.public());
        let account = state.account(&me).cloned().unwrap_or_default();
        assert_eq!(
            (
                account.validator_stake,
                account.unbonding,
                account.unbonding_release_height
            ),
            (Amount(0), stake, 3 + state.params().unbonding_delay_blocks)
        );
        let release = 3 + state.params().unbonding_delay_blocks;
        // Before the delay the unbonding amount is not spendable; after it, it is.
        let big = 1000 - 100 + 50;
        assert!(matches!(
            state.apply(&pay(&alice, 2, "bob", big), release - 1),
            Err(TxError::Overspend { .. })
        ));
        state
            .apply(&pay(&alice, 2, "bob", big), release)
            .expect("matured unbonding is spendable");
        assert_eq!(state.total_supply(), supply);
    }

    #[test]
    fn atomix_locks_on_the_input_shard_and_commits_once_on_the_output_shard() {
        let params = ChainParams::devnet(4);
        let alice = SecretKey::dev("alice");
        let home = shard_of(&Address::of(&alice.public()), 4);
        let mut input = State::new(params.clone(), home);
        input.set_account(
            Address::of(&alice.public()),
            Account {
                balance: Amount(1_000_000_000),
                ..Account::default()
            },
        );
        let label = (0..100)
            .map(|i| format!("r{i}"))
            .find(|l| shard_of(&Address::of(&SecretKey::dev(l).public()), 4) != home)
            .expect("some address lands elsewhere");
        let to = Address::of(&SecretKey::dev(&label).public());
        let away = shard_of(&to, 4);
        let mut output = State::new(params.clone(), away);
        let (input_supply, output_supply) =
            (input.accountable_supply(), output.accountable_supply());

        // Lock: the sender pays amount + fee, the amount waits in a lock leaf.
        let tx = pay(&alice, 0, &label, 3);
        input.apply(&tx, 1).expect("a cross-shard transfer locks");
        let sender = input
            .account(&Address::of(&alice.public()))
            .expect("exists");
        assert_eq!(sender.balance, Amount(1_000_000_000 - 300_000_000 - 1_000));
        assert!(
            input.account(&to).is_none(),
            "nothing credited on the input shard"
        );
        assert_eq!(input.atomix_totals().locked_out, 300_000_000);
        assert_eq!(input.accountable_supply(), input_supply);
        let lock = Lock {
            tx_id: tx.id(),
            from: Address::of(&alice.public()),
            to,
            amount: Amount(300_000_000),
            kind: LockKind::Transfer,
        };
        let inbound = inbound_of(&mut input, std::slice::from_ref(&lock));

        // Commit: credited once, marked done; a second commit of the same lock changes nothing.
        output.apply_inbound(&inbound).expect("the proof holds");
        assert_eq!(output.account(&to).map(|a| a.balance), Some(lock.amount));
        assert!(output.is_committed(&lock.tx_id));
        assert_eq!(output.accountable_supply(), output_supply);
        let root = output.root();
        assert!(matches!(
            output.apply_inbound(&inbound),
            Err(InboundError::AlreadyCommitted(_))
        ));
        assert_eq!(output.root(), root);
        // A lock forged to pay more, or delivered to the wrong shard, is refused.
        let mut forged = inbound.clone();
        forged.locks[0].0.amount = Amount(900_000_000);
        let mut fresh = State::new(params.clone(), away);
        assert!(matches!(
            fresh.apply_inbound(&forged),
            Err(InboundError::BadProof { .. })
        ));
        let mut elsewhere = State::new(params.clone(), ShardId((away.0 + 1) % 4));
        assert!(elsewhere.apply_inbound(&inbound).is_err());
        // The same inbound twice in one delivery commits nothing.
        let mut doubled = inbound.clone();
        doubled.locks.push(doubled.locks[0].clone());
        assert!(matches!(
            fresh.apply_inbound(&doubled),
            Err(InboundError::AlreadyCommitted(_))
        ));
        assert!(fresh.account(&to).is_none());

        // Both sides survive a reload: same roots, the done mark and the totals.
        for state in [&mut input, &mut output] {
            let (mut loaded, _) = reload(state);
            assert_eq!(loaded.root(), state.root());
            assert_eq!(loaded.atomix_totals(), state.atomix_totals());
            assert_eq!(loaded.accountable_supply(), state.accountable_supply());
        }

        // A sender on another shard is still refused.
        let mut elsewhere = State::new(params, ShardId((home.0 + 1) % 4));
        let t = pay(&alice, 0, "x", 1);
        assert!(matches!(
            elsewhere.apply(&t, 1),
            Err(TxError::WrongShard { .. })
        ));
    }

    /// Defect 2 of issue 14: accounts once sat at their raw address in the tree, so a 1-unit transfer to the
    /// address equal to a lock's key overwrote the lock leaf (the input shard could no longer prove it), one
    /// to a done mark's key on the output shard made the lock look committed (never credited), and `load`,
    /// inserting Atomix leaves after accounts, computed another root than execution had. An attacker pays
    /// every special key of both shards here; every lock still proves and commits, and reloaded states have
    /// the roots execution computed.
    #[test]
    fn paying_the_keys_of_locks_and_done_marks_freezes_nothing() {
        let shards = 4;
        let params = ChainParams::devnet(shards);
        let funded = |label: &str| {
            (
                SecretKey::dev(label),
                Address::of(&SecretKey::dev(label).public()),
            )
        };
        let on = |shard: ShardId, prefix: &str| {
            (0..1000)
                .map(|i| format!("{prefix}{i}"))
                .find(|l| shard_of(&Address::of(&SecretKey::dev(l).public()), shards) == shard)
                .expect("some label lands on every shard")
        };
        let (alice, alice_at) = funded("alice");
        let home = shard_of(&alice_at, shards);
        let away = ShardId((home.0 + 1) % shards);
        let to = Address::of(&SecretKey::dev(&on(away, "recipient")).public());
        let rich = Account {
            balance: Amount::from_iost(1_000).expect("small"),
            ..Account::default()
        };
        let mut input = State::new(params.clone(), home);
        let mut output = State::new(params.clone(), away);
        input.set_account(alice_at, rich.clone());
        let (attacker_in, attacker_in_at) = funded(&on(home, "mallory"));
        let (attacker_out, attacker_out_at) = funded(&on(away, "mallory"));
        input.set_account(attacker_in_at, rich.clone());
        output.set_account(attacker_out_at, rich);

        // Alice's cross-shard transfers, until one's lock key and one's done key are addresses of the shard
        // that holds that leaf (a quarter of them are): the attacker can pay those.
        let mut locks = Vec::new();
        let (mut lock_hit, mut done_hit) = (false, false);
        for nonce in 0..64u64 {
            let stx = tx(
                &alice,
                nonce,
                TxKind::Transfer {
                    to,
                    amount: Amount(1_000 + nonce),
                },
            );
            input.apply(&stx, 1).expect("alice can pay");
            let tx_id = stx.id();
            lock_hit |= shard_of(&Address(Lock::key(&tx_id)), shards) == home;
            done_hit |= shard_of(&Address(atomix::done_key(&tx_id)), shards) == away;
            locks.push(Lock {
                tx_id,
                from: alice_at,
                to,
                amount: Amount(1_000 + nonce),
                kind: LockKind::Transfer,
            });
            if lock_hit && done_hit {
                break;
            }
        }
        assert!(lock_hit && done_hit, "some keys fall on the shards");

        // The attacker pays 1 unit to every special key that is an address of its shard.
        let mut special_in = vec![
            fee_pool_key(),
            atomix::totals_key(),
            registry::checkpoint_key(1),
        ];
        let mut special_out = special_in.clone();
        special_in.extend(locks.iter().map(|l| Lock::key(&l.tx_id)));
        special_out.extend(locks.iter().map(|l| atomix::done_key(&l.tx_id)));
        let mut paid = 0;
        for (state, key, at, special) in [
            (&mut input, &attacker_in, home, &special_in),
            (&mut output, &attacker_out, away, &special_out),
        ] {
            for (nonce, leaf) in special
                .iter()
                .filter(|k| shard_of(&Address(**k), shards) == at)
                .enumerate()
            {
                let pay = tx(
                    key,
                    nonce as u64,
                    TxKind::Transfer {
                        to: Address(*leaf),
                        amount: Amount(1),
                    },
                );
                state.apply(&pay, 2).expect("paying any address is allowed");
                paid += 1;
            }
        }
        assert!(paid >= 2, "the attack paid a lock key and a done key");

        // Every lock still proves on the input shard and commits once on the output shard.
        let inbound = inbound_of(&mut input, &locks);
        output
            .apply_inbound(&inbound)
            .expect("no lock looks committed or unproven");
        let credited: u64 = locks.iter().map(|l| l.amount.0).sum();
        assert_eq!(
            output.account(&to).map(|a| a.balance),
            Some(Amount(credited))
        );
        assert!(locks.iter().all(|l| output.is_committed(&l.tx_id)));

        // A restart computes the roots execution computed.
        for state in [&mut input, &mut output] {
            let (mut loaded, _) = reload(state);
            assert_eq!(loaded.root(), state.root());
            assert_eq!(loaded.accountable_supply(), state.accountable_supply());
        }
    }

    /// A deal signed by `holders` holders over `segments` segments of 4+2, paid by `owner`.
    fn deal_tx(
        owner: &SecretKey,
        nonce: u64,
        holders: usize,
        segments: usize,
    ) -> SignedTransaction {
        let keys: Vec<SecretKey> = (0..holders)
            .map(|i| SecretKey::dev(&format!("holder{i}")))
            .collect();
        let terms = DealTerms {
            root: vec![1, 0x55, 0x1e, 32, 7, 7],
            size: 3_000_000,
            k: 4,
            m: 2,
            periods: 10,
            holders: keys
                .iter()
                .map(|k| crate::types::deal::Holder {
                    key: k.public(),
                    price: Amount(1_000_000),
                })
                .collect(),
            placement: (0..segments * 6)
                .map(|s| ((s % 6 + s / 6) % holders) as u8)
                .collect(),
            segment_lens: vec![1 << 20; segments],
            commitments_root: [9; 32],
        };
        let id = terms.id(&Address::of(&owner.public()));
        let signatures = keys
            .iter()
            .map(|k| crate::types::deal::sign(k, params().chain_id, &id))
            .collect();
        tx(owner, nonce, TxKind::OpenDeal { terms, signatures })
    }

    #[test]
    fn a_deal_escrows_its_price_and_ending_it_refunds_the_periods_not_begun() {
        let (mut state, alice) = setup();
        let me = Address::of(&alice.public());
        let supply = state.total_supply();
        let before = state.account(&me).expect("funded").balance;
        let open = deal_tx(&alice, 0, 6, 3);
        let TxKind::OpenDeal { terms, .. } = &open.tx.kind else {
            unreachable!("built as a deal")
        };
        let escrow = terms.escrow().expect("fits");
        assert_eq!(escrow, Amount(2_930 * 6 * 10));
        let id = terms.id(&me);
        // The deal prepays the block space of its 6 holders' 10 proofs besides its own fee. Each holder has 3
        // of the 18 shards of 1 MiB (list paths of 5 levels, piece paths of 12): its proof is at most
        // 64 + 3 × (142 + 180 + 656) = 2,998 bytes, 6 fees of 516 bytes.
        let fee = Amount(1_000 * (1 + 10 * 6 * 6));
        assert_eq!(open.tx.fee, fee);
        let mut cheap = open.tx.clone();
        cheap.fee = Amount(fee.0 - 1);
        assert_eq!(
            state.apply(&cheap.sign(&alice), 5),
            Err(TxError::FeeTooLow {
                min: fee,
                got: Amount(fee.0 - 1)
            }),
            "a deal that does not prepay its proofs is refused"
        );
        state.apply(&open, 5).expect("a signed, funded deal opens");
        assert_eq!(state.deals_of(&me, None).collect::<Vec<_>>(), vec![&id]);
        assert_eq!(state.deals_of(&me, Some(id)).count(), 0, "paged past it");
        assert_eq!(
            state
                .deals_of(&Address::of(&SecretKey::dev("bob").public()), None)
                .count(),
            0,
            "an owner's deals only"
        );
        assert_eq!(
            state.account(&me).expect("funded").balance,
            Amount(before.0 - escrow.0 - fee.0)
        );
        assert_eq!(state.fee_pool(), fee);
        let record = state.deal(&id).cloned().expect("recorded");
        assert_eq!(record.escrow_left, escrow);
        assert_eq!(record.per_period, Amount(2_930 * 6));
        assert_eq!(
            record.start_height, 16,
            "periods start on the grid of 16 heights"
        );
        assert_eq!(
            state.total_supply(),
            supply,
            "the escrow stays in the supply"
        );
        let root = state.root();
        assert_eq!(
            smt::verify(&root, &deal_key(&id), &state.prove_deal(&id)),
            Ok(Some(record.value_hash()))
        );

        // The same deal twice, a deal signed by someone else, one with a signature missing: refused, and
        // nothing changes.
        let again = deal_tx(&alice, 1, 6, 3);
        let mut forged = deal_tx(&alice, 1, 6, 3);
        if let TxKind::OpenDeal { signatures, .. } = &mut forged.tx.kind {
            signatures[2] = SecretKey::dev("mallory").sign(b"anything");
        }
        let forged = forged.tx.sign(&alice);
        let mut short = deal_tx(&alice, 1, 6, 3);
        if let TxKind::OpenDeal { signatures, .. } = &mut short.tx.kind {
            signatures.pop();
        }
        let short = short.tx.sign(&alice);
        assert_eq!(state.apply(&again, 6), Err(TxError::DealExists));
        assert_eq!(state.apply(&forged, 6), Err(TxError::DealSignature(2)));
        assert!(matches!(
            state.apply(&short, 6),
            Err(TxError::DealSignatureCount {
                holders: 6,
                signatures: 5
            })
        ));
        assert_eq!(state.root(), root);

        // Someone else cannot end it; the owner ends it in period 2 (heights 49..=64): periods 3..9 are
        // refunded, the escrow for periods 0..=2 stays for the holders.
        let bob = SecretKey::dev("bob");
        state.set_account(
            Address::of(&bob.public()),
            Account {
                balance: Amount::from_iost(1).expect("small"),
                ..Account::default()
            },
        );
        let supply = state.total_supply();
        let end_by_bob = tx_until(&bob, 0, TxKind::EndDeal { deal: id }, 100);
        assert_eq!(state.apply(&end_by_bob, 56), Err(TxError::NotDealOwner));
        let balance = state.account(&me).expect("funded").balance;
        state
            .apply(&tx_until(&alice, 1, TxKind::EndDeal { deal: id }, 100), 56)
            .expect("the owner ends its deal");
        let ended = state.deal(&id).cloned().expect("kept");
        let refund = Amount(2_930 * 6 * 7);
        assert_eq!(ended.refunded, refund);
        assert_eq!(ended.escrow_left, Amount(escrow.0 - refund.0));
        assert_eq!(ended.periods, 3);
        assert_eq!(ended.end_height(), 16 + 3 * 16);
        assert_eq!(
            state.account(&me).expect("funded").balance,
            Amount(balance.0 + refund.0 - 1_000)
        );
        assert_eq!(state.total_supply(), supply);
        // Ending it again before its last proof window closes (after height 64 + 16), or a deal nobody
        // opened: refused.
        assert_eq!(
            state.apply(&tx_until(&alice, 2, TxKind::EndDeal { deal: id }, 100), 57),
            Err(TxError::DealEnded(DealEndError::Ending {
                settles_after: 80
            }))
        );
        assert_eq!(
            state.apply(
                &tx_until(&alice, 2, TxKind::EndDeal { deal: [0; 32] }, 100),
                57
            ),
            Err(TxError::UnknownDeal)
        );

        // A restart keeps the deals, their terms and the root.
        let (mut loaded, store) = reload(&mut state);
        assert_eq!(loaded.root(), state.root());
        assert_eq!(loaded.deal(&id), Some(&ended));
        assert_eq!(loaded.total_supply(), state.total_supply());
        assert_eq!(
            State::deal_terms(&store, &id).expect("reads").as_ref(),
            Some(terms)
        );
    }

    /// The shards of a 2+1 deal over two segments (of 1,000 and 700 bytes), their CIDs and the leaves of
    /// its commitments list, segment by segment.
    /// A shard as a holder keeps it: its CID and its bytes.
    type HeldShard = (Vec<u8>, Vec<u8>);

    impl ThreeHolders {
        /// Opens a second deal over the same shards and holders (another root, so another id) at the same
        /// height as the first, so both run the same periods; returns its terms and id.
        fn open_second(&mut self) -> (DealTerms, Hash) {
            let mut terms = self.terms.clone();
            terms.root = vec![1, 0x55, 0x1e, 32, 7, 8];
            let id = terms.id(&self.me);
            let signatures = self
                .keys
                .iter()
                .map(|k| crate::types::deal::sign(k, self.params.chain_id, &id))
                .collect();
            let open = tx(
                &self.alice,
                1,
                TxKind::OpenDeal {
                    terms: terms.clone(),
                    signatures,
                },
            );
            self.state.apply(&open, self.height).expect("opens");
            (terms, id)
        }

        /// `key`'s holder proof for the next block (at `height + 1`), from every shard.
        fn prove_holder(&self, key: &SecretKey) -> HolderProof {
            self.prove_holder_at(key, self.height + 1)
        }

        /// `key`'s holder proof for a block at `height`, from every shard.
        fn prove_holder_at(&self, key: &SecretKey, height: u64) -> HolderProof {
            let due = self
                .state
                .holder_due(&key.public(), height, &hash_of(height - 1))
                .expect("the key has slots to prove");
            storage_proof::answer_holder(due.drawn, &key.public(), due.end, |_, _, p| {
                let (cid, bytes) = self.shards.get(usize::from(p)).cloned()?;
                Some((cid, bytes, smt::list_prove(&self.leaves, usize::from(p))))
            })
            .expect("every shard is here")
        }
    }

    /// Issue 15 items 3 and 4, and the block-space figure: one proof a period per storage node answers for
    /// all its slots on the shard, drawn over all their shards; it pays each slot's pay once, on the key's
    /// shard directly or as one lock for the sum; a wrong piece, a forged path, another key's or period's
    /// proof, or a replay is refused; proving a slot alone neither changes the draw nor gets paid twice; the
    /// index of slots survives a reload.
    #[test]
    fn a_holder_proof_pays_every_slot_of_its_key_once_and_anything_else_is_refused() {
        let mut t = ThreeHolders::open(4);
        let (terms2, id2) = t.open_second();
        let (id1, keys) = (t.id, t.keys.clone());
        let start = t.state.deal(&id1).expect("open").start_height;
        assert_eq!(t.state.deal(&id2).expect("open").start_height, start);
        let period = t.params.storage_period_blocks;
        // Nothing to prove before period 0 has ended.
        t.run_to(start + period - 1);
        assert!(
            t.state
                .holder_due(&keys[0].public(), t.height + 1, &hash_of(t.height))
                .is_none()
        );
        t.run_to(start + period);
        let due = t
            .state
            .holder_due(&keys[0].public(), t.height + 1, &hash_of(t.height))
            .expect("due");
        let mut ids = [id1, id2];
        ids.sort();
        assert_eq!(due.slots, vec![(ids[0], 0, 0), (ids[1], 0, 0)]);
        assert_eq!(due.unproven, 2);
        // Holder 0 keeps shards 0 and 5 of each deal: all four are drawn, each once.
        let mut drawn: Vec<(Hash, u16)> = due.drawn.iter().map(|(d, _, p, _)| (*d, *p)).collect();
        drawn.sort();
        assert_eq!(
            drawn,
            vec![(ids[0], 0), (ids[0], 5), (ids[1], 0), (ids[1], 5)]
        );

        let good = t.prove_holder(&keys[0]);
        let h = t.height + 1;
        t.state.begin_block(h, &hash_of(h - 1));
        t.height = h;
        let refused = |state: &State, proof: &HolderProof| {
            let mut s = state.clone();
            let root = s.root();
            let e = s.apply_proof_tx(&ProofTx::Holder(proof.clone()), h);
            assert_eq!(s.root(), root, "a refused proof changes nothing");
            e.expect_err("refused")
        };
        let mut wrong_piece = good.clone();
        wrong_piece.samples[0].sample.piece.piece[0] ^= 1;
        assert!(matches!(
            refused(&t.state, &wrong_piece),
            ProofRefused::Invalid(storage_proof::ProofError::Piece { .. })
        ));
        let mut forged_path = good.clone();
        forged_path.samples[1].sample.path.siblings[0][0] ^= 1;
        assert!(matches!(
            refused(&t.state, &forged_path),
            ProofRefused::Invalid(storage_proof::ProofError::NotTheDealsShard(_))
        ));
        let mut other_period = good.clone();
        other_period.end -= period;
        assert!(matches!(
            refused(&t.state, &other_period),
            ProofRefused::HolderNotProvable { .. }
        ));
        let mut other_key = good.clone();
        other_key.key = keys[1].public();
        assert!(matches!(
            refused(&t.state, &other_key),
            ProofRefused::Invalid(_)
        ));
        let mut stranger = good.clone();
        stranger.key = SecretKey::dev("stranger").public();
        assert!(matches!(
            refused(&t.state, &stranger),
            ProofRefused::NoSlots { .. }
        ));
        let mut reordered = good.clone();
        reordered.samples.swap(0, 1);
        assert!(matches!(
            refused(&t.state, &reordered),
            ProofRefused::Invalid(_)
        ));
        let mut short = good.clone();
        short.samples.pop();
        assert!(matches!(
            refused(&t.state, &short),
            ProofRefused::Invalid(storage_proof::ProofError::SampleCount { .. })
        ));

        // A sample naming another deal is refused.
        let mut other_deal = good.clone();
        other_deal.samples[0].deal = [7; 32];
        assert!(matches!(
            refused(&t.state, &other_deal),
            ProofRefused::Invalid(storage_proof::ProofError::WrongSlot { index: 0 })
        ));
        // A holder cannot prove one slot alone (it could pick, once the draws are known, whichever of its
        // holder proof and its slot proofs avoids what it dropped): a slot proof only claims an order.
        let (_, seed) = t.state.period_seed();
        let alone = crate::types::storage_proof::prove(&t.terms, &seed, &id1, 1, 0, |p| {
            let (cid, bytes) = t.shards.get(usize::from(p)).cloned()?;
            Some((cid, bytes, smt::list_prove(&t.leaves, usize::from(p))))
        })
        .expect("here");
        let supply = t.state.accountable_supply();
        let pays = terms2.per_period().expect("fits");
        let address = |k: &SecretKey| Address::of(&k.public());
        let balance = |s: &State, a: &Address| s.account(a).map_or(Amount::ZERO, |a| a.balance);
        let before = (
            balance(&t.state, &address(&keys[0])),
            balance(&t.state, &address(&keys[1])),
        );
        assert_eq!(t.state.apply_proof(&alone, h), Err(ProofRefused::NotAClaim));
        let after_alone = before.1;

        // The good proofs pay each slot once.
        let escrow_before = t.state.escrow_total();
        t.state
            .apply_proof_tx(&ProofTx::Holder(good.clone()), h)
            .expect("pays");
        assert_eq!(
            balance(&t.state, &address(&keys[0])).0,
            before.0.0 + 2 * pays[0].0
        );
        for id in [id1, id2] {
            let p = t.state.proven(&id, 0);
            assert_eq!((p.next, p.passed), (1, 1));
        }
        assert!(matches!(
            t.state.apply_proof_tx(&ProofTx::Holder(good.clone()), h),
            Err(ProofRefused::AllProven { .. })
        ));
        let one = t.prove_holder_at(&keys[1], h);
        t.state
            .apply_proof_tx(&ProofTx::Holder(one), h)
            .expect("pays both slots");
        assert_eq!(
            balance(&t.state, &address(&keys[1])).0,
            after_alone.0 + 2 * pays[1].0
        );
        // Holder 2 lives on the other shard: one lock for both slots' pay.
        let cross = t.prove_holder_at(&keys[2], h);
        t.state
            .apply_proof_tx(&ProofTx::Holder(cross.clone()), h)
            .expect("pays through a lock");
        let lock = t.state.payout_locks().last().expect("a lock").clone();
        assert_eq!(
            lock.tx_id,
            holder_payout_id(&keys[2].public(), t.home, cross.end)
        );
        // Paid by another shard in the same period, the same key gets a lock of another id.
        let other = ShardId(1 - t.home.0);
        assert_ne!(
            holder_payout_id(&keys[2].public(), other, cross.end),
            lock.tx_id
        );
        assert_eq!(lock.to, address(&keys[2]));
        assert_eq!(lock.amount.0, 2 * pays[2].0);
        assert_eq!(t.state.accountable_supply(), supply);
        assert_eq!(
            escrow_before - t.state.escrow_total(),
            u128::from(2 * pays[0].0 + 2 * pays[1].0 + 2 * pays[2].0)
        );

        // The index of slots is rebuilt on a reload: the next period draws the same on both.
        t.run_to(start + 2 * period);
        let (mut loaded, _) = reload(&mut t.state);
        for k in &keys {
            assert_eq!(
                loaded.holder_due(&k.public(), t.height + 1, &hash_of(t.height)),
                t.state
                    .holder_due(&k.public(), t.height + 1, &hash_of(t.height)),
            );
        }
        assert_eq!(loaded.root(), t.state.root());
    }

    fn stored_shards() -> (Vec<HeldShard>, Vec<Hash>) {
        let shards: Vec<HeldShard> = (0..6u8)
            .map(|i| {
                let len = if i < 3 { 1_000 } else { 700 };
                let bytes = (0..len).map(|j| (j as u8).wrapping_mul(7) ^ i).collect();
                (vec![1, 0x55, 0x1e, i], bytes)
            })
            .collect();
        let leaves = shards
            .iter()
            .map(|(cid, bytes)| {
                crate::types::deal::shard_leaf(cid, &crate::pieces::commit(bytes).expect("fits"))
            })
            .collect();
        (shards, leaves)
    }

    /// Issue 15 item 5: a holder whose proof never comes loses `slash_periods` × its pay from its storage
    /// stake at the first block after the window closes, never before; on its own shard directly, on
    /// another through a slash lock that only burns stake; the supply holds on both shards, and a slash lock
    /// proves nothing else.
    #[test]
    fn a_missed_proof_burns_storage_stake_here_or_through_a_slash_lock() {
        let ThreeHolders {
            params,
            mut state,
            alice,
            me,
            home,
            keys,
            id,
            ..
        } = ThreeHolders::open(5);
        let away = ShardId(1 - home.0);
        let mut other = State::new(params.clone(), away);
        // Holder 0 (here) stakes more than a slash, holder 1 (here) less, holder 2 lives on the other shard.
        let address = |i: usize| Address::of(&keys[i].public());
        let staked = |stake: u64| Account {
            storage_stake: Amount(stake),
            storage_registered: true,
            ..Account::default()
        };
        state.set_account(
            address(0),
            Account {
                balance: Amount(100_000),
                ..staked(100_000)
            },
        );
        state.set_account(address(1), staked(5_000));
        other.set_account(address(2), staked(10_000));
        let (supply, other_supply) = (state.accountable_supply(), other.accountable_supply());
        let events = state.outbox.count;
        // Period 0 covers heights 17..=32, its window 33..=48: nobody is slashed while it is open.
        for h in 6..=48 {
            state.begin_block(h, &hash_of(h - 1));
            assert!(state.slash_locks().is_empty(), "nothing at height {h}");
        }
        assert_eq!(state.proven(&id, 0), Proven::default());
        assert_eq!(
            state.account(&address(0)).map(|a| a.storage_stake),
            Some(Amount(100_000))
        );

        // Height 49: the window closed without a proof from anyone. Each pays 1,700 a period, so each
        // slash is 4 × 1,700 = 6,800.
        state.begin_block(49, &hash_of(48));
        for holder in 0..3 {
            assert_eq!(
                state.proven(&id, holder),
                Proven {
                    next: 1,
                    passed: 0,
                    missed: 1,
                    slashed: Amount(6_800),
                    streak: 1,
                    bounty: Amount(1_700),
                    taker: None,
                }
            );
        }
        assert_eq!(
            state.account(&address(0)).map(|a| a.storage_stake),
            Some(Amount(100_000 - 6_800))
        );
        assert_eq!(
            state.account(&address(1)).map(|a| a.storage_stake),
            Some(Amount::ZERO),
            "a slash takes all of a smaller stake, and no more"
        );
        assert_eq!(state.atomix_totals().burned, 6_800 + 5_000);
        assert_eq!(
            state.accountable_supply(),
            supply,
            "burned stake stays accounted for"
        );
        assert_eq!(
            state.outbox.count,
            events + 5,
            "the beacon hears both new stakes and each holder's missed period"
        );
        let faults: Vec<RegistryEvent> = state
            .new_events
            .iter()
            .map(|(_, e)| e.clone())
            .filter(|e| matches!(e, RegistryEvent::StorageFault { .. }))
            .collect();
        let mut missing: Vec<Address> = (0..3).map(address).collect();
        missing.sort();
        assert_eq!(
            faults,
            missing
                .into_iter()
                .map(|id| RegistryEvent::StorageFault { id })
                .collect::<Vec<_>>(),
            "one fault per holder that missed, whatever its shard"
        );
        let lock = Lock {
            tx_id: slash_id(&id, 2, 0),
            from: me,
            to: address(2),
            amount: Amount(6_800),
            kind: LockKind::Slash,
        };
        assert_eq!(state.slash_locks(), std::slice::from_ref(&lock));
        assert!(state.is_locked(&lock.tx_id));
        assert_eq!(
            state.atomix_totals().locked_out,
            0,
            "a slash moves no value out"
        );
        // The period's pay stays in escrow, for the owner when the deal settles.
        assert_eq!(state.deal(&id).map(|d| d.paid), Some(Amount::ZERO));
        // The next block settles nothing again.
        state.begin_block(50, &hash_of(49));
        assert!(state.slash_locks().is_empty());
        assert_eq!(state.proven(&id, 0).missed, 1);

        // On the holder's shard the lock burns its stake, once, and the supply holds there too.
        let inbound = inbound_of(&mut state, std::slice::from_ref(&lock));
        other.apply_inbound(&inbound).expect("the slash is proven");
        assert_eq!(
            other
                .account(&address(2))
                .map(|a| (a.storage_stake, a.balance)),
            Some((Amount(10_000 - 6_800), Amount::ZERO))
        );
        assert_eq!(other.atomix_totals().burned, 6_800);
        assert_eq!(other.accountable_supply(), other_supply);
        assert!(matches!(
            other.apply_inbound(&inbound),
            Err(InboundError::AlreadyCommitted(_))
        ));
        // The slash's leaf proves no transfer: relayed as a credit, it is refused.
        let mut as_credit = inbound.clone();
        as_credit.locks[0].0.kind = LockKind::Transfer;
        let mut fresh = State::new(params.clone(), away);
        assert!(matches!(
            fresh.apply_inbound(&as_credit),
            Err(InboundError::BadProof { .. })
        ));
        // And an inbound survives its encoding with its kinds.
        assert_eq!(Inbound::decode(&inbound.encode()), Ok(inbound.clone()));
        // Both shards reload to the same roots, records and totals.
        for s in [&mut state, &mut other] {
            let (mut loaded, _) = reload(s);
            assert_eq!(loaded.root(), s.root());
            assert_eq!(loaded.atomix_totals(), s.atomix_totals());
            assert_eq!(loaded.proven(&id, 2), s.proven(&id, 2));
        }

        // Holder 0 unstakes everything once it knows it cannot prove: its later misses burn the amount
        // still unbonding.
        let unstake = tx(
            &keys[0],
            0,
            TxKind::Unstake {
                role: Role::StorageNode,
                amount: Amount(100_000 - 6_800),
            },
        );
        state.apply(&unstake, 50).expect("unstakes");
        // A deal ended early is not slashed past its end: ended in period 2 (heights 49..=64), it runs to
        // the end of that period, whose window closes at 80; periods 3 and 4 never run.
        let end = tx_until(&alice, 1, TxKind::EndDeal { deal: id }, 100);
        state.apply(&end, 50).expect("ends");
        for h in 51..=120 {
            state.begin_block(h, &hash_of(h - 1));
        }
        assert_eq!(
            state.proven(&id, 0).missed,
            3,
            "periods 0, 1 and 2 were missed"
        );
        assert_eq!(state.proven(&id, 0).next, 3, "period 3 never ran");
        let holder0 = state.account(&address(0)).cloned().expect("holder 0");
        assert_eq!(
            (holder0.storage_stake, holder0.unbonding),
            (Amount::ZERO, Amount(100_000 - 3 * 6_800)),
            "periods 1 and 2 were burned from what it unstaked"
        );
        assert_eq!(state.accountable_supply(), supply);
    }

    /// A 3-shard-per-segment deal of two segments opened at height 5 by alice, whose holders 0 and 1 live
    /// on her shard and holder 2 on the other; each keeps 1,700 bytes at a GiB-price of 1,700 a period.
    struct ThreeHolders {
        params: ChainParams,
        state: State,
        alice: SecretKey,
        me: Address,
        home: ShardId,
        keys: Vec<SecretKey>,
        terms: DealTerms,
        id: Hash,
        shards: Vec<(Vec<u8>, Vec<u8>)>,
        leaves: Vec<Hash>,
        /// The newest block run.
        height: u64,
    }

    fn hash_of(h: u64) -> Hash {
        hash_with("test block", &[&h.to_be_bytes()])
    }

    /// Keys `holder0`, `holder1`, ... that live on `home` (or not).
    fn keys_on(home: ShardId, want_home: bool) -> impl Iterator<Item = SecretKey> {
        (0..)
            .map(|i| SecretKey::dev(&format!("holder{i}")))
            .filter(move |k| (shard_of(&Address::of(&k.public()), 2) == home) == want_home)
    }

    impl ThreeHolders {
        fn open(periods: u64) -> Self {
            let params = ChainParams::devnet(2);
            let alice = SecretKey::dev("alice");
            let me = Address::of(&alice.public());
            let home = shard_of(&me, 2);
            let mut state = State::new(params.clone(), home);
            state.set_account(
                me,
                Account {
                    balance: Amount::from_iost(1000).expect("small"),
                    ..Account::default()
                },
            );
            let mut keys: Vec<SecretKey> = keys_on(home, true).take(2).collect();
            keys.extend(keys_on(home, false).take(1));
            let (shards, leaves) = stored_shards();
            let terms = DealTerms {
                root: vec![1, 0x55, 0x1e, 32, 7, 7],
                size: 3_400,
                k: 2,
                m: 1,
                periods,
                holders: keys
                    .iter()
                    .map(|k| crate::types::deal::Holder {
                        key: k.public(),
                        price: Amount(1 << 30),
                    })
                    .collect(),
                placement: vec![0, 1, 2, 1, 2, 0],
                segment_lens: vec![1_000, 700],
                commitments_root: smt::list_root(&leaves),
            };
            let id = terms.id(&me);
            let signatures = keys
                .iter()
                .map(|k| crate::types::deal::sign(k, params.chain_id, &id))
                .collect();
            let open = tx(
                &alice,
                0,
                TxKind::OpenDeal {
                    terms: terms.clone(),
                    signatures,
                },
            );
            for h in 1..=5 {
                state.begin_block(h, &hash_of(h - 1));
            }
            state.apply(&open, 5).expect("opens");
            Self {
                params,
                state,
                alice,
                me,
                home,
                keys,
                terms,
                id,
                shards,
                leaves,
                height: 5,
            }
        }

        /// Runs blocks up to `height`.
        fn run_to(&mut self, height: u64) {
            for h in self.height + 1..=height {
                self.state.begin_block(h, &hash_of(h - 1));
            }
            self.height = self.height.max(height);
        }

        /// The holder proof of the key of slot `holder` for the block at the newest height run, from every
        /// shard (the key's one slot here, in the fixture's one deal).
        fn prove(&self, holder: u8) -> ProofTx {
            ProofTx::Holder(self.prove_holder_at(&self.keys[usize::from(holder)], self.height))
        }
    }

    /// Issue 15 item 6: the slot of a holder that missed `repair_after_misses` (3) periods in a row has an
    /// open repair order; another storage node that rebuilt the slot's shards claims it with its own signed
    /// proof of the claim challenge, is paid the period and the bounty (the pay the holder forfeited, up to
    /// two periods), and holds the slot from then on: paid for its proofs, slashed for its misses. A claim
    /// before the order opens, without an order, by a holder of the deal, with a bad signature, copied under
    /// another key or stripped of its taker is refused and changes nothing; the record reloads.
    #[test]
    fn a_missed_slot_is_taken_over_by_the_node_whose_signed_proof_claims_its_repair_order() {
        use crate::types::storage_proof::Taker;
        let mut f = ThreeHolders::open(7);
        let supply = f.state.accountable_supply();
        let chain_id = f.params.chain_id;
        // A taker on the other shard, with no slot in the deal.
        let taker = keys_on(f.home, false)
            .find(|k| f.keys.iter().all(|h| h.public() != k.public()))
            .expect("one");
        let claim = |f: &ThreeHolders, key: &SecretKey, holder: u8, period: u64| {
            let (_, seed) = f.state.period_seed();
            crate::types::storage_proof::prove_claim(
                &f.terms,
                &seed,
                &f.id,
                holder,
                period,
                key,
                chain_id,
                |p| {
                    let (cid, bytes) = f.shards.get(usize::from(p)).cloned()?;
                    Some((cid, bytes, smt::list_prove(&f.leaves, usize::from(p))))
                },
            )
            .expect("every shard is here")
        };
        // Periods 0, 1 and 2 (windows 33..=48, 49..=64, 65..=80): holders 0 and 2 prove, holder 1 lost its
        // shards. Each miss adds a period's pay to the bounty, up to two.
        for (period, window) in [(0, 33), (1, 49), (2, 65)] {
            f.run_to(window);
            if period == 1 {
                let early = claim(&f, &taker, 1, 1);
                assert_eq!(
                    f.state.apply_proof(&early, window),
                    Err(ProofRefused::NoRepairOrder { holder: 1 }),
                    "one miss does not open the order yet"
                );
                assert_eq!(f.state.repair_orders().count(), 0);
            }
            for h in [0, 2] {
                f.state.apply_proof_tx(&f.prove(h), window).expect("proves");
            }
        }
        f.run_to(81);
        let order = f.state.proven(&f.id, 1);
        assert_eq!(
            (order.streak, order.bounty),
            (3, Amount(2 * 1_700)),
            "three misses in a row open the order, with two periods' pay as its bounty"
        );
        assert_eq!(
            f.state
                .repair_orders()
                .map(|(id, h, _)| (*id, h))
                .collect::<Vec<_>>(),
            vec![(f.id, 1)]
        );

        let root = f.state.root();
        let no_order = claim(&f, &taker, 0, 3);
        assert_eq!(
            f.state.apply_proof(&no_order, 81),
            Err(ProofRefused::NoRepairOrder { holder: 0 }),
            "slot 0 proved: nothing to take"
        );
        let by_holder = claim(&f, &f.keys[2], 1, 3);
        assert_eq!(
            f.state.apply_proof(&by_holder, 81),
            Err(ProofRefused::TakerHoldsShards),
            "holder 2 would hold two shards of a segment"
        );
        let mut forged = claim(&f, &taker, 1, 3);
        forged.taker = Some(Taker {
            key: SecretKey::dev("someone else").public(),
            ..forged.taker.clone().expect("set")
        });
        assert_eq!(
            f.state.apply_proof(&forged, 81),
            Err(ProofRefused::BadTakerSignature)
        );
        // A claim copied by a thief under its own key, or stripped of its taker, answers a challenge its key
        // (or no key) did not draw.
        let good = claim(&f, &taker, 1, 3);
        let mut stolen = good.clone();
        stolen.taker = Some(Taker::sign(&SecretKey::dev("thief"), chain_id, &f.id, 1, 3));
        let mut stripped = good.clone();
        stripped.taker = None;
        for copy in [stolen, stripped] {
            assert!(
                matches!(
                    f.state.apply_proof(&copy, 81),
                    Err(ProofRefused::Invalid(_) | ProofRefused::NotAClaim)
                ),
                "a copied claim is refused"
            );
        }
        assert_eq!(f.state.root(), root, "refusals change nothing");

        // The claim: the period's 1,700 and the 3,400 bounty, through a lock to the taker's shard.
        assert_eq!(StorageProof::decode(&good.encode()).as_ref(), Ok(&good));
        assert!(good.encode().len() <= crate::types::storage_proof::PROOF_BYTES_MAX);
        let escrow = f.state.deal(&f.id).expect("open").escrow_left;
        f.state.apply_proof(&good, 81).expect("the claim passes");
        let lock = f
            .state
            .payout_locks()
            .last()
            .cloned()
            .expect("a payout lock");
        assert_eq!(
            (lock.to, lock.amount),
            (Address::of(&taker.public()), Amount(5_100))
        );
        assert_eq!(
            f.state.deal(&f.id).map(|d| d.escrow_left),
            Some(Amount(escrow.0 - 5_100))
        );
        let taken = f.state.proven(&f.id, 1);
        assert_eq!(
            (
                taken.streak,
                taken.taker,
                taken.next,
                taken.passed,
                taken.missed
            ),
            (0, Some(taker.public()), 4, 1, 0)
        );
        assert_eq!(f.state.holder_key(&f.id, 1), Some(taker.public()));
        assert_eq!(f.state.repair_orders().count(), 0);
        // The claimed slot joins the taker's holder challenge from the next window on: a claim cannot redraw
        // the challenge of the window it is made in.
        assert_eq!(f.state.holder_due(&taker.public(), 81, &hash_of(80)), None);
        let mut next = f.state.clone();
        for h in 82..=97 {
            next.begin_block(h, &hash_of(h - 1));
        }
        let due = next
            .holder_due(&taker.public(), 98, &hash_of(97))
            .expect("the taker proves the slot from the next window");
        assert_eq!(due.slots, vec![(f.id, 1, 4)]);
        assert_eq!(
            f.state.holder_due(&f.keys[1].public(), 81, &hash_of(80)),
            None,
            "the old holder has no slot left to prove"
        );
        assert_eq!(f.state.accountable_supply(), supply, "supply is conserved");

        // Period 4 (window 97..=112): holders 0 and 2 prove, the taker does not: the slash is the taker's.
        f.run_to(97);
        for h in [0, 2] {
            f.state.apply_proof_tx(&f.prove(h), 97).expect("proves");
        }
        let holder1_stake = f.state.account(&Address::of(&f.keys[1].public())).cloned();
        f.run_to(113);
        assert_eq!(
            f.state
                .slash_locks()
                .iter()
                .map(|l| l.to)
                .collect::<Vec<_>>(),
            vec![Address::of(&taker.public())],
            "the taker, on the other shard, is slashed"
        );
        assert_eq!(
            f.state.account(&Address::of(&f.keys[1].public())).cloned(),
            holder1_stake,
            "the old holder is not slashed for the taker's miss"
        );
        let reopened = f.state.proven(&f.id, 1);
        assert_eq!(
            (reopened.streak, reopened.bounty, reopened.taker),
            (1, Amount(1_700), Some(taker.public()))
        );
        let (mut loaded, _) = reload(&mut f.state);
        assert_eq!(loaded.root(), f.state.root());
        assert_eq!(loaded.proven(&f.id, 1), reopened);
        assert_eq!(f.state.accountable_supply(), supply);
    }

    /// Review finding (helper 30, 2): when every block of a proof window had its proof section full, honest
    /// proofs may have been kept out by whoever filled them: the window's misses are recorded and unpaid,
    /// but not slashed and open no repair order. A window with one block that was not full slashes as usual.
    #[test]
    fn misses_in_a_window_whose_blocks_were_all_full_are_not_slashed() {
        let mut f = ThreeHolders::open(5);
        let supply = f.state.accountable_supply();
        let full = |f: &mut ThreeHolders, h: u64| {
            // The block carries as many proofs as a block may (the one counted here is the last).
            f.state.block_proofs = (crate::block::BLOCK_PROOFS_MAX - 1, 0, false);
            f.state.count_block_proof(1_000, h);
        };
        // Period 0's window is 33..=48: holder 0 proves in its first block, and every block is full.
        f.run_to(33);
        f.state.apply_proof_tx(&f.prove(0), 33).expect("proves");
        full(&mut f, 33);
        for h in 34..=48 {
            f.run_to(h);
            full(&mut f, h);
        }
        assert_eq!(
            f.state.congested(),
            (32, 16),
            "all 16 blocks of period 0's window"
        );
        let burned = f.state.atomix_totals().burned;
        f.run_to(49);
        for h in [1, 2] {
            let p = f.state.proven(&f.id, h);
            assert_eq!(
                (p.next, p.missed, p.slashed, p.streak),
                (1, 1, Amount::ZERO, 0),
                "holder {h}: missed, unpaid, not slashed"
            );
        }
        assert!(f.state.slash_locks().is_empty());
        assert_eq!(f.state.atomix_totals().burned, burned);
        let (mut loaded, _) = reload(&mut f.state);
        assert_eq!(loaded.root(), f.state.root());
        assert_eq!(loaded.congested(), (32, 16));
        // Period 1's window (49..=64) has 15 full blocks of 16: its misses are slashed and open orders.
        for h in 50..=64 {
            f.run_to(h);
            full(&mut f, h);
        }
        assert_eq!(f.state.congested(), (48, 15));
        f.run_to(65);
        for h in 0..3 {
            let p = f.state.proven(&f.id, h);
            assert_eq!(
                (p.next, p.slashed.0 > 0, p.streak),
                (2, true, 1),
                "holder {h}"
            );
        }
        assert_eq!(f.state.accountable_supply(), supply);
    }

    #[test]
    fn storage_proofs_pay_each_holder_once_per_period_and_anything_else_is_refused() {
        use crate::types::storage_proof::{self, ProofError, Sample};
        let ThreeHolders {
            mut state,
            alice,
            me,
            keys,
            terms,
            id,
            shards,
            leaves,
            home,
            ..
        } = ThreeHolders::open(3);
        let escrow = terms.escrow().expect("fits");
        // Each holder keeps 1,700 bytes at 1 GiB-price: 1,700 base units a period.
        assert_eq!(terms.per_period(), Ok(vec![Amount(1_700); 3]));
        let supply = state.accountable_supply();
        let shard = |_: &Hash, _: u8, p: u16| {
            let (cid, bytes) = shards.get(usize::from(p)).cloned()?;
            Some((cid, bytes, smt::list_prove(&leaves, usize::from(p))))
        };
        // Holder `holder`'s holder proof (its key's one slot here) for a block at `height`.
        let prove = |state: &State, holder: u8, height: u64| {
            let key = keys[usize::from(holder)].public();
            let due = state
                .holder_due(&key, height, &hash_of(height - 1))
                .expect("a slot to prove");
            storage_proof::answer_holder(due.drawn, &key, due.end, shard)
                .expect("every shard is here")
        };
        let apply = |state: &mut State, proof: &HolderProof, height: u64| {
            state.apply_proof_tx(&ProofTx::Holder(proof.clone()), height)
        };
        // Period 0 covers heights 17..=32; its seed is the hash of block 32, and its window heights 33..=48.
        for h in 6..=33 {
            state.begin_block(h, &hash_of(h - 1));
        }
        assert_eq!(state.period_seed(), (32, hash_of(32)));
        let local = Address::of(&keys[0].public());
        let proof = prove(&state, 0, 33);
        assert_eq!(proof.samples.len(), 2, "both of its shards are drawn");
        let tx = ProofTx::Holder(proof.clone());
        assert!(tx.encode().len() <= storage_proof::PROOF_BYTES_MAX);
        assert_eq!(ProofTx::decode(&tx.encode()).as_ref(), Ok(&tx));
        apply(&mut state, &proof, 33).expect("a true proof pays");
        assert_eq!(
            state.account(&local).map(|a| a.balance),
            Some(Amount(1_700))
        );
        assert_eq!(
            apply(&mut state, &proof, 34),
            Err(ProofRefused::AllProven { end: 32 }),
            "a replay is refused"
        );
        // The holder on the other shard is paid through an Atomix lock.
        let remote = prove(&state, 2, 34);
        apply(&mut state, &remote, 34).expect("pays through a lock");
        let lock = state
            .payout_locks()
            .last()
            .cloned()
            .expect("a lock for the other shard");
        assert_eq!(lock.amount, Amount(1_700));
        assert_eq!(lock.to, Address::of(&keys[2].public()));
        assert!(state.is_locked(&holder_payout_id(&keys[2].public(), home, 32)));
        assert_eq!(state.accountable_supply(), supply, "supply is conserved");

        // Everything wrong is refused and changes nothing.
        let root = state.root();
        let good = prove(&state, 1, 35);
        let mut wrong_piece = good.clone();
        wrong_piece.samples[0].sample.piece.piece[0] ^= 1;
        let mut forged_path = good.clone();
        forged_path.samples[1].sample.path.siblings[0][0] ^= 1;
        let mut swapped = good.clone();
        swapped.samples.swap(0, 1);
        let mut short = good.clone();
        short.samples.pop();
        let mut foreign = good.clone();
        let other_shard = Sample {
            cid: vec![9; 4],
            ..foreign.samples[0].sample.clone()
        };
        foreign.samples[0].sample = other_shard;
        let mut other_period = good.clone();
        other_period.end = 48;
        let mut other_deal = good.clone();
        other_deal.samples[0].deal = [7; 32];
        let mut other_holder = good.clone();
        other_holder.key = keys[2].public();
        let stale_seed = {
            let key = keys[1].public();
            let due = state.holder_due(&key, 35, &hash_of(34)).expect("due");
            let slots = [storage_proof::HolderSlot::new(id, 1, &terms)];
            let drawn = storage_proof::holder_challenge(&slots, &hash_of(16), &key, due.end);
            storage_proof::answer_holder(drawn, &key, due.end, shard).expect("here")
        };
        for (what, bad) in [
            ("a wrong piece", &wrong_piece),
            ("a forged path", &forged_path),
            ("samples out of order", &swapped),
            ("a sample missing", &short),
            ("another shard's CID", &foreign),
            ("another period", &other_period),
            ("another deal", &other_deal),
            ("another holder's answer", &other_holder),
        ] {
            assert!(apply(&mut state, bad, 35).is_err(), "{what} is refused");
        }
        assert!(matches!(
            apply(&mut state, &wrong_piece, 35),
            Err(ProofRefused::Invalid(ProofError::Piece { .. }))
        ));
        assert!(matches!(
            apply(&mut state, &forged_path, 35),
            Err(ProofRefused::Invalid(ProofError::NotTheDealsShard(_)))
        ));
        assert!(matches!(
            apply(&mut state, &other_deal, 35),
            Err(ProofRefused::Invalid(ProofError::WrongSlot { index: 0 }))
        ));
        if stale_seed != good {
            assert!(
                apply(&mut state, &stale_seed, 35).is_err(),
                "an answer to another seed is refused"
            );
        }
        // A slot proof without a taker is no way around the holder proof.
        let (_, seed) = state.period_seed();
        let slot_proof =
            storage_proof::prove(&terms, &seed, &id, 1, 0, |p| shard(&id, 1, p)).expect("here");
        assert_eq!(
            state.apply_proof(&slot_proof, 35),
            Err(ProofRefused::NotAClaim)
        );
        assert_eq!(state.root(), root);
        // A holder that lost a shard cannot build its proof at all.
        let key = keys[1].public();
        let due = state.holder_due(&key, 35, &hash_of(34)).expect("due");
        assert!(
            storage_proof::answer_holder(due.drawn, &key, due.end, |d, h, p| shard(d, h, p)
                .filter(|_| p != 1))
            .is_err()
        );

        // Holder 1 never proves period 0; its window closes at height 48.
        for h in 34..=49 {
            state.begin_block(h, &hash_of(h - 1));
        }
        assert!(matches!(
            apply(&mut state, &good, 49),
            Err(ProofRefused::HolderNotProvable {
                end: 32,
                provable: Some(48),
                ..
            })
        ));
        // Periods 1 and 2: every holder proves.
        for period in 1..=2u64 {
            let h = 33 + 16 * period;
            for hh in state.period_seed().0 + 2..=h {
                state.begin_block(hh, &hash_of(hh - 1));
            }
            for holder in 0..3 {
                let p = prove(&state, holder, h);
                apply(&mut state, &p, h).expect("pays");
            }
        }
        let record = state.deal(&id).cloned().expect("kept");
        assert_eq!(record.paid, Amount(1_700 * 8));
        assert_eq!(record.escrow_left, Amount(1_700));
        assert_eq!(
            state.proven(&id, 1),
            Proven {
                next: 3,
                passed: 2,
                missed: 1,
                slashed: Amount(4 * 1_700),
                streak: 0,
                bounty: Amount::ZERO,
                taker: None,
            },
            "its missed period 0 is recorded and slashed (it has no stake to take here), and its proof of \
             period 1 closed the repair order the miss opened"
        );
        assert_eq!(state.accountable_supply(), supply);

        // A restart keeps the proofs, the seed and the root.
        let (mut loaded, _) = reload(&mut state);
        assert_eq!(loaded.root(), state.root());
        assert_eq!(loaded.proven(&id, 1), state.proven(&id, 1));
        assert_eq!(loaded.period_seed(), state.period_seed());
        assert_eq!(loaded.terms(&id), Some(&terms));

        // The deal ran to height 64; after its last window (height 80) the missed pay goes back.
        let end = tx_until(&alice, 1, TxKind::EndDeal { deal: id }, 100);
        assert!(matches!(
            state.apply(&end, 80),
            Err(TxError::DealEnded(DealEndError::Ending { .. }))
        ));
        let before = state.account(&me).expect("funded").balance;
        state.apply(&end, 81).expect("settles");
        assert_eq!(
            state.account(&me).expect("funded").balance,
            Amount(before.0 + 1_700 - 1_000)
        );
        let record = state.deal(&id).cloned().expect("kept");
        assert_eq!(record.escrow_left, Amount::ZERO);
        assert_eq!(
            record.paid.0 + record.refunded.0,
            escrow.0,
            "every unit of escrow was paid or refunded"
        );
        assert_eq!(state.accountable_supply(), supply);
        assert_eq!(
            state.apply(&tx_until(&alice, 2, TxKind::EndDeal { deal: id }, 100), 82),
            Err(TxError::DealEnded(DealEndError::Settled))
        );
    }

    #[test]
    fn a_deal_the_owner_cannot_pay_for_is_refused() {
        let (mut state, _) = setup();
        let poor = SecretKey::dev("poor");
        state.set_account(
            Address::of(&poor.public()),
            Account {
                balance: Amount(50_000),
                ..Account::default()
            },
        );
        let root = state.root();
        assert!(matches!(
            state.apply(&deal_tx(&poor, 0, 6, 3), 1),
            Err(TxError::Overspend { .. })
        ));
        assert_eq!(state.root(), root);
        assert_eq!(state.deals().count(), 0);
    }

    #[test]
    fn proofs_of_accounts_against_the_state_root() {
        let (mut state, alice) = setup();
        state.apply(&pay(&alice, 0, "bob", 1), 1).expect("valid");
        let root = state.root();
        let me = Address::of(&alice.public());
        let account = state.account(&me).cloned().expect("exists");
        assert_eq!(
            smt::verify(&root, &account_key(&me), &state.prove(&me)),
            Ok(Some(account.value_hash()))
        );
        let nobody = Address::of(&SecretKey::dev("nobody").public());
        assert_eq!(
            smt::verify(&root, &account_key(&nobody), &state.prove(&nobody)),
            Ok(None)
        );
    }

    #[test]
    fn persisted_state_reloads_with_the_same_root() {
        let (mut state, alice) = setup();
        let mut store = MemStore::new();
        let mut batch = WriteBatch::default();
        state.persist_into(&mut batch);
        store.write(batch).expect("in-memory");
        state.apply(&pay(&alice, 0, "bob", 1), 1).expect("valid");
        let mut batch = WriteBatch::default();
        state.persist_into(&mut batch);
        store.write(batch).expect("in-memory");
        let mut loaded = State::load(params(), SHARD, &store).expect("loads");
        assert_eq!(loaded.root(), state.root());
        assert_eq!(loaded.total_supply(), state.total_supply());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Fee and nonce rules under random traffic: a transaction applies iff its nonce is the account's
        /// next one and the balance covers amount + fee; then the nonce moves by one and the fee lands in the
        /// pool; otherwise nothing changes. Supply never changes.
        #[test]
        fn fee_and_nonce_rules_hold_under_random_traffic(
            ops in proptest::collection::vec((0usize..3, 0usize..4, 0u64..700, -1i64..=1, 0u64..3000), 1..25),
        ) {
            let senders: Vec<SecretKey> = (0..3).map(|i| SecretKey::dev(&format!("s{i}"))).collect();
            let mut state = State::new(params(), SHARD);
            for k in &senders {
                state.set_account(Address::of(&k.public()), Account { balance: Amount::from_iost(1000).expect("small"), ..Account::default() });
            }
            let supply = state.total_supply();
            let mut fees = 0u64;
            for (height, (who, to, iost, nonce_skew, fee)) in ops.into_iter().enumerate() {
                let key = &senders[who];
                let me = Address::of(&key.public());
                let before = state.account(&me).cloned().unwrap_or_default();
                let nonce = before.nonce.saturating_add_signed(nonce_skew);
                let to = Address::of(&SecretKey::dev(&format!("r{to}")).public());
                let amount = Amount::from_iost(iost).expect("small");
                let kind = TxKind::Transfer { to, amount: Amount(amount.0.max(1)) };
                let stx = Transaction { chain_id: params().chain_id, sender: key.public(), nonce, fee: Amount(fee), expiry_height: 1_000, kind }.sign(key);
                let root = state.root();
                let result = state.apply(&stx, height as u64 + 1);
                let affordable = before.balance.0 >= amount.0.max(1) + fee;
                let should_apply = nonce == before.nonce && fee >= 1_000 && affordable;
                proptest::prop_assert_eq!(result.is_ok(), should_apply, "{:?}", result);
                match result {
                    Ok(receipt) => {
                        fees += fee;
                        proptest::prop_assert_eq!(receipt.nonce_after, before.nonce + 1);
                    }
                    Err(_) => proptest::prop_assert_eq!(state.root(), root),
                }
                proptest::prop_assert_eq!(state.total_supply(), supply);
                proptest::prop_assert_eq!(state.fee_pool(), Amount(fees));
            }
        }
    }

    #[test]
    fn volumes_take_each_version_once_in_order_and_survive_a_restart() {
        let (mut state, alice) = setup();
        let bob = SecretKey::dev("bob");
        state.set_account(
            Address::of(&bob.public()),
            Account {
                balance: Amount::from_iost(10).expect("small"),
                ..Account::default()
            },
        );
        let publish = |key: &SecretKey, nonce, name: &str, replaces, root: u8| {
            tx(
                key,
                nonce,
                TxKind::PublishVolume {
                    name: name.into(),
                    replaces,
                    root: vec![root; 40],
                },
            )
        };
        let site = volume_id(&Address::of(&alice.public()), "site");
        assert_eq!(state.volume_head(&site), 0);
        state
            .apply(&publish(&alice, 0, "site", 0, 1), 3)
            .expect("creates");
        state
            .apply(&publish(&alice, 1, "site", 1, 2), 4)
            .expect("version 2");
        // A second writer that also saw version 1 is refused, and nothing changes (not even its nonce).
        let root = state.root();
        assert_eq!(
            state.apply(&publish(&alice, 2, "site", 1, 9), 5),
            Err(TxError::VolumeVersion {
                head: 2,
                replaces: 1
            })
        );
        assert_eq!(
            state.apply(&publish(&alice, 2, "site", 0, 9), 5),
            Err(TxError::VolumeVersion {
                head: 2,
                replaces: 0
            })
        );
        // A version is state kept for ever: it pays for its bytes.
        let cheap = Transaction {
            chain_id: params().chain_id,
            sender: alice.public(),
            nonce: 2,
            fee: Amount(1_000),
            expiry_height: 50,
            kind: TxKind::PublishVolume {
                name: "site".into(),
                replaces: 2,
                root: vec![1; 200],
            },
        };
        assert_eq!(
            state.apply(&cheap.sign(&alice), 5),
            Err(TxError::FeeTooLow {
                min: Amount(3_000),
                got: Amount(1_000)
            })
        );
        assert_eq!(state.root(), root);
        // Bob's "site" is his own volume: he cannot move alice's.
        state
            .apply(&publish(&bob, 0, "site", 0, 7), 5)
            .expect("bob's own");
        assert_eq!(state.volume_head(&site), 2);
        let versions: Vec<(u64, u64, u8)> = state
            .volume_versions(&site, 0)
            .map(|(n, v)| (n, v.height, v.root[0]))
            .collect();
        assert_eq!(versions, vec![(1, 3, 1), (2, 4, 2)]);
        assert_eq!(state.volume_versions(&site, 1).count(), 1);
        assert_eq!(state.volume_versions(&site, u64::MAX).count(), 0);
        // Every version is a leaf of the state root, and a restarted node has the same root and versions.
        let root = state.root();
        let proof = state.prove_volume_version(&site, 2);
        let leaf = state.volumes[&(site, 2)].value_hash(&site, 2);
        assert_eq!(
            smt::verify(&root, &version_key(&site, 2), &proof),
            Ok(Some(leaf))
        );
        assert_eq!(
            smt::verify(
                &root,
                &version_key(&site, 3),
                &state.prove_volume_version(&site, 3)
            ),
            Ok(None)
        );
        let (mut loaded, _) = reload(&mut state);
        assert_eq!(loaded.root(), root);
        assert_eq!(loaded.volume_head(&site), 2);
        assert_eq!(
            loaded
                .apply(&publish(&alice, 2, "site", 2, 3), 6)
                .map(|_| ()),
            Ok(())
        );
        assert_eq!(loaded.volume_head(&site), 3);
    }

    #[test]
    fn account_decoding_rejects_garbage() {
        let a = Account {
            validator_key: Some(bls::SecretKey::dev("k").public()),
            ..Account::default()
        };
        let bytes = a.encode();
        assert_eq!(Account::decode(&bytes), Ok(a));
        for cut in 0..bytes.len() {
            assert!(Account::decode(&bytes[..cut]).is_err());
        }
    }
}
