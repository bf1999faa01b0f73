//! One shard's ledger as the BFT replica sees it: build a block, check a block, commit a block.
//!
//! [`App`] is the interface between consensus and execution; [`ShardApp`] implements it over [`State`], a
//! bounded mempool and a [`Store`] where every commit lands as one atomic batch (state changes, the block,
//! its certificate and the new tip), so a replica restarted on its store resumes exactly at its last commit.
//!
//! The module is split along its seams: `block_log.rs` (what a commit persists, and reading it back),
//! `mempool.rs` (transactions waiting for a block), `inbound_pool.rs` (Atomix inbounds waiting for a block,
//! and the outbound ones for other shards) and `proofs.rs` (SPV proofs served). [`ShardApp`] is defined here,
//! with block building, execution and the [`App`] implementation; each seam adds its methods.

mod block_log;
mod inbound_pool;
mod mempool;
mod proof_pool;
pub use proof_pool::{POOL_PROOFS_MAX, PoolError};
mod proofs;

use crate::ids::ShardId;
use block_log::KEY_TX_PREFIX;
pub(crate) use block_log::{KEY_TIP, load_committed, load_tip, put_commit};

use crate::address::Address;
use crate::atomix::{BLOCK_INBOUND_BYTES_MAX, BLOCK_INBOUND_MAX, Certifier};
use crate::block::{BLOCK_PROOF_BYTES_MAX, BLOCK_PROOFS_MAX, BLOCK_TXS_MAX, Block, BlockHeader};
use crate::crypto::Hash;
use crate::genesis::Genesis;
use crate::smt::list_root;
use crate::state::{ChainParams, Receipt, State};
use crate::store::{Store, WriteBatch};
use crate::tx::SignedTransaction;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

pub const MEMPOOL_TXS_MAX: usize = 10_000;
/// Transactions one sender may have pending: a nonce further ahead of its account is refused, so that no
/// sender can take more than this share of the mempool.
pub const PENDING_PER_SENDER_MAX: u64 = 64;
/// How far ahead of the next height a transaction may set its expiry (about 6 days of 0.5 s blocks): a
/// transaction nobody includes leaves the mempool by then.
pub const EXPIRY_WINDOW_MAX: u64 = 1_000_000;
const CHECKED_STATES_MAX: usize = 8;
const VERIFIED_TXS_MAX: usize = 4 * MEMPOOL_TXS_MAX;
/// Atomix inbounds waiting to be committed, at most.
pub const INBOUND_POOL_MAX: usize = 1_024;
/// Bytes of Atomix inbounds waiting to be committed, at most (each carries proofs and a certificate).
pub const INBOUND_POOL_BYTES_MAX: usize = 32 << 20;
const CERTIFIED_HEADERS_MAX: usize = 4 * INBOUND_POOL_MAX;

pub use crate::bft::{App, BlockError, LedgerError, Tip};

pub fn genesis_header(params: &ChainParams, shard: ShardId, state_root: Hash) -> BlockHeader {
    BlockHeader {
        chain_id: params.chain_id,
        shard,
        height: 0,
        parent: [0; 32],
        state_root,
        transactions_root: list_root(&[]),
        receipts_root: list_root(&[]),
    }
}

/// The checks every ledger makes of a block's header before executing it: this chain, this shard, the next
/// height, on the tip.
pub(crate) fn check_header(
    h: &BlockHeader,
    chain_id: u32,
    shard: ShardId,
    tip: Tip,
) -> Result<(), BlockError> {
    if h.chain_id != chain_id {
        return Err(BlockError::WrongChain {
            expected: chain_id,
            got: h.chain_id,
        });
    }
    if h.shard != shard {
        return Err(BlockError::WrongShard {
            expected: shard,
            got: h.shard,
        });
    }
    if h.height != tip.height + 1 {
        return Err(BlockError::WrongHeight {
            expected: tip.height + 1,
            got: h.height,
        });
    }
    if h.parent != tip.hash {
        return Err(BlockError::WrongParent);
    }
    Ok(())
}

/// Checks the roots a header commits to against the execution of its block on the replica's own state:
/// the state root after execution and the root of the receipts' hashes (empty on the beacon, which has no
/// transactions). Shared by the beacon and the shards so that both reject a block with the same error.
pub(crate) fn check_roots(
    h: &BlockHeader,
    state_root: Hash,
    receipt_hashes: &[Hash],
) -> Result<(), BlockError> {
    if state_root != h.state_root {
        return Err(BlockError::StateRoot);
    }
    if list_root(receipt_hashes) != h.receipts_root {
        return Err(BlockError::ReceiptsRoot);
    }
    Ok(())
}

/// The states that blocks checked on top of the tip lead to, by [`Block::digest`] (at most
/// `CHECKED_STATES_MAX`), so that the block a replica checked when it was proposed is not executed again when
/// it is committed. Keyed by the whole encoding, not the block hash: the hash covers the header only, and a
/// block with a known header and a swapped body must be executed (and refused), not answered from here.
#[derive(Debug)]
pub(crate) struct CheckedStates<T> {
    entries: Vec<(Hash, T)>,
}

impl<T> CheckedStates<T> {
    pub(crate) fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    pub(crate) fn contains(&self, digest: &Hash) -> bool {
        self.entries.iter().any(|(d, _)| d == digest)
    }

    pub(crate) fn remember(&mut self, digest: Hash, state: T) {
        if self.contains(&digest) {
            return;
        }
        if self.entries.len() >= CHECKED_STATES_MAX {
            self.entries.remove(0);
        }
        self.entries.push((digest, state));
    }

    /// The state `block` leads to, taken out, if it was checked on `tip` (a state computed on another tip is
    /// never reused).
    pub(crate) fn take(&mut self, block: &Block, tip: Tip) -> Option<T> {
        if block.header.parent != tip.hash || block.header.height != tip.height + 1 {
            return None;
        }
        let digest = block.digest();
        let i = self.entries.iter().position(|(d, _)| *d == digest)?;
        Some(self.entries.swap_remove(i).1)
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

pub struct ShardApp<St: Store> {
    state: State,
    store: St,
    tip: Tip,
    mempool: BTreeMap<(Address, u64), SignedTransaction>,
    /// Ids of signed transactions whose signature this node verified (see `remember_verified`).
    verified: HashSet<Hash>,
    checked: CheckedStates<State>,
    pub block_txs_max: usize,
    /// Checks other shards' certificates, for Atomix inbounds; without one, inbounds are refused.
    certifier: Option<Arc<dyn Certifier>>,
    /// Relayed Atomix inbounds not committed yet, by [`Inbound::content_id`].
    inbound: inbound_pool::InboundPool,
    /// Other shards' headers whose certificate this node checked, each with that certificate's bytes
    /// (`inbound_pool::certified_key`).
    certified_headers: HashSet<Hash>,
    /// Storage proofs waiting for a block.
    proofs: proof_pool::ProofPool,
    /// The shard's accountable supply, which no block changes (the supply check of every block).
    supply: u128,
}

impl<St: Store> ShardApp<St> {
    /// Opens the shard on `store`: resumes from the persisted tip if there is one, else writes genesis.
    pub fn open(genesis: &Genesis, shard: ShardId, mut store: St) -> Result<Self, LedgerError> {
        let params = genesis.params.clone();
        if let Some(tip) = load_tip(&store)? {
            let state = State::load(params, shard, &store)?;
            return Ok(Self::from_parts(state, store, tip));
        }
        let mut state = genesis.shard_state(shard);
        let hash = genesis_header(&params, shard, state.root()).hash();
        let mut batch = WriteBatch::default();
        state.persist_into(&mut batch);
        batch.put(KEY_TIP, [0u64.to_be_bytes().as_slice(), &hash].concat());
        store.write(batch)?;
        Ok(Self::from_parts(state, store, Tip { height: 0, hash }))
    }

    fn from_parts(state: State, store: St, tip: Tip) -> Self {
        Self {
            supply: state.accountable_supply(),
            state,
            store,
            tip,
            mempool: BTreeMap::new(),
            verified: HashSet::new(),
            checked: CheckedStates::new(),
            block_txs_max: 64,
            certifier: None,
            inbound: inbound_pool::InboundPool::default(),
            certified_headers: HashSet::new(),
            proofs: proof_pool::ProofPool::default(),
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn into_store(self) -> St {
        self.store
    }

    /// Builds a block from `transactions` on top of the tip, skipping the ones that do not apply.
    pub fn build_block(
        &mut self,
        transactions: impl IntoIterator<Item = SignedTransaction>,
    ) -> Block {
        let height = self.tip.height + 1;
        let mut state = self.state.clone();
        state.begin_block(height, &self.tip.hash);
        let mut included = Vec::new();
        let mut receipts: Vec<Receipt> = Vec::new();
        let mut bytes = 0usize;
        for tx in transactions {
            if included.len() >= self.block_txs_max.min(BLOCK_TXS_MAX) {
                break;
            }
            let len = tx.encode().len();
            if bytes + len > crate::block::BLOCK_TX_BYTES_MAX {
                continue;
            }
            let verified = self.verified.contains(&tx.id());
            if let Ok(receipt) = state.apply_checked(&tx, height, verified) {
                bytes += len;
                included.push(tx);
                receipts.push(receipt);
            }
        }
        let inbound = self.take_inbound(&mut state);
        let proofs = self.proofs.take(&mut state, height);
        let params = state.params();
        let header = BlockHeader {
            chain_id: params.chain_id,
            shard: state.shard(),
            height,
            parent: self.tip.hash,
            state_root: state.root(),
            transactions_root: Block::body_root(&included, &inbound, &proofs),
            receipts_root: list_root(&receipts.iter().map(Receipt::hash).collect::<Vec<_>>()),
        };
        let block = Block {
            header,
            transactions: included,
            links: Vec::new(),
            inbound,
            evidence: Vec::new(),
            proofs,
        };
        self.checked.remember(block.digest(), state);
        block
    }

    /// Executes `block` on a copy of the state. `trust_inbound` skips the certificate checks of its Atomix
    /// inbounds: for a block this shard's own committee has already finalised, whose honest majority
    /// checked them.
    fn execute(&mut self, block: &Block, trust_inbound: bool) -> Result<State, BlockError> {
        let h = &block.header;
        check_header(
            h,
            self.state.params().chain_id,
            self.state.shard(),
            self.tip,
        )?;
        if block.transactions.len() > BLOCK_TXS_MAX {
            return Err(BlockError::TooManyTransactions(block.transactions.len()));
        }
        if !block.links.is_empty() || !block.evidence.is_empty() {
            return Err(BlockError::NotOnShards);
        }
        let inbound_bytes: usize = block.inbound.iter().map(|i| i.encode().len()).sum();
        if block.inbound.len() > BLOCK_INBOUND_MAX || inbound_bytes > BLOCK_INBOUND_BYTES_MAX {
            return Err(BlockError::TooManyInbounds(block.inbound.len()));
        }
        let proof_bytes: usize = block.proofs.iter().map(|p| p.encode().len()).sum();
        if block.proofs.len() > BLOCK_PROOFS_MAX || proof_bytes > BLOCK_PROOF_BYTES_MAX {
            return Err(BlockError::TooManyProofs(block.proofs.len()));
        }
        if Block::body_root(&block.transactions, &block.inbound, &block.proofs)
            != h.transactions_root
        {
            return Err(BlockError::TransactionsRoot);
        }
        let mut state = self.state.clone();
        state.begin_block(h.height, &h.parent);
        let mut receipts = Vec::with_capacity(block.transactions.len());
        for (index, tx) in block.transactions.iter().enumerate() {
            let verified = self.verified.contains(&tx.id());
            let receipt = state
                .apply_checked(tx, h.height, verified)
                .map_err(|error| BlockError::Transaction { index, error })?;
            receipts.push(receipt);
        }
        for (index, inbound) in block.inbound.iter().enumerate() {
            if !trust_inbound {
                self.certify(inbound).map_err(|e| BlockError::Inbound {
                    index,
                    error: e.into(),
                })?;
            }
            state
                .apply_inbound(inbound)
                .map_err(|error| BlockError::Inbound { index, error })?;
        }
        for (index, proof) in block.proofs.iter().enumerate() {
            state
                .apply_proof_tx(proof, h.height)
                .map_err(|error| BlockError::Proof { index, error })?;
        }
        // The supply check of every block: nothing mints or burns.
        let (before, after) = (self.supply, state.accountable_supply());
        if before != after {
            return Err(BlockError::Supply { before, after });
        }
        let receipt_hashes: Vec<Hash> = receipts.iter().map(Receipt::hash).collect();
        check_roots(h, state.root(), &receipt_hashes)?;
        Ok(state)
    }
}

impl<St: Store> App for ShardApp<St> {
    fn tip(&self) -> Tip {
        self.tip
    }

    fn propose(&mut self) -> Block {
        let candidates: Vec<SignedTransaction> = self.mempool.values().cloned().collect();
        self.build_block(candidates)
    }

    fn check(&mut self, block: &Block) -> Result<(), BlockError> {
        let digest = block.digest();
        if self.checked.contains(&digest) {
            return Ok(());
        }
        let state = self.execute(block, false)?;
        self.checked.remember(digest, state);
        Ok(())
    }

    fn check_finalised(&mut self, block: &Block) -> Result<(), BlockError> {
        let digest = block.digest();
        if self.checked.contains(&digest) {
            return Ok(());
        }
        let state = self.execute(block, true)?;
        self.checked.remember(digest, state);
        Ok(())
    }

    fn commit(&mut self, block: &Block, certificate: Vec<u8>) -> Result<(), LedgerError> {
        let hash = block.hash();
        let mut state = match self.checked.take(block, self.tip) {
            Some(state) => state,
            None => self.execute(block, true)?,
        };
        let height = block.header.height;
        let mut batch = WriteBatch::default();
        state.persist_into(&mut batch);
        for tx in &block.transactions {
            batch.put([KEY_TX_PREFIX, &tx.id()].concat(), height.to_be_bytes());
        }
        // A payout to a holder of another shard is an Atomix lock like a transfer's.
        block_log::put_payouts(&mut batch, height, state.payout_locks());
        block_log::put_slashes(&mut batch, height, state.slash_locks());
        put_commit(&mut batch, block, certificate);
        self.store.write(batch)?;
        self.state = state;
        self.tip = Tip { height, hash };
        self.checked.clear();
        for tx in &block.transactions {
            self.verified.remove(&tx.id());
        }
        let state = &self.state;
        self.mempool.retain(|(sender, nonce), tx| {
            *nonce >= state.account(sender).map_or(0, |a| a.nonce) && tx.tx.expiry_height > height
        });
        self.inbound
            .retain(|i| i.locks.iter().any(|(l, _)| !state.is_committed(&l.tx_id)));
        self.proofs.prune(state, height + 1, &hash);
        Ok(())
    }

    fn store(&mut self) -> &mut dyn Store {
        &mut self.store
    }

    fn store_ref(&self) -> &dyn Store {
        &self.store
    }

    fn committed(&self, height: u64) -> Option<(Block, Vec<u8>)> {
        load_committed(&self.store, height)
    }
}

#[cfg(test)]
mod tests;
