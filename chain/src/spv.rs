//! SPV: what a light client checks with no full node.
//!
//! Goals: a proof is a self-contained file; checking it needs only the chain id and the committees the client
//! trusts (from genesis or from certified committee hand-offs); every byte of it is untrusted input.
//!
//! A proof starts from a *certified header*: a block header and the quorum certificate of precommits that
//! finalised it, which must carry more than two thirds of the trusted committee's weight for that shard. Then:
//! - an **account proof** adds an address, the account (or nothing, for absence) and a sparse Merkle proof
//!   against the header's `state_root`;
//! - a **transaction proof** adds the signed transaction and a list proof of its id at its index under the
//!   header's `transactions_root`. A block only includes transactions that applied, so inclusion in a certified
//!   block means the transaction took effect;
//! - a **deal proof** (a durability receipt) adds a deal's id, record and terms and the state proof of the
//!   record;
//! - a **volume proof** adds a volume's owner, name, version and record (height and sealed root), the state
//!   proof of that version and the state proof of the next version's key: present, the version had been
//!   replaced at the certified height; absent, it was the newest. It must be a header of the owner's shard.
//!
//! ```text
//! file      := "IOSPROOF" version:u8 (=1) kind:u8 (1 account, 2 transaction, 3 deal, 4 volume) certified body
//! certified := header qc:var
//! account   := address:[32] present:u8 (account:var)? smt_proof
//! smt_proof := count:u32 sibling:[32]* terminal:u8 (0 empty | 1 key:[32] value_hash:[32])
//! tx        := signed_transaction:var list_proof
//! deal      := id:[32] record:var terms smt_proof
//! volume    := owner:[32] name:var version:u64 record:var (height:u64 root:var) smt_proof next:smt_proof
//! list_proof:= index:u64 len:u64 count:u32 sibling:[32]*
//! ```
//!
//! **Epoch hand-off.** The client trusts epoch records (every shard's committee and the beacon's, as the beacon
//! chain drew them) and checks a shard header against the record of its height's epoch. It learns epoch `e+1`
//! from an [`EpochProof`]: the beacon block that drew it, certified by epoch `e`'s beacon committee (the beacon
//! committee changes only after that block), and the whole beacon state after it, whose hash is that block's
//! state root. So a client that trusts epoch 0 from genesis follows every later committee with no trusted node.
//!
//! ```text
//! epochs    := "IOSEPOCH" version:u8 (=1) count:u32 (certified beacon_state:var)*
//! ```

pub use crate::types::proof::*;

use crate::ids::ShardId;
use std::collections::BTreeMap;

use crate::address::shard_of;
use crate::beacon::{BeaconState, EpochRecord, era_at, eras};
use crate::bft::QcError;
use crate::block::BEACON_SHARD;
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{domain, hash_with};
use crate::smt::{self, ProofError};
use crate::types::account::Account;
use crate::types::deal::deal_key;
use crate::types::volume::{check_name, version_key, volume_id};

const TRUST_MAGIC: &[u8; 8] = b"IOSTRUST";
/// 3 since epoch records say where each shard's committee takes over (`beacon::Start`).
const TRUST_VERSION: u8 = 3;
/// Epoch records a trust file keeps, the newest ones.
pub const TRUST_EPOCHS_MAX: usize = 8;

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpvError {
    #[error("not a proof file: {0}")]
    Decode(#[from] DecodeError),
    #[error("the proof is for chain {got}, this client follows chain {expected}")]
    WrongChain { expected: u32, got: u32 },
    #[error("no trusted committee for shard {0}")]
    UnknownShard(ShardId),
    #[error(
        "the certificate is not a precommit quorum for this header (shard, height or block differ)"
    )]
    CertificateMismatch,
    #[error(
        "the certificate does not verify against the trusted committee of shard {shard}: {source} (committees change every epoch: if this proof is newer than the trust file, refresh it with `huds chain trust`)"
    )]
    Certificate { shard: ShardId, source: QcError },
    #[error("the state proof does not match the certified state root: {0}")]
    StateProof(#[from] ProofError),
    #[error("the state proof shows {shown}, the file claims {claimed}")]
    AccountMismatch {
        shown: &'static str,
        claimed: &'static str,
    },
    #[error("the transaction is not in the certified block at the index claimed")]
    TxNotInBlock,
    #[error("the deal record does not match the certified state: {0}")]
    DealMismatch(&'static str),
    #[error("the volume version does not match the certified state: {0}")]
    VolumeMismatch(&'static str),
    #[error(
        "the deal ended at shard height {end_height}; the certified state is at height {height}"
    )]
    DealNotActive { height: u64, end_height: u64 },
    #[error(
        "shard {shard} height {height} is in epoch {epoch}, and the trust file holds epochs {oldest} to {newest}: run `huds chain trust` to advance it"
    )]
    UnknownEpoch {
        shard: ShardId,
        height: u64,
        epoch: u64,
        oldest: u64,
        newest: u64,
    },
    #[error("an epoch proof must be a beacon chain block, this one is of shard {0}")]
    NotBeacon(ShardId),
    #[error(
        "the beacon state in the epoch proof does not hash to the certified block's state root"
    )]
    BeaconStateMismatch,
    #[error(
        "the epoch proof is for epoch {got} of chain {chain_id}, the next one here is epoch {expected}"
    )]
    NotNextEpoch {
        chain_id: u32,
        expected: u64,
        got: u64,
    },
}

/// What a light client trusts for one chain: epoch records (every committee of an epoch), the newest
/// [`TRUST_EPOCHS_MAX`] it has learnt.
#[derive(Debug, Clone)]
pub struct LightClient {
    pub chain_id: u32,
    /// Shard heights per epoch (0: one epoch forever).
    pub epoch_length: u64,
    pub shard_count: u16,
    epochs: BTreeMap<u64, EpochRecord>,
}

impl LightClient {
    /// A client trusting one epoch record.
    pub fn new(chain_id: u32, epoch_length: u64, shard_count: u16, record: EpochRecord) -> Self {
        LightClient {
            chain_id,
            epoch_length,
            shard_count,
            epochs: BTreeMap::from([(record.epoch, record)]),
        }
    }

    /// A client trusting the epochs a beacon state keeps (from genesis: epoch 0 alone).
    pub fn from_beacon(state: &BeaconState) -> Self {
        LightClient {
            chain_id: state.chain_id,
            epoch_length: state.epoch_length,
            shard_count: state.shard_count(),
            epochs: state.epochs.iter().map(|r| (r.epoch, r.clone())).collect(),
        }
    }

    /// The newest epoch trusted.
    pub fn newest_epoch(&self) -> u64 {
        self.newest().epoch
    }

    fn newest(&self) -> &EpochRecord {
        self.epochs
            .values()
            .next_back()
            .expect("a client always trusts an epoch")
    }

    /// Learns the next epoch from `p` (see [`EpochProof`]); returns it.
    pub fn advance(&mut self, p: &EpochProof) -> Result<u64, SpvError> {
        let h = &p.certified.header;
        if h.chain_id != self.chain_id {
            return Err(SpvError::WrongChain {
                expected: self.chain_id,
                got: h.chain_id,
            });
        }
        if h.shard != BEACON_SHARD {
            return Err(SpvError::NotBeacon(h.shard));
        }
        let newest = self.newest();
        let committee = newest
            .committee_of(BEACON_SHARD, self.shard_count)
            .ok_or(SpvError::UnknownShard(BEACON_SHARD))?;
        if !p.certified.qc.finalises(h) {
            return Err(SpvError::CertificateMismatch);
        }
        p.certified
            .qc
            .verify(self.chain_id, &committee)
            .map_err(|source| SpvError::Certificate {
                shard: BEACON_SHARD,
                source,
            })?;
        if hash_with(domain::BEACON_STATE, &[&p.state]) != h.state_root {
            return Err(SpvError::BeaconStateMismatch);
        }
        let state = BeaconState::decode(&p.state)?;
        let expected = newest.epoch + 1;
        if state.chain_id != self.chain_id
            || state.epoch_length != self.epoch_length
            || state.shard_count() != self.shard_count
            || state.epoch() != expected
        {
            return Err(SpvError::NotNextEpoch {
                chain_id: state.chain_id,
                expected,
                got: state.epoch(),
            });
        }
        self.epochs.insert(expected, state.newest().clone());
        while self.epochs.len() > TRUST_EPOCHS_MAX {
            self.epochs.pop_first();
        }
        Ok(expected)
    }

    /// The trust file: what the client trusts, written where it can check proofs later.
    ///
    /// ```text
    /// trust := "IOSTRUST" version:u8 (=3) chain_id:u32 epoch_length:u64 shards:u16 count:u32 epoch_record*
    /// epoch_record := epoch:u64 randomness:[32] committees:u32 (seats:u32 (id:[32] bls_public:[48] weight:u128)*)*
    ///                 starts:u32 (0 | 1 first:u64 (0 | 1 parent:[32]))*
    /// ```
    /// (`committees` = `shards + 1`: the shards' in order, then the beacon's.)
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed(TRUST_MAGIC)
            .u8(TRUST_VERSION)
            .u32(self.chain_id)
            .u64(self.epoch_length)
            .u16(self.shard_count)
            .u32(u32::try_from(self.epochs.len()).expect("at most TRUST_EPOCHS_MAX epochs"));
        for record in self.epochs.values() {
            record.encode_into(&mut w);
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if &r.array::<8>()? != TRUST_MAGIC {
            return Err(DecodeError::Invalid("trust file magic"));
        }
        let version = r.u8()?;
        if version != TRUST_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let chain_id = r.u32()?;
        let epoch_length = r.u64()?;
        let shard_count = r.u16()?;
        let count = r.count("trusted epochs", TRUST_EPOCHS_MAX, 8 + 32 + 4)?;
        if count == 0 {
            return Err(DecodeError::Invalid(
                "a trust file trusts at least one epoch",
            ));
        }
        let mut epochs = BTreeMap::new();
        for _ in 0..count {
            let record = EpochRecord::decode_from(&mut r)?;
            if record.committees.len() != usize::from(shard_count) + 1
                || record.committees.iter().any(|c| {
                    c.is_empty()
                        || c.iter()
                            .try_fold(0u128, |t, s| t.checked_add(s.weight))
                            .is_none_or(|t| t == 0)
                })
            {
                return Err(DecodeError::Invalid("trusted committee"));
            }
            if epochs.insert(record.epoch, record).is_some() {
                return Err(DecodeError::Invalid("epoch listed twice"));
            }
        }
        r.finish()?;
        Ok(LightClient {
            chain_id,
            epoch_length,
            shard_count,
            epochs,
        })
    }

    /// Checks that `c` was finalised by the trusted committee of its shard.
    pub fn verify_header(&self, c: &CertifiedHeader) -> Result<(), SpvError> {
        let h = &c.header;
        if h.chain_id != self.chain_id {
            return Err(SpvError::WrongChain {
                expected: self.chain_id,
                got: h.chain_id,
            });
        }
        if h.shard >= self.shard_count {
            return Err(SpvError::UnknownShard(h.shard));
        }
        // The era of the header's height, from the trusted records as the beacon chain defines it: a client
        // that trusts a suffix of the records answers like the beacon state for every height it covers.
        let eras = eras(
            self.epochs.values(),
            usize::from(h.shard),
            self.epoch_length,
        );
        let oldest = self.epochs.keys().next().copied().unwrap_or(0);
        let record = era_at(&eras, h.height)
            .and_then(|e| self.epochs.get(&e.epoch))
            .ok_or_else(|| SpvError::UnknownEpoch {
                shard: h.shard,
                height: h.height,
                epoch: if eras.first().is_some_and(|e| h.height < e.first) {
                    oldest.saturating_sub(1)
                } else {
                    self.newest_epoch() + 1
                },
                oldest,
                newest: self.newest_epoch(),
            })?;
        let committee = record
            .committee_of(h.shard, self.shard_count)
            .ok_or(SpvError::UnknownShard(h.shard))?;
        if !c.qc.finalises(h) {
            return Err(SpvError::CertificateMismatch);
        }
        c.qc.verify(self.chain_id, &committee)
            .map_err(|source| SpvError::Certificate {
                shard: h.shard,
                source,
            })
    }

    /// The account state the proof shows (None: the address holds nothing), once every check passed.
    pub fn verify_account(&self, p: &AccountProof) -> Result<Option<Account>, SpvError> {
        self.verify_header(&p.certified)?;
        let shown = smt::verify(
            &p.certified.header.state_root,
            &crate::types::account::account_key(&p.address),
            &p.proof,
        )?;
        let describe = |present: bool| if present { "an account" } else { "no account" };
        match (&p.account, shown) {
            (Some(a), Some(h)) if a.value_hash() == h => Ok(Some(a.clone())),
            (None, None) => Ok(None),
            (claimed, shown) => Err(SpvError::AccountMismatch {
                shown: if shown.is_some() && claimed.is_some() {
                    "another account state"
                } else {
                    describe(shown.is_some())
                },
                claimed: describe(claimed.is_some()),
            }),
        }
    }

    /// Checks that the transaction is in a certified block; returns that block's (shard, height).
    pub fn verify_tx(&self, p: &TxProof) -> Result<(ShardId, u64), SpvError> {
        self.verify_header(&p.certified)?;
        let h = &p.certified.header;
        if !smt::list_verify(&h.transactions_root, &p.tx.id(), &p.path) {
            return Err(SpvError::TxNotInBlock);
        }
        Ok((h.shard, h.height))
    }

    /// Checks a durability receipt: the deal's record is in the certified state under its id, the terms are
    /// the ones the record commits to and give that id with its owner, and the deal is active at the
    /// certified height.
    pub fn verify_deal(&self, p: &DealProof) -> Result<(), SpvError> {
        self.verify_header(&p.certified)?;
        let h = &p.certified.header;
        let shown = smt::verify(&h.state_root, &deal_key(&p.id), &p.proof)?;
        if shown != Some(p.record.value_hash()) {
            return Err(SpvError::DealMismatch(if shown.is_none() {
                "the state holds no such deal"
            } else {
                "the state holds another record for it"
            }));
        }
        if p.terms.hash() != p.record.terms || p.terms.id(&p.record.owner) != p.id {
            return Err(SpvError::DealMismatch(
                "the terms are not the ones the record commits to",
            ));
        }
        if !p.record.is_active_at(h.height) {
            return Err(SpvError::DealNotActive {
                height: h.height,
                end_height: p.record.end_height(),
            });
        }
        Ok(())
    }

    /// Checks a volume version: its record is in a certified state of the owner's shard under the version's
    /// key. Returns whether it was the volume's newest version in that state (the key of the version after
    /// it is absent there).
    pub fn verify_volume(&self, p: &VolumeProof) -> Result<bool, SpvError> {
        self.verify_header(&p.certified)?;
        let h = &p.certified.header;
        if check_name(&p.name).is_err() {
            return Err(SpvError::VolumeMismatch("not a volume name"));
        }
        if h.shard != shard_of(&p.owner, self.shard_count) {
            return Err(SpvError::VolumeMismatch(
                "the certified header is not of the owner's shard",
            ));
        }
        let id = volume_id(&p.owner, &p.name);
        let shown = smt::verify(&h.state_root, &version_key(&id, p.version), &p.proof)?;
        if shown != Some(p.record.value_hash(&id, p.version)) {
            return Err(SpvError::VolumeMismatch(if shown.is_none() {
                "the state holds no such version"
            } else {
                "the state holds another record for it"
            }));
        }
        let Some(after) = p.version.checked_add(1) else {
            return Ok(true);
        };
        Ok(smt::verify(&h.state_root, &version_key(&id, after), &p.next)?.is_none())
    }

    pub fn verify(&self, p: &Proof) -> Result<(), SpvError> {
        match p {
            Proof::Account(a) => self.verify_account(a).map(|_| ()),
            Proof::Tx(t) => self.verify_tx(t).map(|_| ()),
            Proof::Deal(d) => self.verify_deal(d),
            Proof::Volume(v) => self.verify_volume(v).map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::amount::Amount;
    use crate::beacon::Seat;
    use crate::bft::Vote;
    use crate::bft::VoteKind;
    use crate::bft::{Bls, QuorumCertificate};
    use crate::bft::{Committee, Member};
    use crate::block::Block;
    use crate::block::BlockHeader;
    use crate::crypto::{Hash, SecretKey, bls};
    use crate::genesis::{Genesis, GenesisConfig};
    use crate::ids::MemberIndex;
    use crate::ledger::{App, ShardApp};
    use crate::store::MemStore;
    use crate::tx::{Transaction, TxKind};

    struct Fixture {
        genesis: Genesis,
        keys: Vec<bls::SecretKey>,
        committee: Committee<Bls>,
        app: ShardApp<MemStore>,
        block: Block,
        qc: QuorumCertificate<Bls>,
        from: Address,
        to: Address,
    }

    fn committee(keys: &[bls::SecretKey]) -> Committee<Bls> {
        let members = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Member {
                id: Address([i as u8; 32]),
                public: k.public(),
                weight: 1,
            })
            .collect();
        Committee::new(members, [3; 32])
    }

    fn certify(
        chain_id: u32,
        keys: &[bls::SecretKey],
        committee: &Committee<Bls>,
        block: &Block,
        signers: usize,
    ) -> QuorumCertificate<Bls> {
        let votes: Vec<Vote<Bls>> = keys
            .iter()
            .take(signers)
            .enumerate()
            .map(|(i, k)| {
                Vote::sign(
                    chain_id,
                    block.header.shard,
                    VoteKind::Precommit,
                    block.header.height,
                    0,
                    Some(block.hash()),
                    MemberIndex(i as u16),
                    k,
                )
            })
            .collect();
        let refs: Vec<&Vote<Bls>> = votes.iter().collect();
        QuorumCertificate::aggregate(committee, &refs, block.hash()).expect("valid votes")
    }

    /// One shard, a block with three transfers from the devnet wallet, certified by 3 of 4 validators.
    fn fixture() -> Fixture {
        let genesis = GenesisConfig::devnet(
            1,
            4,
            Amount::from_iost(1_000).expect("small"),
            Amount::from_iost(100).expect("small"),
        )
        .build()
        .expect("genesis");
        let chain_id = genesis.params.chain_id;
        let wallet = SecretKey::dev("devnet/wallet");
        let from = Address::of(&wallet.public());
        let to = Address::of(&SecretKey::dev("spv/recipient").public());
        let mut app = ShardApp::open(&genesis, ShardId(0), MemStore::new()).expect("open");
        let txs = (0..3).map(|n| {
            Transaction {
                chain_id,
                nonce: n,
                fee: Amount(1000),
                expiry_height: 100,
                sender: wallet.public(),
                kind: TxKind::Transfer {
                    to,
                    amount: Amount::from_iost(1).expect("small"),
                },
            }
            .sign(&wallet)
        });
        let block = app.build_block(txs);
        assert_eq!(block.transactions.len(), 3, "the wallet is funded");
        let keys: Vec<bls::SecretKey> = (0..4)
            .map(|i| bls::SecretKey::dev(&format!("spv/{i}")))
            .collect();
        let committee = committee(&keys);
        let qc = certify(chain_id, &keys, &committee, &block, 3);
        app.commit(&block, qc.encode()).expect("commit");
        Fixture {
            genesis,
            keys,
            committee,
            app,
            block,
            qc,
            from,
            to,
        }
    }

    /// Epoch 0 with the fixture's committee for shard 0 (and, unused, the beacon).
    fn record(f: &Fixture, shards: usize) -> EpochRecord {
        let seats: Vec<Seat> = f
            .committee
            .members
            .iter()
            .map(|m| Seat {
                id: m.id,
                key: m.public,
                weight: m.weight,
            })
            .collect();
        EpochRecord {
            epoch: 0,
            randomness: f.committee.seed,
            committees: vec![seats; shards + 1],
            starts: vec![
                Some(crate::beacon::Start {
                    first: 1,
                    parent: None
                });
                shards
            ],
        }
    }

    fn client(f: &Fixture) -> LightClient {
        LightClient::new(f.genesis.params.chain_id, 0, 1, record(f, 1))
    }

    /// Precommits of `signers` of `committee` for `header`, with the devnet validator keys of `genesis`.
    fn certify_header(
        genesis: &Genesis,
        committee: &Committee<Bls>,
        header: &BlockHeader,
        signers: &[u16],
    ) -> QuorumCertificate<Bls> {
        let votes: Vec<Vote<Bls>> = signers
            .iter()
            .map(|&i| {
                let public = committee.members[usize::from(i)].public;
                let key = (0..genesis.accounts.len())
                    .map(|k| bls::SecretKey::dev(&format!("validator/{k}")))
                    .find(|k| k.public() == public)
                    .expect("a devnet validator");
                Vote::sign(
                    genesis.params.chain_id,
                    header.shard,
                    VoteKind::Precommit,
                    header.height,
                    0,
                    Some(header.hash()),
                    MemberIndex(i),
                    &key,
                )
            })
            .collect();
        let refs: Vec<&Vote<Bls>> = votes.iter().collect();
        QuorumCertificate::aggregate(committee, &refs, header.hash()).expect("valid votes")
    }

    #[test]
    fn clients_follow_epochs_through_certified_beacon_blocks() {
        let g = GenesisConfig::devnet(
            1,
            12,
            Amount::from_iost(1_000).expect("small"),
            Amount::from_iost(100).expect("small"),
        )
        .build()
        .expect("genesis");
        let e0 = BeaconState::genesis(&g, 4, 2).expect("enough validators");
        // Shard 0 linked to the end of each era (of 2 heights) when the next epoch is drawn: epoch 1's
        // committee takes over at height 3, epoch 2's at 5.
        let linked_to = |state: &BeaconState, height: u64| {
            let mut state = state.clone();
            state.links[0] = Some(crate::beacon::LinkedHead {
                height,
                block: [height as u8; 32],
                state_root: [0; 32],
                registry: Default::default(),
            });
            state
        };
        let mut e1 = linked_to(&e0, 2).next_epoch(16);
        e1.mix = [1; 32];
        let e2 = linked_to(&e1, 4).next_epoch(32);
        let beacon_block = |state: &BeaconState, height: u64, by: &BeaconState| {
            let mut header = crate::ledger::genesis_header(&g.params, BEACON_SHARD, state.root());
            header.height = height;
            let committee = by.committee(BEACON_SHARD).expect("the beacon's");
            let qc = certify_header(&g, &committee, &header, &[0, 1, 2]);
            EpochProof {
                certified: CertifiedHeader { header, qc },
                state: state.encode(),
            }
        };
        let to_1 = beacon_block(&e1, 7, &e0);
        let to_2 = beacon_block(&e2, 9, &e1);
        let bytes = EpochProof::encode_all(&[to_1.clone(), to_2.clone()]);
        assert_eq!(
            EpochProof::decode_all(&bytes).expect("round trip"),
            vec![to_1.clone(), to_2.clone()]
        );

        // A shard header of epoch 1 (heights 3 and 4), certified by epoch 1's committee of shard 0.
        let mut header = crate::ledger::genesis_header(&g.params, ShardId(0), [5; 32]);
        header.height = 3;
        let committee = e1.committee(ShardId(0)).expect("shard 0");
        let shard_header = CertifiedHeader {
            qc: certify_header(&g, &committee, &header, &[0, 1, 3]),
            header,
        };
        let mut client = LightClient::from_beacon(&e0);
        assert!(matches!(
            client.verify_header(&shard_header),
            Err(SpvError::UnknownEpoch {
                epoch: 1,
                newest: 0,
                ..
            })
        ));
        // Out of order, forged state, or signed by the wrong committee: refused, nothing learnt.
        assert!(client.advance(&to_2).is_err());
        let mut forged = to_1.clone();
        let mut other = e1.clone();
        other.mix = [2; 32];
        forged.state = other.encode();
        assert_eq!(client.advance(&forged), Err(SpvError::BeaconStateMismatch));
        let skipped = beacon_block(&e2, 7, &e0);
        assert!(matches!(
            client.advance(&skipped),
            Err(SpvError::NotNextEpoch {
                expected: 1,
                got: 2,
                ..
            })
        ));
        let mut shard_block = to_1.clone();
        shard_block.certified.header.shard = ShardId(0);
        assert_eq!(
            client.advance(&shard_block),
            Err(SpvError::NotBeacon(ShardId(0)))
        );
        assert_eq!(client.newest_epoch(), 0);

        assert_eq!(client.advance(&to_1), Ok(1));
        client
            .verify_header(&shard_header)
            .expect("epoch 1's committee certified it");
        assert_eq!(client.advance(&to_2), Ok(2));
        let back = LightClient::decode(&client.encode()).expect("round trip");
        assert_eq!(back.newest_epoch(), 2);
        back.verify_header(&shard_header)
            .expect("still trusts epoch 1");
    }

    fn account_proof(f: &Fixture, address: Address) -> Proof {
        Proof::Account(AccountProof {
            certified: CertifiedHeader {
                header: f.block.header.clone(),
                qc: f.qc.clone(),
            },
            address,
            account: f.app.state().account(&address).cloned(),
            proof: f.app.state().prove(&address),
        })
    }

    fn tx_proof(f: &Fixture, index: usize) -> Proof {
        let ids: Vec<Hash> = f.block.transactions.iter().map(|t| t.id()).collect();
        Proof::Tx(TxProof {
            certified: CertifiedHeader {
                header: f.block.header.clone(),
                qc: f.qc.clone(),
            },
            tx: f.block.transactions[index].clone(),
            path: smt::list_prove(&ids, index),
        })
    }

    /// Encodes and decodes (the file round trip), then verifies.
    fn check(client: &LightClient, p: &Proof) -> Result<(), SpvError> {
        let back = Proof::decode(&p.encode()).expect("round trip");
        assert_eq!(&back, p);
        client.verify(&back)
    }

    #[test]
    fn accounts_present_and_absent_and_transactions_prove() {
        let f = fixture();
        let c = client(&f);
        let Proof::Account(p) = account_proof(&f, f.to) else {
            unreachable!()
        };
        let got = c.verify_account(&p).expect("recipient proves");
        assert_eq!(
            got.map(|a| a.balance),
            Some(Amount::from_iost(3).expect("small"))
        );
        check(&c, &account_proof(&f, f.from)).expect("sender proves");
        let nobody = Address([0x42; 32]);
        let Proof::Account(p) = account_proof(&f, nobody) else {
            unreachable!()
        };
        assert_eq!(c.verify_account(&p), Ok(None), "absence proves");
        for i in 0..3 {
            check(&c, &tx_proof(&f, i)).expect("each transaction proves");
        }
        // The ledger makes the same proofs from what it committed.
        let made = f.app.prove_account(&f.to).expect("a block is committed");
        assert_eq!(Proof::Account(made), account_proof(&f, f.to));
        let id = f.block.transactions[2].id();
        let made = f.app.prove_tx(&id).expect("the transaction is committed");
        assert_eq!(Proof::Tx(made), tx_proof(&f, 2));
        assert_eq!(f.app.prove_tx(&[7; 32]), None);
    }

    /// A durability receipt: the devnet wallet opens a deal of one period with two holders; the ledger's
    /// receipt verifies with no node; a receipt with other terms, another id or a record the state does not
    /// hold is refused; once the deal's period has passed, a receipt from a later block says it ended.
    #[test]
    fn durability_receipts_prove_active_deals_and_nothing_else() {
        use crate::types::deal::{self, DealTerms, Holder};
        let mut f = fixture();
        let chain_id = f.genesis.params.chain_id;
        let wallet = SecretKey::dev("devnet/wallet");
        let owner = Address::of(&wallet.public());
        let holders: Vec<SecretKey> = (0..2).map(|i| SecretKey::dev(&format!("h{i}"))).collect();
        let terms = DealTerms {
            root: vec![1, 0x71, 0x1e, 32, 5, 5],
            size: 10_000,
            k: 1,
            m: 1,
            periods: 1,
            holders: holders
                .iter()
                .map(|k| Holder {
                    key: k.public(),
                    price: Amount(1_000_000),
                })
                .collect(),
            placement: vec![0, 1],
            segment_lens: vec![10_000],
            commitments_root: [4; 32],
        };
        let id = terms.id(&owner);
        let signatures = holders
            .iter()
            .map(|k| deal::sign(k, chain_id, &id))
            .collect();
        let mut open = Transaction {
            chain_id,
            nonce: 3,
            fee: Amount(1000),
            expiry_height: 100,
            sender: wallet.public(),
            kind: TxKind::OpenDeal {
                terms: terms.clone(),
                signatures,
            },
        };
        open.fee = open.fee_floor(Amount(1000)).expect("fits");
        let open = open.sign(&wallet);
        let commit = |f: &mut Fixture, txs: Vec<crate::tx::SignedTransaction>| {
            let block = f.app.build_block(txs);
            let qc = certify(chain_id, &f.keys, &f.committee, &block, 3);
            f.app.commit(&block, qc.encode()).expect("commit");
            block
        };
        let block = commit(&mut f, vec![open]);
        assert_eq!(block.transactions.len(), 1, "the deal opens");
        let c = client(&f);
        let receipt = f
            .app
            .prove_deal(&id)
            .expect("store")
            .expect("the deal is open");
        check(&c, &Proof::Deal(receipt.clone())).expect("the receipt verifies offline");
        assert_eq!(f.app.prove_deal(&[1; 32]).expect("store"), None);

        let mut other_terms = receipt.clone();
        other_terms.terms.size += 1;
        let mut other_id = receipt.clone();
        other_id.id = [7; 32];
        let mut richer = receipt.clone();
        richer.record.escrow_left = Amount(richer.record.escrow_left.0 + 1);
        for forged in [other_terms, other_id, richer] {
            let err = c.verify_deal(&forged).expect_err("a forged receipt");
            assert!(
                matches!(err, SpvError::DealMismatch(_) | SpvError::StateProof(_)),
                "{err}"
            );
        }

        // Opened at height 2, the deal starts on the grid at 16 and its one period covers heights 17..=32; a
        // receipt at 33 says it ended.
        for _ in 0..31 {
            commit(&mut f, Vec::new());
        }
        let late = f
            .app
            .prove_deal(&id)
            .expect("store")
            .expect("the record stays");
        assert_eq!(
            c.verify_deal(&late),
            Err(SpvError::DealNotActive {
                height: 33,
                end_height: 32
            })
        );
    }

    /// A volume version: the devnet wallet publishes two versions of "site"; each proves with no node, the
    /// first as replaced once the second is on the chain, the second as the newest; a proof with another
    /// root, name or owner is refused, and a version the chain does not have is not proven.
    #[test]
    fn volume_versions_prove_and_say_whether_they_are_the_newest() {
        let mut f = fixture();
        let chain_id = f.genesis.params.chain_id;
        let wallet = SecretKey::dev("devnet/wallet");
        let owner = Address::of(&wallet.public());
        let publish = |nonce: u64, replaces: u64, root: Vec<u8>| {
            let mut tx = Transaction {
                chain_id,
                nonce,
                fee: Amount(1000),
                expiry_height: 100,
                sender: wallet.public(),
                kind: TxKind::PublishVolume {
                    name: "site".into(),
                    replaces,
                    root,
                },
            };
            tx.fee = tx.fee_floor(Amount(1000)).expect("fits");
            tx.sign(&wallet)
        };
        let commit = |f: &mut Fixture, tx| {
            let block = f.app.build_block(vec![tx]);
            assert_eq!(block.transactions.len(), 1, "the publish applies");
            let qc = certify(chain_id, &f.keys, &f.committee, &block, 3);
            f.app.commit(&block, qc.encode()).expect("commit");
        };
        commit(&mut f, publish(3, 0, vec![1; 40]));
        let c = client(&f);
        let first = f.app.prove_volume(&owner, "site", 1).expect("version 1");
        assert_eq!(c.verify_volume(&first), Ok(true), "version 1 is the newest");
        check(&c, &Proof::Volume(first.clone())).expect("the file round trip verifies");
        assert_eq!(first.record.root, vec![1; 40]);

        commit(&mut f, publish(4, 1, vec![2; 40]));
        let c = client(&f);
        let old = f
            .app
            .prove_volume(&owner, "site", 1)
            .expect("version 1 stays");
        assert_eq!(c.verify_volume(&old), Ok(false), "version 1 was replaced");
        let new = f.app.prove_volume(&owner, "site", 2).expect("version 2");
        assert_eq!(c.verify_volume(&new), Ok(true));
        assert_eq!(f.app.prove_volume(&owner, "site", 3), None);
        assert_eq!(f.app.prove_volume(&owner, "other", 1), None);

        let mut other_root = new.clone();
        other_root.record.root = vec![1; 40];
        let mut other_name = new.clone();
        other_name.name = "blog".into();
        let mut other_owner = new.clone();
        other_owner.owner = Address([9; 32]);
        let mut stale_next = new.clone();
        stale_next.next = old.next.clone();
        for forged in [other_root, other_name, other_owner, stale_next] {
            let err = c.verify_volume(&forged).expect_err("a forged version");
            assert!(
                matches!(err, SpvError::VolumeMismatch(_) | SpvError::StateProof(_)),
                "{err}"
            );
        }
        let mut bad_name = new.clone();
        bad_name.name = "Not A Name".into();
        assert_eq!(
            c.verify_volume(&bad_name),
            Err(SpvError::VolumeMismatch("not a volume name"))
        );
    }

    #[test]
    fn trust_files_round_trip_and_refuse_garbage() {
        let f = fixture();
        let c = client(&f);
        let back = LightClient::decode(&c.encode()).expect("round trip");
        assert_eq!(back.encode(), c.encode());
        back.verify(&tx_proof(&f, 0))
            .expect("the decoded client checks proofs");
        let bytes = c.encode();
        for cut in [0, 8, 12, bytes.len() - 1] {
            assert!(LightClient::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn forged_proofs_are_refused_with_the_reason() {
        let f = fixture();
        let c = client(&f);

        let Proof::Account(mut p) = account_proof(&f, f.to) else {
            unreachable!()
        };
        p.account.as_mut().expect("present").balance = Amount::from_iost(1_000_000).expect("fits");
        assert!(matches!(
            check(&c, &Proof::Account(p)),
            Err(SpvError::AccountMismatch { .. })
        ));

        let Proof::Account(mut p) = account_proof(&f, f.to) else {
            unreachable!()
        };
        p.account = None;
        assert!(matches!(
            check(&c, &Proof::Account(p)),
            Err(SpvError::AccountMismatch { .. })
        ));

        let Proof::Account(mut p) = account_proof(&f, f.to) else {
            unreachable!()
        };
        p.certified.header.state_root = [9; 32];
        assert_eq!(
            check(&c, &Proof::Account(p)),
            Err(SpvError::CertificateMismatch)
        );

        // Two of four signers is no quorum, and a committee the client does not trust is not one either.
        let Proof::Account(mut p) = account_proof(&f, f.to) else {
            unreachable!()
        };
        p.certified.qc = certify(
            f.genesis.params.chain_id,
            &f.keys,
            &f.committee,
            &f.block,
            2,
        );
        assert!(matches!(
            check(&c, &Proof::Account(p)),
            Err(SpvError::Certificate {
                source: QcError::NoQuorum { .. },
                ..
            })
        ));
        let strangers: Vec<bls::SecretKey> = (0..4)
            .map(|i| bls::SecretKey::dev(&format!("stranger/{i}")))
            .collect();
        let Proof::Account(mut p) = account_proof(&f, f.to) else {
            unreachable!()
        };
        p.certified.qc = certify(
            f.genesis.params.chain_id,
            &strangers,
            &committee(&strangers),
            &f.block,
            4,
        );
        assert!(matches!(
            check(&c, &Proof::Account(p)),
            Err(SpvError::Certificate {
                source: QcError::BadSignature,
                ..
            })
        ));

        let Proof::Tx(mut p) = tx_proof(&f, 1) else {
            unreachable!()
        };
        p.path.index = 2;
        assert_eq!(check(&c, &Proof::Tx(p)), Err(SpvError::TxNotInBlock));

        let other = LightClient::new(f.genesis.params.chain_id + 1, 0, 1, record(&f, 1));
        assert!(matches!(
            other.verify(&tx_proof(&f, 0)),
            Err(SpvError::WrongChain { .. })
        ));
        let unsharded = LightClient::new(f.genesis.params.chain_id, 0, 0, record(&f, 0));
        assert_eq!(
            unsharded.verify(&tx_proof(&f, 0)),
            Err(SpvError::UnknownShard(ShardId(0)))
        );
    }

    #[test]
    fn truncated_and_garbage_files_are_decode_errors() {
        let f = fixture();
        let bytes = tx_proof(&f, 0).encode();
        for cut in [0, 7, 8, 9, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(Proof::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Proof::decode(&trailing).is_err());
        let mut other_kind = bytes;
        other_kind[9] = 7;
        assert!(Proof::decode(&other_kind).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(0u8..=255, 0..600)) {
            let mut framed = MAGIC.to_vec();
            framed.push(VERSION);
            framed.extend_from_slice(&bytes);
            let _ = Proof::decode(&framed);
            let _ = Proof::decode(&bytes);
            let mut trust = TRUST_MAGIC.to_vec();
            trust.push(TRUST_VERSION);
            trust.extend_from_slice(&bytes);
            let _ = LightClient::decode(&trust);
        }
    }
}
