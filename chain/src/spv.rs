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
//!   block means the transaction took effect.
//!
//! ```text
//! file      := "IOSPROOF" version:u8 (=1) kind:u8 (1 account, 2 transaction) certified body
//! certified := header qc:var
//! account   := address:[32] present:u8 (account:var)? smt_proof
//! smt_proof := count:u32 sibling:[32]* terminal:u8 (0 empty | 1 key:[32] value_hash:[32])
//! tx        := signed_transaction:var list_proof
//! list_proof:= index:u64 len:u64 count:u32 sibling:[32]*
//! ```

use std::collections::BTreeMap;

use crate::address::Address;
use crate::bft::{Bls, COMMITTEE_SIZE_MAX, Committee, Member, QcError, QuorumCertificate};
use crate::block::BlockHeader;
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::bls;
use crate::smt::{self, ListProof, ProofError};
use crate::state::Account;
use crate::tx::{SignedTransaction, TX_BYTES_MAX};

const MAGIC: &[u8; 8] = b"IOSPROOF";
const TRUST_MAGIC: &[u8; 8] = b"IOSTRUST";
const VERSION: u8 = 1;
const QC_BYTES_MAX: usize = 4096;
const ACCOUNT_BYTES_MAX: usize = 256;

/// A header and the certificate that finalised it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedHeader {
    pub header: BlockHeader,
    pub qc: QuorumCertificate<Bls>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountProof {
    pub certified: CertifiedHeader,
    pub address: Address,
    pub account: Option<Account>,
    pub proof: smt::Proof,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxProof {
    pub certified: CertifiedHeader,
    pub tx: SignedTransaction,
    pub path: ListProof,
}

/// A proof file of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    Account(AccountProof),
    Tx(TxProof),
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpvError {
    #[error("not a proof file: {0}")]
    Decode(#[from] DecodeError),
    #[error("the proof is for chain {got}, this client follows chain {expected}")]
    WrongChain { expected: u32, got: u32 },
    #[error("no trusted committee for shard {0}")]
    UnknownShard(u16),
    #[error(
        "the certificate is not a precommit quorum for this header (shard, height or block differ)"
    )]
    CertificateMismatch,
    #[error(
        "the certificate does not verify against the trusted committee of shard {shard}: {source} (committees change every epoch: if this proof is newer than the trust file, refresh it with `huds chain trust`)"
    )]
    Certificate { shard: u16, source: QcError },
    #[error("the state proof does not match the certified state root: {0}")]
    StateProof(#[from] ProofError),
    #[error("the state proof shows {shown}, the file claims {claimed}")]
    AccountMismatch {
        shown: &'static str,
        claimed: &'static str,
    },
    #[error("the transaction is not in the certified block at the index claimed")]
    TxNotInBlock,
}

/// The committees a light client trusts, by shard, for one chain.
#[derive(Debug, Clone)]
pub struct LightClient {
    pub chain_id: u32,
    committees: BTreeMap<u16, Committee<Bls>>,
}

impl LightClient {
    pub fn new(chain_id: u32, committees: BTreeMap<u16, Committee<Bls>>) -> Self {
        LightClient {
            chain_id,
            committees,
        }
    }

    /// The trust file: what the client trusts, written where it can check proofs later.
    ///
    /// ```text
    /// trust := "IOSTRUST" version:u8 (=1) chain_id:u32 shards:u16
    ///          (shard:u16 seed:[32] members:u16 (id:[32] bls_public:[48] weight_hi:u64 weight_lo:u64)*)*
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed(TRUST_MAGIC)
            .u8(VERSION)
            .u32(self.chain_id)
            .u16(self.committees.len() as u16);
        for (shard, c) in &self.committees {
            w.u16(*shard).fixed(&c.seed).u16(c.members.len() as u16);
            for m in &c.members {
                w.fixed(&m.id.0)
                    .fixed(&m.public.0)
                    .u64((m.weight >> 64) as u64)
                    .u64(m.weight as u64);
            }
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if &r.array::<8>()? != TRUST_MAGIC {
            return Err(DecodeError::Invalid("trust file magic"));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let chain_id = r.u32()?;
        let shards = usize::from(r.u16()?);
        let mut committees = BTreeMap::new();
        for _ in 0..shards {
            let shard = r.u16()?;
            let seed = r.array()?;
            let n = usize::from(r.u16()?);
            if n == 0 || n > COMMITTEE_SIZE_MAX {
                return Err(DecodeError::Invalid("committee size"));
            }
            let mut members = Vec::with_capacity(n.min(r.remaining() / 112));
            let mut total: u128 = 0;
            for _ in 0..n {
                let id = Address(r.array()?);
                let public = bls::PublicKey(r.array()?);
                let weight = (u128::from(r.u64()?) << 64) | u128::from(r.u64()?);
                total = total
                    .checked_add(weight)
                    .ok_or(DecodeError::Invalid("committee weight"))?;
                members.push(Member { id, public, weight });
            }
            if total == 0 {
                return Err(DecodeError::Invalid("committee weight"));
            }
            if committees
                .insert(shard, Committee::new(members, seed))
                .is_some()
            {
                return Err(DecodeError::Invalid("shard listed twice"));
            }
        }
        r.finish()?;
        Ok(LightClient {
            chain_id,
            committees,
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
        let committee = self
            .committees
            .get(&h.shard)
            .ok_or(SpvError::UnknownShard(h.shard))?;
        if !c.qc.finalises(h) {
            return Err(SpvError::CertificateMismatch);
        }
        c.qc.verify(self.chain_id, committee)
            .map_err(|source| SpvError::Certificate {
                shard: h.shard,
                source,
            })
    }

    /// The account state the proof shows (None: the address holds nothing), once every check passed.
    pub fn verify_account(&self, p: &AccountProof) -> Result<Option<Account>, SpvError> {
        self.verify_header(&p.certified)?;
        let shown = smt::verify(&p.certified.header.state_root, &p.address.0, &p.proof)?;
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
    pub fn verify_tx(&self, p: &TxProof) -> Result<(u16, u64), SpvError> {
        self.verify_header(&p.certified)?;
        let h = &p.certified.header;
        if !smt::list_verify(&h.transactions_root, &p.tx.id(), &p.path) {
            return Err(SpvError::TxNotInBlock);
        }
        Ok((h.shard, h.height))
    }

    pub fn verify(&self, p: &Proof) -> Result<(), SpvError> {
        match p {
            Proof::Account(a) => self.verify_account(a).map(|_| ()),
            Proof::Tx(t) => self.verify_tx(t).map(|_| ()),
        }
    }
}

impl CertifiedHeader {
    fn encode_into(&self, w: &mut Writer) {
        self.header.encode_into(w);
        w.var(&self.qc.encode());
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let header = BlockHeader::decode_from(r)?;
        let qc = QuorumCertificate::decode(r.var("certificate", QC_BYTES_MAX)?)?;
        Ok(CertifiedHeader { header, qc })
    }
}

fn encode_list_proof(w: &mut Writer, p: &ListProof) {
    w.u64(p.index).u64(p.len).u32(p.siblings.len() as u32);
    for s in &p.siblings {
        w.fixed(s);
    }
}

fn decode_list_proof(r: &mut Reader<'_>) -> Result<ListProof, DecodeError> {
    let index = r.u64()?;
    let len = r.u64()?;
    let n = r.count("list proof siblings", smt::LIST_PROOF_SIBLINGS_MAX, 32)?;
    let siblings = (0..n).map(|_| r.array()).collect::<Result<_, _>>()?;
    Ok(ListProof {
        index,
        len,
        siblings,
    })
}

impl Proof {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed(MAGIC).u8(VERSION);
        match self {
            Proof::Account(p) => {
                w.u8(1);
                p.certified.encode_into(&mut w);
                w.fixed(&p.address.0);
                match &p.account {
                    Some(a) => w.u8(1).var(&a.encode()),
                    None => w.u8(0),
                };
                p.proof.encode_into(&mut w);
            }
            Proof::Tx(p) => {
                w.u8(2);
                p.certified.encode_into(&mut w);
                w.var(&p.tx.encode());
                encode_list_proof(&mut w, &p.path);
            }
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if &r.array::<8>()? != MAGIC {
            return Err(DecodeError::Invalid("proof magic"));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let proof = match r.u8()? {
            1 => {
                let certified = CertifiedHeader::decode_from(&mut r)?;
                let address = Address(r.array()?);
                let account = match r.u8()? {
                    0 => None,
                    1 => Some(Account::decode(r.var("account", ACCOUNT_BYTES_MAX)?)?),
                    tag => {
                        return Err(DecodeError::UnknownTag {
                            what: "account presence",
                            tag,
                        });
                    }
                };
                let proof = smt::Proof::decode_from(&mut r)?;
                Proof::Account(AccountProof {
                    certified,
                    address,
                    account,
                    proof,
                })
            }
            2 => {
                let certified = CertifiedHeader::decode_from(&mut r)?;
                let tx = SignedTransaction::decode(r.var("transaction", TX_BYTES_MAX)?)
                    .map_err(|_| DecodeError::Invalid("transaction"))?;
                let path = decode_list_proof(&mut r)?;
                Proof::Tx(TxProof {
                    certified,
                    tx,
                    path,
                })
            }
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "proof kind",
                    tag,
                });
            }
        };
        r.finish()?;
        Ok(proof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::Amount;
    use crate::bft::Vote;
    use crate::bft::VoteKind;
    use crate::block::Block;
    use crate::crypto::{Hash, SecretKey, bls};
    use crate::genesis::{Genesis, GenesisConfig};
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
                    i as u16,
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
        let mut app = ShardApp::open(&genesis, 0, MemStore::new()).expect("open");
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

    fn client(f: &Fixture) -> LightClient {
        LightClient::new(
            f.genesis.params.chain_id,
            BTreeMap::from([(0, f.committee.clone())]),
        )
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

        let other = LightClient::new(f.genesis.params.chain_id + 1, BTreeMap::new());
        assert!(matches!(
            other.verify(&tx_proof(&f, 0)),
            Err(SpvError::WrongChain { .. })
        ));
        let unsharded = LightClient::new(f.genesis.params.chain_id, BTreeMap::new());
        assert_eq!(
            unsharded.verify(&tx_proof(&f, 0)),
            Err(SpvError::UnknownShard(0))
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
            trust.push(VERSION);
            trust.extend_from_slice(&bytes);
            let _ = LightClient::decode(&trust);
        }
    }
}
