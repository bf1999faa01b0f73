//! One shard's ledger as the BFT replica sees it: build a block, check a block, commit a block.
//!
//! [`App`] is the interface between consensus and execution; [`ShardApp`] implements it over [`State`], a
//! bounded mempool and a [`Store`] where every commit lands as one atomic batch (state changes, the block,
//! its certificate and the new tip), so a replica restarted on its store resumes exactly at its last commit.

use crate::address::ShardId;
use crate::address::{Address, shard_of};
use crate::amount::Amount;
use crate::atomix::{
    BLOCK_INBOUND_BYTES_MAX, BLOCK_INBOUND_MAX, Certifier, CertifyError, Inbound, InboundError,
    Lock,
};
use crate::bft::{Bls, QuorumCertificate};
use crate::block::{BLOCK_TXS_MAX, Block, BlockHeader};
use crate::codec::Reader;
use crate::crypto::Hash;
use crate::genesis::Genesis;
use crate::smt;
use crate::smt::{list_prove, list_root};
use crate::state::{ChainParams, Receipt, State};
use crate::store::{Store, StoreError, WriteBatch};
use crate::tx::{SignedTransaction, TxError, TxKind};
use crate::types::proof::{AccountProof, CertifiedHeader, TxProof};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

pub(crate) const KEY_TIP: &[u8] = b"chain/tip";
const KEY_BLOCK_PREFIX: &[u8] = b"chain/block/";
const KEY_CERT_PREFIX: &[u8] = b"chain/cert/";
/// `chain/tx/<id>` -> the height of the committed block that holds the transaction (for proofs).
const KEY_TX_PREFIX: &[u8] = b"chain/tx/";
pub const MEMPOOL_TXS_MAX: usize = 10_000;
const CHECKED_STATES_MAX: usize = 8;
const VERIFIED_TXS_MAX: usize = 4 * MEMPOOL_TXS_MAX;
/// Atomix inbounds waiting to be committed, at most.
pub const INBOUND_POOL_MAX: usize = 1_024;
const CERTIFIED_HEADERS_MAX: usize = 4 * INBOUND_POOL_MAX;

pub use crate::bft::{App, BlockError, LedgerError};

pub fn genesis_header(params: &ChainParams, shard: u16, state_root: Hash) -> BlockHeader {
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
    shard: u16,
    tip: (u64, Hash),
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
    if h.height != tip.0 + 1 {
        return Err(BlockError::WrongHeight {
            expected: tip.0 + 1,
            got: h.height,
        });
    }
    if h.parent != tip.1 {
        return Err(BlockError::WrongParent);
    }
    Ok(())
}

/// The states that blocks checked on top of the tip lead to, by block hash (at most `CHECKED_STATES_MAX`), so
/// that the block a replica checked when it was proposed is not executed again when it is committed.
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

    pub(crate) fn contains(&self, hash: &Hash) -> bool {
        self.entries.iter().any(|(h, _)| h == hash)
    }

    pub(crate) fn remember(&mut self, hash: Hash, state: T) {
        if self.contains(&hash) {
            return;
        }
        if self.entries.len() >= CHECKED_STATES_MAX {
            self.entries.remove(0);
        }
        self.entries.push((hash, state));
    }

    /// The state `block` leads to, taken out, if it was checked on `tip` (a state computed on another tip is
    /// never reused).
    pub(crate) fn take(&mut self, block: &Block, tip: (u64, Hash)) -> Option<T> {
        if block.header.parent != tip.1 || block.header.height != tip.0 + 1 {
            return None;
        }
        let hash = block.hash();
        let i = self.entries.iter().position(|(h, _)| *h == hash)?;
        Some(self.entries.swap_remove(i).1)
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

fn height_key(prefix: &[u8], height: u64) -> Vec<u8> {
    [prefix, &height.to_be_bytes()].concat()
}

/// The persisted tip (height, block hash), if the chain was ever opened on this store.
pub(crate) fn load_tip(store: &dyn Store) -> Result<Option<(u64, Hash)>, StoreError> {
    let Some(tip) = store.get(KEY_TIP)? else {
        return Ok(None);
    };
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: "chain/tip".into(),
        reason: reason.into(),
    };
    let mut r = Reader::new(&tip);
    let height = r.u64().map_err(|_| corrupt("short"))?;
    let hash = r.array().map_err(|_| corrupt("short"))?;
    Ok(Some((height, hash)))
}

/// Adds a committed block, its certificate and the new tip to `batch`.
pub(crate) fn put_commit(batch: &mut WriteBatch, block: &Block, certificate: Vec<u8>) {
    let height = block.header.height;
    batch.put(height_key(KEY_BLOCK_PREFIX, height), block.encode());
    batch.put(height_key(KEY_CERT_PREFIX, height), certificate);
    batch.put(
        KEY_TIP,
        [height.to_be_bytes().as_slice(), &block.hash()].concat(),
    );
}

/// A committed block and its encoded certificate, if the store has them.
pub(crate) fn load_committed(store: &dyn Store, height: u64) -> Option<(Block, Vec<u8>)> {
    let block = store.get(&height_key(KEY_BLOCK_PREFIX, height)).ok()??;
    let cert = store.get(&height_key(KEY_CERT_PREFIX, height)).ok()??;
    Some((Block::decode(&block).ok()?, cert))
}

/// Checks the certificate of another shard's header with `certifier`, once per header (`certified` holds
/// the hashes of the headers checked already).
fn certify_once(
    certifier: Option<&dyn Certifier>,
    certified: &mut HashSet<Hash>,
    inbound: &Inbound,
) -> Result<(), CertifyError> {
    let hash = inbound.header.hash();
    if certified.contains(&hash) {
        return Ok(());
    }
    let certifier = certifier.ok_or(CertifyError::Invalid(
        "this node does not check other shards' certificates".into(),
    ))?;
    certifier.certify(&inbound.header, &inbound.certificate)?;
    if certified.len() >= CERTIFIED_HEADERS_MAX {
        certified.clear();
    }
    certified.insert(hash);
    Ok(())
}

pub struct ShardApp<St: Store> {
    state: State,
    store: St,
    tip: (u64, Hash),
    mempool: BTreeMap<(Address, u64), SignedTransaction>,
    /// Ids of signed transactions whose signature this node verified (see `remember_verified`).
    verified: HashSet<Hash>,
    checked: CheckedStates<State>,
    pub block_txs_max: usize,
    /// Checks other shards' certificates, for Atomix inbounds; without one, inbounds are refused.
    certifier: Option<Arc<dyn Certifier>>,
    /// Relayed Atomix inbounds not committed yet, by [`Inbound::content_id`].
    inbound: BTreeMap<Hash, Inbound>,
    /// Hashes of other shards' headers whose certificate this node checked.
    certified_headers: HashSet<Hash>,
}

impl<St: Store> ShardApp<St> {
    /// Opens the shard on `store`: resumes from the persisted tip if there is one, else writes genesis.
    pub fn open(genesis: &Genesis, shard: u16, mut store: St) -> Result<Self, LedgerError> {
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
        Ok(Self::from_parts(state, store, (0, hash)))
    }

    fn from_parts(state: State, store: St, tip: (u64, Hash)) -> Self {
        Self {
            state,
            store,
            tip,
            mempool: BTreeMap::new(),
            verified: HashSet::new(),
            checked: CheckedStates::new(),
            block_txs_max: 64,
            certifier: None,
            inbound: BTreeMap::new(),
            certified_headers: HashSet::new(),
        }
    }

    /// Sets what checks other shards' certificates (the node replaces it as its beacon view advances).
    pub fn set_certifier(&mut self, certifier: Arc<dyn Certifier>) {
        self.certifier = Some(certifier);
    }

    pub fn inbound_len(&self) -> usize {
        self.inbound.len()
    }

    /// Checks the certificate of another shard's header, once per header.
    fn certify(&mut self, inbound: &Inbound) -> Result<(), CertifyError> {
        certify_once(
            self.certifier.as_deref(),
            &mut self.certified_headers,
            inbound,
        )
    }

    /// Admits a relayed Atomix inbound for a later block: its proofs hold, some lock is not committed yet,
    /// and its certificate verifies (or its committee is not known here yet: it waits and is checked
    /// again when a block would include it). Relays of the same locks are admitted once.
    pub fn submit_inbound(&mut self, inbound: Inbound) -> Result<(), InboundError> {
        // Most relays repeat what is committed or pooled already: those are answered before any proof is
        // checked.
        let Some(first) = inbound.locks.first().map(|(l, _)| l.tx_id) else {
            return Err(InboundError::Empty);
        };
        let Some(inbound) = inbound.without(|id| self.state.is_committed(id)) else {
            return Err(InboundError::AlreadyCommitted(
                first[..8].iter().map(|b| format!("{b:02x}")).collect(),
            ));
        };
        let id = inbound.content_id();
        if self.inbound.contains_key(&id) && self.certified_headers.contains(&inbound.header.hash())
        {
            return Ok(());
        }
        let params = self.state.params();
        inbound.check_proofs(params.chain_id, self.state.shard(), params.shard_count)?;
        match self.certify(&inbound) {
            Ok(()) | Err(CertifyError::UnknownCommittee { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if self.inbound.len() >= INBOUND_POOL_MAX && !self.inbound.contains_key(&id) {
            return Err(InboundError::PoolFull);
        }
        self.inbound.insert(id, inbound);
        Ok(())
    }

    /// The pool's inbounds that apply on top of `state`, in pool order, at most [`BLOCK_INBOUND_MAX`];
    /// applied to `state`. Inbounds whose certificate is invalid leave the pool.
    fn take_inbound(&mut self, state: &mut State) -> Vec<Inbound> {
        let mut included = Vec::new();
        let mut bytes = 0;
        let mut invalid = Vec::new();
        for (id, inbound) in &self.inbound {
            if included.len() >= BLOCK_INBOUND_MAX {
                break;
            }
            let Some(inbound) = inbound.without(|tx| state.is_committed(tx)) else {
                continue;
            };
            let size = inbound.encode().len();
            if bytes + size > BLOCK_INBOUND_BYTES_MAX {
                continue;
            }
            match certify_once(
                self.certifier.as_deref(),
                &mut self.certified_headers,
                &inbound,
            ) {
                Ok(()) => {}
                Err(CertifyError::UnknownCommittee { .. }) => continue,
                Err(_) => {
                    invalid.push(*id);
                    continue;
                }
            }
            if state.apply_inbound(&inbound).is_ok() {
                bytes += size;
                included.push(inbound);
            } else {
                invalid.push(*id);
            }
        }
        for id in invalid {
            self.inbound.remove(&id);
        }
        included
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The certified header of a committed block (None at genesis, or if the stored certificate is not a BLS
    /// quorum certificate).
    fn certified(&self, height: u64) -> Option<(Block, CertifiedHeader)> {
        let (block, cert) = self.committed(height)?;
        let qc = QuorumCertificate::<Bls>::decode(&cert).ok()?;
        let header = block.header.clone();
        Some((block, CertifiedHeader { header, qc }))
    }

    /// An SPV proof of `address`'s state (present or absent) at the tip; None before the first block.
    pub fn prove_account(&self, address: &Address) -> Option<AccountProof> {
        let (_, certified) = self.certified(self.tip.0)?;
        Some(AccountProof {
            certified,
            address: *address,
            account: self.state.account(address).cloned(),
            proof: self.state.prove(address),
        })
    }

    /// An SPV proof that the transaction `id` is in a committed block of this shard; None if it is not.
    /// The height of the committed block that holds transaction `id`, if this shard committed it.
    pub fn height_of_tx(&self, id: &Hash) -> Option<u64> {
        let height = self.store.get(&[KEY_TX_PREFIX, id].concat()).ok()??;
        Some(u64::from_be_bytes(height.try_into().ok()?))
    }

    pub fn prove_tx(&self, id: &Hash) -> Option<TxProof> {
        let height = self.height_of_tx(id)?;
        let (block, certified) = self.certified(height)?;
        let ids = Block::body_items(&block.transactions, &block.inbound);
        let index = block.transactions.iter().position(|t| t.id() == *id)?;
        Some(TxProof {
            certified,
            tx: block.transactions[index].clone(),
            path: list_prove(&ids, index),
        })
    }

    /// The Atomix locks made in the committed blocks `from..=to` (clamped to the tip), as inbounds for their
    /// output shards, proven against the tip's certified header: a lock stays in the state once made, so the
    /// newest header proves every older lock too. Empty at genesis.
    pub fn outbound(&self, from: u64, to: u64) -> Vec<(ShardId, Inbound)> {
        let tip = self.tip.0;
        let Some((tip_block, certificate)) = self.committed(tip) else {
            return Vec::new();
        };
        let shards = self.state.params().shard_count;
        let mut by_shard: BTreeMap<ShardId, Vec<(Lock, smt::Proof)>> = BTreeMap::new();
        for height in from.max(1)..=to.min(tip) {
            let Some((block, _)) = self.committed(height) else {
                continue;
            };
            for tx in &block.transactions {
                let TxKind::Transfer { to, amount } = &tx.tx.kind else {
                    continue;
                };
                let shard = shard_of(to, shards);
                if shard == self.state.shard() {
                    continue;
                }
                let lock = Lock {
                    tx_id: tx.id(),
                    from: tx.tx.sender_address(),
                    to: *to,
                    amount: *amount,
                };
                let proof = self.state.prove_lock(&lock.tx_id);
                by_shard.entry(shard).or_default().push((lock, proof));
            }
        }
        by_shard
            .into_iter()
            .flat_map(|(shard, locks)| {
                Inbound::split(&tip_block.header, &certificate, locks)
                    .into_iter()
                    .map(move |i| (shard, i))
            })
            .collect()
    }

    pub fn into_store(self) -> St {
        self.store
    }

    pub fn mempool_len(&self) -> usize {
        self.mempool.len()
    }

    /// Admits a transaction to the mempool if it could be valid on this shard now or after the sender's
    /// pending transactions. The mempool is bounded.
    pub fn submit(&mut self, tx: SignedTransaction) -> Result<(), TxError> {
        let params = self.state.params();
        let id = tx.id();
        if self.verified.contains(&id) {
            tx.check_stateless_signature_verified(params.chain_id)?;
        } else {
            tx.check_stateless(params.chain_id)?;
        }
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
        self.check_admission(&tx, nonce)?;
        if self.mempool.len() >= MEMPOOL_TXS_MAX {
            return Err(TxError::MempoolFull);
        }
        self.remember_verified(id);
        self.mempool.insert((sender, tx.tx.nonce), tx);
        Ok(())
    }

    /// Records that the signed transaction with this id passed its signature check, so executing it in a
    /// block does not check it again. Bounded: past the limit the set starts over (transactions are then
    /// simply verified again).
    fn remember_verified(&mut self, id: Hash) {
        if self.verified.len() >= VERIFIED_TXS_MAX {
            self.verified.clear();
        }
        self.verified.insert(id);
    }

    /// Admits transactions whose signatures the caller already verified (in a batch): `verified[i]` says
    /// whether transaction `i`'s signature is good. The others are refused with the signature error.
    pub fn submit_verified(
        &mut self,
        txs: Vec<SignedTransaction>,
        verified: &[bool],
    ) -> Vec<Result<(), TxError>> {
        assert_eq!(txs.len(), verified.len(), "one verdict per transaction");
        txs.into_iter()
            .zip(verified)
            .map(|(tx, ok)| {
                if *ok {
                    self.remember_verified(tx.id());
                }
                self.submit(tx)
            })
            .collect()
    }

    /// The checks a transaction can fail at admission whatever else is pending, so that a client hears the
    /// reason at once instead of the transaction waiting in the mempool until it expires: fee, expiry,
    /// cross-shard recipient, and (for the sender's next nonce) the balance.
    fn check_admission(&self, tx: &SignedTransaction, account_nonce: u64) -> Result<(), TxError> {
        let params = self.state.params();
        let t = &tx.tx;
        if t.fee < params.fee_min {
            return Err(TxError::FeeTooLow {
                min: params.fee_min,
                got: t.fee,
            });
        }
        let height = self.tip.0 + 1;
        if t.expiry_height < height {
            return Err(TxError::Expired {
                expiry_height: t.expiry_height,
                height,
            });
        }
        let outgoing = match &t.kind {
            TxKind::Transfer { amount, .. } => *amount,
            TxKind::RegisterValidator { stake, .. } | TxKind::RegisterStorageNode { stake } => {
                *stake
            }
            TxKind::Unstake { .. } => Amount::ZERO,
        };
        if t.nonce == account_nonce {
            let account = self.state.account(&t.sender_address());
            let mut available = account.map_or(Amount::ZERO, |a| a.balance);
            if let Some(a) = account.filter(|a| height >= a.unbonding_release_height) {
                available = available
                    .checked_add(a.unbonding)
                    .ok_or(TxError::Overflow)?;
            }
            let needed = t.fee.checked_add(outgoing).ok_or(TxError::Overflow)?;
            if needed > available {
                return Err(TxError::Overspend { needed, available });
            }
        }
        Ok(())
    }

    /// Builds a block from `transactions` on top of the tip, skipping the ones that do not apply.
    pub fn build_block(
        &mut self,
        transactions: impl IntoIterator<Item = SignedTransaction>,
    ) -> Block {
        let height = self.tip.0 + 1;
        let mut state = self.state.clone();
        let mut included = Vec::new();
        let mut receipts: Vec<Receipt> = Vec::new();
        for tx in transactions {
            if included.len() >= self.block_txs_max.min(BLOCK_TXS_MAX) {
                break;
            }
            let verified = self.verified.contains(&tx.id());
            if let Ok(receipt) = state.apply_checked(&tx, height, verified) {
                included.push(tx);
                receipts.push(receipt);
            }
        }
        let inbound = self.take_inbound(&mut state);
        let params = state.params();
        let header = BlockHeader {
            chain_id: params.chain_id,
            shard: state.shard(),
            height,
            parent: self.tip.1,
            state_root: state.root(),
            transactions_root: Block::body_root(&included, &inbound),
            receipts_root: list_root(&receipts.iter().map(Receipt::hash).collect::<Vec<_>>()),
        };
        self.checked.remember(header.hash(), state);
        Block {
            header,
            transactions: included,
            links: Vec::new(),
            inbound,
            evidence: Vec::new(),
        }
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
        if Block::body_root(&block.transactions, &block.inbound) != h.transactions_root {
            return Err(BlockError::TransactionsRoot);
        }
        let mut state = self.state.clone();
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
        if state.root() != h.state_root {
            return Err(BlockError::StateRoot);
        }
        if list_root(&receipts.iter().map(Receipt::hash).collect::<Vec<_>>()) != h.receipts_root {
            return Err(BlockError::ReceiptsRoot);
        }
        Ok(state)
    }
}

impl<St: Store> App for ShardApp<St> {
    fn tip(&self) -> (u64, Hash) {
        self.tip
    }

    fn propose(&mut self) -> Block {
        let candidates: Vec<SignedTransaction> = self.mempool.values().cloned().collect();
        self.build_block(candidates)
    }

    fn check(&mut self, block: &Block) -> Result<(), BlockError> {
        let hash = block.hash();
        if self.checked.contains(&hash) {
            return Ok(());
        }
        let state = self.execute(block, false)?;
        self.checked.remember(hash, state);
        Ok(())
    }

    fn check_finalised(&mut self, block: &Block) -> Result<(), BlockError> {
        let hash = block.hash();
        if self.checked.contains(&hash) {
            return Ok(());
        }
        let state = self.execute(block, true)?;
        self.checked.remember(hash, state);
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
        put_commit(&mut batch, block, certificate);
        self.store.write(batch)?;
        self.state = state;
        self.tip = (height, hash);
        self.checked.clear();
        for tx in &block.transactions {
            self.verified.remove(&tx.id());
        }
        let state = &self.state;
        self.mempool.retain(|(sender, nonce), tx| {
            *nonce >= state.account(sender).map_or(0, |a| a.nonce) && tx.tx.expiry_height > height
        });
        self.inbound
            .retain(|_, i| i.locks.iter().any(|(l, _)| !state.is_committed(&l.tx_id)));
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
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use crate::genesis::GenesisConfig;
    use crate::store::MemStore;
    use crate::tx::Transaction;

    fn setup() -> (Genesis, ShardApp<MemStore>, SecretKey) {
        let genesis =
            GenesisConfig::devnet(1, 0, Amount(0), Amount::from_iost(1000).expect("small"))
                .build()
                .expect("valid genesis");
        let app = ShardApp::open(&genesis, 0, MemStore::new()).expect("genesis");
        (genesis, app, SecretKey::dev("devnet/wallet"))
    }

    fn pay(key: &SecretKey, nonce: u64, iost: u64) -> SignedTransaction {
        Transaction {
            chain_id: ChainParams::devnet(1).chain_id,
            sender: key.public(),
            nonce,
            fee: Amount(1_000),
            expiry_height: 1_000,
            kind: TxKind::Transfer {
                to: Address::of(&SecretKey::dev("bob").public()),
                amount: Amount::from_iost(iost).expect("small"),
            },
        }
        .sign(key)
    }

    /// A transfer to another shard, end to end through two ledgers: locked and finalised on the sender's
    /// shard, committed on the recipient's from a relayed inbound. A ledger that cannot check the input
    /// shard's certificate refuses the block as a proposal but applies it once its committee finalised it.
    #[test]
    fn atomix_between_two_ledgers_and_finalised_blocks_without_a_certifier() {
        use crate::bft::{Bls, Committee, Member, QuorumCertificate, Vote, VoteKind};
        let genesis =
            GenesisConfig::devnet(2, 0, Amount(0), Amount::from_iost(1000).expect("small"))
                .build()
                .expect("valid genesis");
        let key = SecretKey::dev("devnet/wallet");
        let home = shard_of(&Address::of(&key.public()), 2);
        let away = 1 - home;
        let to = (0..)
            .map(|i| Address::of(&SecretKey::dev(&format!("away {i}")).public()))
            .find(|a| shard_of(a, 2) == away)
            .expect("some address lands on the other shard");
        let chain_id = genesis.params.chain_id;
        let mut input = ShardApp::open(&genesis, home, MemStore::new()).expect("genesis");
        let tx = Transaction {
            chain_id,
            sender: key.public(),
            nonce: 0,
            fee: Amount(1_000),
            expiry_height: 1_000,
            kind: TxKind::Transfer {
                to,
                amount: Amount::from_iost(7).expect("small"),
            },
        }
        .sign(&key);
        input
            .submit(tx.clone())
            .expect("a transfer to another shard is admitted");
        let block = input.propose();
        assert_eq!(block.transactions, vec![tx.clone()]);
        // The input shard's one-member committee finalises it.
        let member = crate::crypto::bls::SecretKey::dev("ledger test member");
        let committee = Committee::<Bls>::new(
            vec![Member {
                id: Address([1; 32]),
                public: member.public(),
                weight: 1,
            }],
            [0; 32],
        );
        let vote = Vote::<Bls>::sign(
            chain_id,
            home,
            VoteKind::Precommit,
            1,
            0,
            Some(block.hash()),
            0,
            &member,
        );
        let qc = QuorumCertificate::aggregate(&committee, &[&vote], block.hash()).expect("valid");
        input.commit(&block, qc.encode()).expect("commit");
        assert!(input.state().is_locked(&tx.id()));
        let (out, inbound) = input.outbound(1, 1).pop().expect("one inbound");
        assert_eq!(out, away);

        let mut committees = vec![committee.clone(), committee];
        committees[usize::from(away)].members.clear();
        let certifier = Arc::new(crate::atomix::FixedCommittees {
            chain_id,
            committees,
        });
        let mut output = ShardApp::open(&genesis, away, MemStore::new()).expect("genesis");
        output.set_certifier(certifier);
        let mut forged = inbound.clone();
        forged.certificate = qc.encode()[..10].to_vec();
        assert!(matches!(
            output.submit_inbound(forged),
            Err(InboundError::Certificate(_))
        ));
        output
            .submit_inbound(inbound.clone())
            .expect("a valid relay");
        output
            .submit_inbound(inbound)
            .expect("a second relay is a no-op");
        assert_eq!(output.inbound_len(), 1);
        let credit = output.propose();
        assert_eq!(credit.inbound.len(), 1);
        output.commit(&credit, vec![1]).expect("commit");
        let credited = output.state().account(&to).expect("credited").balance;
        assert_eq!(credited, Amount::from_iost(7).expect("small"));
        assert_eq!(output.inbound_len(), 0, "committed inbounds leave the pool");

        // A ledger with no certifier: the block is no valid proposal, but a finalised block applies.
        let mut late = ShardApp::open(&genesis, away, MemStore::new()).expect("genesis");
        assert!(matches!(
            late.check(&credit),
            Err(BlockError::Inbound { index: 0, .. })
        ));
        late.check_finalised(&credit)
            .expect("finalised by its committee");
        late.commit(&credit, vec![1]).expect("commit");
        assert_eq!(late.state().account(&to).map(|a| a.balance), Some(credited));
        assert!(late.state().is_committed(&tx.id()));
    }

    #[test]
    fn propose_check_commit_and_reopen() {
        let (genesis, mut app, wallet) = setup();
        for nonce in 0..3 {
            app.submit(pay(&wallet, nonce, 1)).expect("admitted");
        }
        assert_eq!(
            app.submit(pay(&wallet, 0, 1)),
            Ok(()),
            "a duplicate replaces itself"
        );
        let block = app.propose();
        assert_eq!(block.transactions.len(), 3);
        assert_eq!(app.check(&block), Ok(()));
        app.commit(&block, vec![1, 2, 3]).expect("commits");
        assert_eq!(app.tip(), (1, block.hash()));
        assert_eq!(app.mempool_len(), 0);
        assert_eq!(
            app.submit(pay(&wallet, 1, 1)),
            Err(TxError::ReplayedNonce {
                expected: 3,
                got: 1
            })
        );
        assert_eq!(app.committed(1), Some((block.clone(), vec![1, 2, 3])));

        let root = app.state.root();
        let store = app.into_store();
        let mut reopened = ShardApp::open(&genesis, 0, store).expect("reopens");
        assert_eq!(reopened.tip(), (1, block.hash()));
        assert_eq!(reopened.state.root(), root);
    }

    #[test]
    fn admission_refuses_what_can_never_apply_with_reasons() {
        let (_, mut app, wallet) = setup();
        let with = |f: &dyn Fn(&mut Transaction)| {
            let mut tx = pay(&wallet, 0, 1).tx;
            f(&mut tx);
            tx.sign(&wallet)
        };
        let cases: [(SignedTransaction, TxError); 3] = [
            (
                pay(&wallet, 0, 2_000),
                TxError::Overspend {
                    needed: Amount(2_000 * 100_000_000 + 1_000),
                    available: Amount::from_iost(1000).expect("small"),
                },
            ),
            (
                with(&|t| t.fee = Amount(1)),
                TxError::FeeTooLow {
                    min: Amount(1_000),
                    got: Amount(1),
                },
            ),
            (
                with(&|t| t.expiry_height = 0),
                TxError::Expired {
                    expiry_height: 0,
                    height: 1,
                },
            ),
        ];
        for (tx, expected) in cases {
            assert_eq!(app.submit(tx), Err(expected));
        }
        assert_eq!(app.mempool_len(), 0);
        assert_eq!(app.submit(pay(&wallet, 0, 999)), Ok(()), "fee fits");
    }

    #[test]
    fn signatures_verified_at_admission_are_not_checked_again_but_forgeries_never_pass() {
        let (_, mut app, wallet) = setup();
        let good = pay(&wallet, 0, 1);
        let mut forged = pay(&wallet, 1, 1);
        forged.signature.0[0] ^= 1;
        let mut other_chain = pay(&wallet, 1, 1).tx;
        other_chain.chain_id += 1;
        let other_chain = other_chain.sign(&wallet);
        let results = app.submit_verified(
            vec![good.clone(), forged.clone(), other_chain],
            &[true, false, true],
        );
        assert_eq!(results[0], Ok(()));
        assert!(matches!(results[1], Err(TxError::BadSignature(_))));
        assert!(matches!(results[2], Err(TxError::WrongChainId { .. })));
        assert!(app.verified.contains(&good.id()));
        let block = app.propose();
        assert_eq!(block.transactions, vec![good.clone()]);
        app.commit(&block, vec![]).expect("commits");
        assert!(
            !app.verified.contains(&good.id()),
            "committed ids leave the set"
        );
        // A block from a peer carrying a forged transaction this node never admitted is refused.
        let mut other = setup().1;
        let mut bad = other.build_block([pay(&wallet, 0, 1)]);
        bad.transactions[0].signature.0[0] ^= 1;
        bad.header.transactions_root = Block::transactions_root(&bad.transactions);
        other.checked.clear();
        assert!(matches!(
            other.check(&bad),
            Err(BlockError::Transaction {
                index: 0,
                error: TxError::BadSignature(_)
            })
        ));
    }

    #[test]
    fn invalid_blocks_are_refused_with_reasons() {
        let (_, mut app, wallet) = setup();
        app.submit(pay(&wallet, 0, 1)).expect("admitted");
        let good = app.propose();
        let check = |app: &mut ShardApp<MemStore>, f: &dyn Fn(&mut Block), expected: BlockError| {
            let mut b = good.clone();
            f(&mut b);
            app.checked.clear();
            assert_eq!(app.check(&b), Err(expected));
        };
        check(
            &mut app,
            &|b| b.header.height = 5,
            BlockError::WrongHeight {
                expected: 1,
                got: 5,
            },
        );
        check(
            &mut app,
            &|b| b.header.parent = [1; 32],
            BlockError::WrongParent,
        );
        check(
            &mut app,
            &|b| b.header.shard = 1,
            BlockError::WrongShard {
                expected: 0,
                got: 1,
            },
        );
        check(
            &mut app,
            &|b| b.header.state_root = [0; 32],
            BlockError::StateRoot,
        );
        check(
            &mut app,
            &|b| b.header.receipts_root = [0; 32],
            BlockError::ReceiptsRoot,
        );
        check(
            &mut app,
            &|b| b.transactions.clear(),
            BlockError::TransactionsRoot,
        );
        let replay = |b: &mut Block| {
            b.transactions.push(b.transactions[0].clone());
            b.header.transactions_root = Block::transactions_root(&b.transactions);
        };
        check(
            &mut app,
            &replay,
            BlockError::Transaction {
                index: 1,
                error: TxError::ReplayedNonce {
                    expected: 1,
                    got: 0,
                },
            },
        );
    }
}
