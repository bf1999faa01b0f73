//! Proof files and the certified headers they start from: the structs a light client checks, a full node
//! serves, and the beacon chain hands off epochs with, and their codecs (the formats are in [`crate::spv`]).
//! They live in the types layer so that the ledger and the beacon can build them without depending on the
//! light client that checks them.

use crate::address::Address;
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::Hash;
use crate::smt::{self, ListProof};
use crate::types::account::Account;
use crate::types::deal::{DealRecord, DealTerms};
use crate::types::header::BlockHeader;
use crate::types::tx::{SignedTransaction, TX_BYTES_MAX};
use crate::types::volume::{VOLUME_NAME_BYTES_MAX, VOLUME_ROOT_BYTES_MAX, VolumeVersion};
use crate::types::vote::{Bls, QuorumCertificate};

/// The magic and version of a proof file; the tests of [`crate::spv`] forge files with them.
pub(crate) const MAGIC: &[u8; 8] = b"IOSPROOF";
pub(crate) const VERSION: u8 = 1;
const EPOCHS_MAGIC: &[u8; 8] = b"IOSEPOCH";
/// Epoch proofs in one file, at most.
pub const EPOCH_PROOFS_MAX: usize = 64;
/// An encoded beacon state in an epoch proof, at most.
const BEACON_STATE_BYTES_MAX: usize = 4 << 20;
const QC_BYTES_MAX: usize = 4096;
const ACCOUNT_BYTES_MAX: usize = 256;
const DEAL_RECORD_BYTES_MAX: usize = 256;

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

/// A durability receipt: that a storage deal, with these terms, is recorded in a certified state of the
/// shard that escrows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealProof {
    pub certified: CertifiedHeader,
    pub id: Hash,
    pub record: DealRecord,
    pub terms: DealTerms,
    pub proof: smt::Proof,
}

/// That version `version` of the volume `(owner, name)` is recorded, with this root, in a certified state of
/// the owner's shard; and, through `next` (the state's proof for version + 1, present or absent), whether it
/// was the volume's newest version there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeProof {
    pub certified: CertifiedHeader,
    pub owner: Address,
    pub name: String,
    pub version: u64,
    pub record: VolumeVersion,
    pub proof: smt::Proof,
    pub next: smt::Proof,
}

/// A proof file of any kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    Account(AccountProof),
    Tx(TxProof),
    Deal(DealProof),
    Volume(VolumeProof),
}

/// How a light client learns the next epoch's committees: the beacon block that drew the epoch, certified
/// by the previous epoch's beacon committee, and the beacon state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochProof {
    pub certified: CertifiedHeader,
    pub state: Vec<u8>,
}

impl EpochProof {
    pub fn encode_all(proofs: &[EpochProof]) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed(EPOCHS_MAGIC)
            .u8(VERSION)
            .u32(u32::try_from(proofs.len()).expect("at most EPOCH_PROOFS_MAX proofs"));
        for p in proofs {
            p.certified.encode_into(&mut w);
            w.var(&p.state);
        }
        w.finish()
    }

    pub fn decode_all(bytes: &[u8]) -> Result<Vec<EpochProof>, DecodeError> {
        let mut r = Reader::new(bytes);
        if &r.array::<8>()? != EPOCHS_MAGIC {
            return Err(DecodeError::Invalid("epoch proofs magic"));
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let count = r.count("epoch proofs", EPOCH_PROOFS_MAX, 8)?;
        let mut proofs = Vec::with_capacity(count);
        for _ in 0..count {
            let certified = CertifiedHeader::decode_from(&mut r)?;
            let state = r.var("beacon state", BEACON_STATE_BYTES_MAX)?.to_vec();
            proofs.push(EpochProof { certified, state });
        }
        r.finish()?;
        Ok(proofs)
    }
}

impl CertifiedHeader {
    pub fn encode_into(&self, w: &mut Writer) {
        self.header.encode_into(w);
        w.var(&self.qc.encode());
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let header = BlockHeader::decode_from(r)?;
        let qc = QuorumCertificate::decode(r.var("certificate", QC_BYTES_MAX)?)?;
        Ok(CertifiedHeader { header, qc })
    }
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
                p.path.encode_into(&mut w);
            }
            Proof::Deal(p) => {
                w.u8(3);
                p.certified.encode_into(&mut w);
                w.fixed(&p.id).var(&p.record.encode());
                p.terms.encode_into(&mut w);
                p.proof.encode_into(&mut w);
            }
            Proof::Volume(p) => {
                w.u8(4);
                p.certified.encode_into(&mut w);
                w.fixed(&p.owner.0)
                    .var(p.name.as_bytes())
                    .u64(p.version)
                    .var(&p.record.encode());
                p.proof.encode_into(&mut w);
                p.next.encode_into(&mut w);
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
                let path = ListProof::decode_from(&mut r)?;
                Proof::Tx(TxProof {
                    certified,
                    tx,
                    path,
                })
            }
            3 => {
                let certified = CertifiedHeader::decode_from(&mut r)?;
                let id = r.array()?;
                let record = DealRecord::decode(r.var("deal record", DEAL_RECORD_BYTES_MAX)?)?;
                let terms = DealTerms::decode_from(&mut r)?;
                let proof = smt::Proof::decode_from(&mut r)?;
                Proof::Deal(DealProof {
                    certified,
                    id,
                    record,
                    terms,
                    proof,
                })
            }
            4 => {
                let certified = CertifiedHeader::decode_from(&mut r)?;
                let owner = Address(r.array()?);
                let name = String::from_utf8(r.var("volume name", VOLUME_NAME_BYTES_MAX)?.to_vec())
                    .map_err(|_| DecodeError::Invalid("volume name"))?;
                let version = r.u64()?;
                let record =
                    VolumeVersion::decode(r.var("volume version", VOLUME_ROOT_BYTES_MAX + 16)?)?;
                let proof = smt::Proof::decode_from(&mut r)?;
                let next = smt::Proof::decode_from(&mut r)?;
                Proof::Volume(VolumeProof {
                    certified,
                    owner,
                    name,
                    version,
                    record,
                    proof,
                    next,
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
