//! The beacon chain's ledger as the BFT replica sees it: [`BeaconApp`] builds, checks and commits beacon
//! blocks (cross-links and evidence), persists the state and archives every epoch drawn.

use super::{
    BeaconState, EpochRecord, EvidenceError, KEY_DRAWN_PREFIX, KEY_EPOCH_PREFIX, KEY_STATE,
    LinkError, PENDING_EVIDENCE_MAX, PENDING_LINKS_MAX,
};
use crate::address::ShardId;
use crate::bft::{Bls, Committee, QuorumCertificate, Tip};
use crate::block::{
    BEACON_SHARD, BLOCK_EVIDENCE_MAX, BLOCK_LINKS_MAX, Block, BlockHeader, CrossLink,
};
use crate::codec::{Reader, Writer};
use crate::crypto::Hash;
use crate::genesis::Genesis;
use crate::ledger::{
    App, BlockError, CheckedStates, LedgerError, check_header, check_roots, genesis_header,
    load_tip, put_commit,
};
use crate::smt::list_root;
use crate::store::{Store, StoreError, WriteBatch};
use crate::types::proof::{CertifiedHeader, EpochProof};
use std::collections::{BTreeMap, HashSet};

/// The beacon chain's ledger as the BFT replica sees it.
pub struct BeaconApp<St: Store> {
    state: BeaconState,
    pub(super) store: St,
    tip: Tip,
    /// Verified links waiting for a block, by (shard, height).
    pending: BTreeMap<(ShardId, u64), CrossLink>,
    /// Verified evidence waiting for a block, by fault key.
    pending_evidence: BTreeMap<Hash, crate::bft::Evidence<Bls>>,
    /// Hashes of links whose certificate this node verified (so executing them skips the BLS check).
    verified: HashSet<Hash>,
    checked: CheckedStates<BeaconState>,
    /// Every epoch record drawn since genesis, kept by this node (the state keeps only the last
    /// `EPOCHS_KEPT`): what a follower checks old shard blocks against.
    archive: BTreeMap<u64, EpochRecord>,
}

fn epoch_key(epoch: u64) -> Vec<u8> {
    [KEY_EPOCH_PREFIX, &epoch.to_be_bytes()].concat()
}

impl<St: Store> BeaconApp<St> {
    /// Opens the beacon chain on `store`: resumes from its tip, or writes the genesis state. Epochs last
    /// the default number of beacon blocks (`beacon::default_epoch_blocks`).
    pub fn open(
        genesis: &Genesis,
        committee_size: usize,
        epoch_length: u64,
        store: St,
    ) -> Result<Self, LedgerError> {
        Self::open_with(genesis, committee_size, epoch_length, 0, store)
    }

    /// [`BeaconApp::open`] with `epoch_blocks` beacon blocks per epoch (0: the default).
    pub fn open_with(
        genesis: &Genesis,
        committee_size: usize,
        epoch_length: u64,
        epoch_blocks: u64,
        mut store: St,
    ) -> Result<Self, LedgerError> {
        let genesis_state = BeaconState::genesis(genesis, committee_size, epoch_length)
            .map_err(|e| {
                LedgerError::Store(StoreError::Corrupt {
                    key: "genesis".into(),
                    reason: e.to_string(),
                })
            })?
            .with_epoch_blocks(epoch_blocks);
        let (state, tip) = match load_tip(&store)? {
            Some(tip) => {
                let bytes = store.get(KEY_STATE)?.ok_or_else(|| StoreError::Corrupt {
                    key: "beacon/state".into(),
                    reason: "missing".into(),
                })?;
                let state = BeaconState::decode(&bytes).map_err(|e| StoreError::Corrupt {
                    key: "beacon/state".into(),
                    reason: e.to_string(),
                })?;
                (state, tip)
            }
            None => {
                let mut header =
                    genesis_header(&genesis.params, BEACON_SHARD, genesis_state.root());
                header.transactions_root = Block::links_root(&[]);
                let hash = header.hash();
                let mut batch = WriteBatch::default();
                batch.put(KEY_STATE, genesis_state.encode());
                let mut w = Writer::new();
                genesis_state.newest().encode_into(&mut w);
                batch.put(epoch_key(0), w.finish());
                batch.put(
                    crate::ledger::KEY_TIP,
                    [0u64.to_be_bytes().as_slice(), &hash].concat(),
                );
                store.write(batch)?;
                (genesis_state, Tip { height: 0, hash })
            }
        };
        let mut archive = BTreeMap::new();
        for epoch in 0..=state.epoch() {
            let Some(bytes) = store.get(&epoch_key(epoch))? else {
                continue;
            };
            let record = EpochRecord::decode_from(&mut Reader::new(&bytes)).map_err(|e| {
                StoreError::Corrupt {
                    key: format!("beacon/epoch/{epoch}"),
                    reason: e.to_string(),
                }
            })?;
            archive.insert(epoch, record);
        }
        Ok(Self {
            state,
            store,
            tip,
            pending: BTreeMap::new(),
            pending_evidence: BTreeMap::new(),
            verified: HashSet::new(),
            checked: CheckedStates::new(),
            archive,
        })
    }

    /// The committee that certifies block `height` of `shard`, from the state or, for an era the state no
    /// longer keeps, from this node's archive (the state's records are a suffix of the archive, so both
    /// give the same answer where the state gives one).
    pub fn committee_at(&self, shard: ShardId, height: u64) -> Option<Committee<Bls>> {
        if let Some(committee) = self.state.committee_at(shard, height) {
            return Some(committee);
        }
        if shard >= self.state.shard_count() {
            return None;
        }
        let eras = super::eras(
            self.archive.values(),
            usize::from(shard),
            self.state.epoch_length,
        );
        let era = super::era_at(&eras, height)?;
        self.archive
            .get(&era.epoch)?
            .committee_of(shard, self.state.shard_count())
    }

    pub fn state(&self) -> &BeaconState {
        &self.state
    }

    /// The proof of how `epoch` (1 or later) was drawn: the beacon block that drew it, with its certificate,
    /// and the state after it. `None` if this node has not committed that block (or the store fails).
    pub fn epoch_proof(&self, epoch: u64) -> Option<EpochProof> {
        let bytes = self
            .store
            .get(&[KEY_DRAWN_PREFIX, &epoch.to_be_bytes()].concat())
            .ok()??;
        let height = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let (block, certificate) = crate::ledger::load_committed(&self.store, height)?;
        let qc = QuorumCertificate::<Bls>::decode(&certificate).ok()?;
        Some(EpochProof {
            certified: CertifiedHeader {
                header: block.header,
                qc,
            },
            state: bytes[8..].to_vec(),
        })
    }

    /// The newest epoch's committee of a shard, or of the beacon (`BEACON_SHARD`): the beacon's certifies
    /// the next beacon block.
    pub fn committee(&self, shard: ShardId) -> Option<Committee<Bls>> {
        self.state.committee(shard)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Checks a cross-link (its certificate included) and keeps it for the next beacon block.
    pub fn offer(&mut self, link: CrossLink) -> Result<(), LinkError> {
        let key = (link.header.shard, link.header.height);
        if self.pending.get(&key) == Some(&link) {
            return Ok(());
        }
        self.state.check_link(&link, false)?;
        if self.pending.len() >= PENDING_LINKS_MAX {
            return Err(LinkError::PoolFull);
        }
        self.verified.insert(link.hash());
        self.pending.insert(key, link);
        Ok(())
    }

    pub fn pending_evidence_len(&self) -> usize {
        self.pending_evidence.len()
    }

    /// Checks evidence of a fault and keeps it for the next beacon block.
    pub fn offer_evidence(&mut self, e: crate::bft::Evidence<Bls>) -> Result<(), EvidenceError> {
        // Every validator that saw the fault sends it: the same evidence again costs no signature check.
        if self.pending_evidence.values().any(|p| *p == e) {
            return Ok(());
        }
        let (_, key, _) = self.state.check_evidence(&e)?;
        if self.pending_evidence.contains_key(&key) {
            return Ok(());
        }
        if self.pending_evidence.len() >= PENDING_EVIDENCE_MAX {
            return Err(EvidenceError::Full);
        }
        self.pending_evidence.insert(key, e);
        Ok(())
    }

    fn execute(&self, block: &Block) -> Result<BeaconState, BlockError> {
        let h = &block.header;
        check_header(h, self.state.chain_id, BEACON_SHARD, self.tip)?;
        if !block.transactions.is_empty() {
            return Err(BlockError::TooManyTransactions(block.transactions.len()));
        }
        if block.links.len() > BLOCK_LINKS_MAX {
            return Err(BlockError::TooManyTransactions(block.links.len()));
        }
        if block.evidence.len() > BLOCK_EVIDENCE_MAX || !block.inbound.is_empty() {
            return Err(BlockError::TooManyTransactions(block.evidence.len()));
        }
        if Block::beacon_root(&block.links, &block.evidence) != h.transactions_root {
            return Err(BlockError::TransactionsRoot);
        }
        let mut state = self.state.clone();
        for (index, link) in block.links.iter().enumerate() {
            let verified = self.verified.contains(&link.hash());
            let checked = state
                .check_link(link, verified)
                .map_err(|error| BlockError::Link { index, error })?;
            state.record_link(&checked, &link.header);
        }
        for (index, e) in block.evidence.iter().enumerate() {
            let (offender, key, epoch) = state
                .check_evidence(e)
                .map_err(|error| BlockError::Evidence { index, error })?;
            state.record_fault(&offender, key, epoch);
        }
        if state.next_epoch_due(h.height) {
            state = state.next_epoch(h.height);
        }
        check_roots(h, state.root(), &[])?;
        Ok(state)
    }
}

impl<St: Store> App for BeaconApp<St> {
    fn tip(&self) -> Tip {
        self.tip
    }

    fn propose(&mut self) -> Block {
        let mut state = self.state.clone();
        let mut links = Vec::new();
        for link in self.pending.values() {
            if links.len() >= BLOCK_LINKS_MAX {
                break;
            }
            if let Ok(checked) = state.check_link(link, true) {
                state.record_link(&checked, &link.header);
                links.push(link.clone());
            }
        }
        let mut evidence = Vec::new();
        for e in self.pending_evidence.values() {
            if evidence.len() >= BLOCK_EVIDENCE_MAX {
                break;
            }
            if let Ok((offender, key, epoch)) = state.check_evidence(e) {
                state.record_fault(&offender, key, epoch);
                evidence.push(e.clone());
            }
        }
        let height = self.tip.height + 1;
        if state.next_epoch_due(height) {
            state = state.next_epoch(height);
        }
        let header = BlockHeader {
            chain_id: state.chain_id,
            shard: BEACON_SHARD,
            height,
            parent: self.tip.hash,
            state_root: state.root(),
            transactions_root: Block::beacon_root(&links, &evidence),
            receipts_root: list_root(&[]),
        };
        let block = Block {
            header,
            transactions: Vec::new(),
            links,
            inbound: Vec::new(),
            evidence,
            proofs: Vec::new(),
        };
        self.checked.remember(block.digest(), state);
        block
    }

    fn check(&mut self, block: &Block) -> Result<(), BlockError> {
        // By the whole encoding: a verdict on a block must not answer for another body under its header.
        let digest = block.digest();
        if self.checked.contains(&digest) {
            return Ok(());
        }
        let state = self.execute(block)?;
        self.checked.remember(digest, state);
        Ok(())
    }

    fn commit(&mut self, block: &Block, certificate: Vec<u8>) -> Result<(), LedgerError> {
        let hash = block.hash();
        let state = match self.checked.take(block, self.tip) {
            Some(state) => state,
            None => self.execute(block)?,
        };
        let mut batch = WriteBatch::default();
        let encoded = state.encode();
        let newest = state.newest();
        let new_epoch = !self.archive.contains_key(&newest.epoch);
        if new_epoch {
            let mut w = Writer::new();
            newest.encode_into(&mut w);
            batch.put(epoch_key(newest.epoch), w.finish());
            batch.put(
                [KEY_DRAWN_PREFIX, &newest.epoch.to_be_bytes()].concat(),
                [block.header.height.to_be_bytes().as_slice(), &encoded].concat(),
            );
        }
        batch.put(KEY_STATE, encoded);
        put_commit(&mut batch, block, certificate);
        self.store.write(batch)?;
        if new_epoch {
            self.archive.insert(state.epoch(), state.newest().clone());
        }
        self.state = state;
        self.tip = Tip {
            height: block.header.height,
            hash,
        };
        self.checked.clear();
        for link in &block.links {
            self.verified.remove(&link.hash());
        }
        let links = &self.state.links;
        self.pending.retain(|(shard, height), _| {
            *height > links[usize::from(*shard)].as_ref().map_or(0, |l| l.height)
        });
        let state = &self.state;
        self.pending_evidence
            .retain(|_, e| state.check_evidence(e).is_ok());
        let waiting: HashSet<Hash> = self.pending.values().map(CrossLink::hash).collect();
        self.verified.retain(|h| waiting.contains(h));
        Ok(())
    }

    fn store(&mut self) -> &mut dyn Store {
        &mut self.store
    }

    fn store_ref(&self) -> &dyn Store {
        &self.store
    }

    fn committed(&self, height: u64) -> Option<(Block, Vec<u8>)> {
        crate::ledger::load_committed(&self.store, height)
    }
}
