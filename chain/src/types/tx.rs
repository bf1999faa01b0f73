//! Transactions: what they say, how they are encoded and signed, and the checks that need no state.
//!
//! Encoding (version 1, all integers big-endian):
//! ```text
//! transaction := version:u8 (=1) chain_id:u32 sender:[32] nonce:u64 fee:u64 expiry_height:u64 kind
//! kind        := 0 to:[32] amount:u64                          transfer
//!              | 1 stake:u64 bls_public_key:[48] pop:[96]      register validator (pop: crypto::bls, for the sender)
//!              | 2 stake:u64                                   register storage node
//!              | 3 role:u8 amount:u64                          unstake (role 0 validator, 1 storage node)
//!              | 4 terms signatures:u32-count [64]*            open a storage deal (types/deal.rs)
//!              | 5 deal:[32]                                   end a storage deal early
//!              | 6 name:var replaces:u64 root:var              publish a volume version (types/volume.rs)
//! signed      := transaction signature:[64]
//! ```
//! The signature is ed25519 (`verify_strict`) over `"IOS/tx/v1\0" || transaction`, so it commits to the
//! chain id and can never be confused with any other signed message. A signed transaction is at most
//! [`TX_BYTES_MAX`] bytes.

use crate::address::Address;
use crate::amount::Amount;
use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, Hash, PublicKey, SecretKey, Signature, bls, domain, hash_with};
use crate::ids::ShardId;
use crate::types::deal::{self, DEAL_HOLDERS_MAX, DealError, DealTerms};
use crate::types::storage_proof::{PROOF_FEE_BYTES, proof_bytes_bound};
use crate::types::volume::{self, VOLUME_NAME_BYTES_MAX, VOLUME_ROOT_BYTES_MAX, VolumeError};

pub const TX_VERSION: u8 = 1;
/// Room for the largest kind: a deal of [`deal::DEAL_SHARDS_MAX`] shards (a placement byte each),
/// [`deal::DEAL_SEGMENTS_MAX`] segments (a length each) and [`DEAL_HOLDERS_MAX`] holders (key, price and
/// signature each): 9,824 bytes. Anything larger is rejected before decoding.
pub const TX_BYTES_MAX: usize = 256
    + deal::DEAL_ROOT_BYTES_MAX
    + deal::DEAL_SHARDS_MAX
    + deal::DEAL_SEGMENTS_MAX * 8
    + DEAL_HOLDERS_MAX * (32 + 8 + 64);

/// Which stake an unstake draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Validator,
    StorageNode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxKind {
    Transfer {
        to: Address,
        amount: Amount,
    },
    RegisterValidator {
        stake: Amount,
        bls_public_key: bls::PublicKey,
        proof_of_possession: bls::Signature,
    },
    RegisterStorageNode {
        stake: Amount,
    },
    /// Moves stake to an unbonding balance that returns to the spendable balance after the unbonding delay.
    Unstake {
        role: Role,
        amount: Amount,
    },
    /// Opens a storage deal paid by the sender: the escrow the terms need leaves its balance, and the deal
    /// is active from this block, signed by every holder (one signature per holder, in the terms' order).
    OpenDeal {
        terms: DealTerms,
        signatures: Vec<Signature>,
    },
    /// Ends the sender's deal after the current period: the escrow of the periods not begun is refunded.
    EndDeal {
        deal: Hash,
    },
    /// Publishes version `replaces + 1` of the sender's volume `name` (`replaces` 0 creates it); refused
    /// unless the volume's newest version is `replaces`.
    PublishVolume {
        name: String,
        replaces: u64,
        root: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub chain_id: u32,
    pub sender: PublicKey,
    /// Must equal the sender's account nonce: each nonce is usable once, in order.
    pub nonce: u64,
    pub fee: Amount,
    /// The last block height at which this transaction may be included.
    pub expiry_height: u64,
    pub kind: TxKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTransaction {
    pub tx: Transaction,
    pub signature: Signature,
}

/// Why a transaction was rejected. Each variant says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("malformed transaction: {0}")]
    Malformed(#[from] DecodeError),
    #[error("transaction is {len} bytes, the maximum is {max}")]
    Oversized { len: usize, max: usize },
    #[error("transaction is for chain {got}, this is chain {expected}")]
    WrongChainId { expected: u32, got: u32 },
    #[error("bad signature: {0}")]
    BadSignature(crypto::CryptoError),
    #[error("nonce {got} was already used (account nonce is {expected}): replayed transaction")]
    ReplayedNonce { expected: u64, got: u64 },
    #[error(
        "nonce {got} is ahead of the account nonce {expected}: send the missing transactions first"
    )]
    FutureNonce { expected: u64, got: u64 },
    #[error("transaction expired at height {expiry_height}, the block is at height {height}")]
    Expired { expiry_height: u64, height: u64 },
    #[error("overspend: needs {needed} IOST, the account has {available} IOST")]
    Overspend { needed: Amount, available: Amount },
    #[error("fee {got} is below the minimum {min}")]
    FeeTooLow { min: Amount, got: Amount },
    #[error("amount must be greater than zero")]
    ZeroAmount,
    #[error("sender lives on shard {sender_shard}, not on this shard {shard}")]
    WrongShard {
        shard: ShardId,
        sender_shard: ShardId,
    },
    #[error("the account is already registered in that role")]
    AlreadyRegistered,
    #[error("a storage node registers with at least {min} of stake, not {stake}")]
    StakeBelowMinimum { stake: Amount, min: Amount },
    #[error("unstake of {requested} exceeds the {staked} staked in that role")]
    InsufficientStake { requested: Amount, staked: Amount },
    #[error("invalid validator key: {0}")]
    BadValidatorKey(crypto::CryptoError),
    #[error("amount overflow")]
    Overflow,
    #[error("the mempool is full; retry later")]
    MempoolFull,
    #[error(
        "nonce {got} is more than {window} ahead of the account nonce {expected}: send the earlier ones first"
    )]
    NonceTooFar {
        expected: u64,
        got: u64,
        window: u64,
    },
    #[error("expiry height {expiry_height} is too far ahead: at most {max}")]
    ExpiryTooFar { expiry_height: u64, max: u64 },
    #[error("impossible deal: {0}")]
    Deal(#[from] DealError),
    #[error("the deal has {holders} holders but carries {signatures} signatures")]
    DealSignatureCount { holders: usize, signatures: usize },
    #[error("holder {0} did not sign this deal")]
    DealSignature(usize),
    #[error("that deal is already open")]
    DealExists,
    #[error("no such deal on this shard")]
    UnknownDeal,
    #[error("only the deal's owner may end it")]
    NotDealOwner,
    #[error("{0}")]
    DealEnded(#[from] deal::DealEndError),
    #[error("malformed volume publish: {0}")]
    Volume(#[from] VolumeError),
    #[error(
        "the volume is at version {head}, and the publish replaces version {replaces}: read the volume again and publish on top of version {head}"
    )]
    VolumeVersion { head: u64, replaces: u64 },
}

impl Transaction {
    pub fn sender_address(&self) -> Address {
        Address::of(&self.sender)
    }

    /// The least fee the transaction may carry, `fee_min` being the chain's fee per transaction. A deal
    /// prepays, besides its own, the block space of every proof of storage its holders may submit (one per
    /// holder and period): a fee for each started [`PROOF_FEE_BYTES`] of the holder's largest possible proof
    /// (`proof_bytes_bound`), the bytes a transaction's fee buys. Proofs carry no fee of their own, so this is
    /// what makes filling blocks with proofs cost what filling them with transactions costs
    /// (`specs/economics.md` §5.2).
    pub fn fee_floor(&self, fee_min: Amount) -> Result<Amount, TxError> {
        match &self.kind {
            TxKind::OpenDeal { terms, .. } => {
                let units: u128 = (0..terms.holders.len())
                    .map(|h| {
                        let bytes = proof_bytes_bound(terms, u8::try_from(h).unwrap_or(u8::MAX));
                        bytes.div_ceil(PROOF_FEE_BYTES) as u128
                    })
                    .sum();
                units
                    .checked_mul(u128::from(terms.periods))
                    .and_then(|proofs| proofs.checked_add(1))
                    .and_then(|n| n.checked_mul(u128::from(fee_min.0)))
                    .and_then(|fee| u64::try_from(fee).ok())
                    .map(Amount)
                    .ok_or(TxError::Overflow)
            }
            // A volume version is state every validator keeps for ever: a fee for each started
            // `VOLUME_FEE_BYTES` of it, besides the transaction's own.
            TxKind::PublishVolume { root, .. } => {
                let units = (8 + root.len()).div_ceil(volume::VOLUME_FEE_BYTES) as u64;
                units
                    .checked_add(1)
                    .and_then(|n| n.checked_mul(fee_min.0))
                    .map(Amount)
                    .ok_or(TxError::Overflow)
            }
            _ => Ok(fee_min),
        }
    }

    /// What the transaction moves out of the sender's balance besides its fee: the amount sent, the stake,
    /// or a deal's escrow.
    pub fn outgoing(&self) -> Result<Amount, TxError> {
        Ok(match &self.kind {
            TxKind::Transfer { amount, .. }
            | TxKind::RegisterValidator { stake: amount, .. }
            | TxKind::RegisterStorageNode { stake: amount } => *amount,
            TxKind::OpenDeal { terms, .. } => terms.escrow()?,
            TxKind::Unstake { .. } | TxKind::EndDeal { .. } | TxKind::PublishVolume { .. } => {
                Amount::ZERO
            }
        })
    }

    pub fn encode_into(&self, w: &mut Writer) {
        w.u8(TX_VERSION)
            .u32(self.chain_id)
            .fixed(&self.sender.0)
            .u64(self.nonce);
        w.u64(self.fee.0).u64(self.expiry_height);
        match &self.kind {
            TxKind::Transfer { to, amount } => {
                w.u8(0).fixed(&to.0).u64(amount.0);
            }
            TxKind::RegisterValidator {
                stake,
                bls_public_key,
                proof_of_possession,
            } => {
                w.u8(1)
                    .u64(stake.0)
                    .fixed(&bls_public_key.0)
                    .fixed(&proof_of_possession.0);
            }
            TxKind::RegisterStorageNode { stake } => {
                w.u8(2).u64(stake.0);
            }
            TxKind::Unstake { role, amount } => {
                let role = match role {
                    Role::Validator => 0,
                    Role::StorageNode => 1,
                };
                w.u8(3).u8(role).u64(amount.0);
            }
            TxKind::OpenDeal { terms, signatures } => {
                w.u8(4);
                terms.encode_into(w);
                w.u32(signatures.len() as u32);
                for s in signatures {
                    w.fixed(&s.0);
                }
            }
            TxKind::EndDeal { deal } => {
                w.u8(5).fixed(deal);
            }
            TxKind::PublishVolume {
                name,
                replaces,
                root,
            } => {
                w.u8(6).var(name.as_bytes()).u64(*replaces).var(root);
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode_into(&mut w);
        w.finish()
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != TX_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let chain_id = r.u32()?;
        let sender = PublicKey(r.array()?);
        let nonce = r.u64()?;
        let fee = Amount(r.u64()?);
        let expiry_height = r.u64()?;
        let kind = match r.u8()? {
            0 => TxKind::Transfer {
                to: Address(r.array()?),
                amount: Amount(r.u64()?),
            },
            1 => TxKind::RegisterValidator {
                stake: Amount(r.u64()?),
                bls_public_key: bls::PublicKey(r.array()?),
                proof_of_possession: bls::Signature(r.array()?),
            },
            2 => TxKind::RegisterStorageNode {
                stake: Amount(r.u64()?),
            },
            3 => {
                let role = match r.u8()? {
                    0 => Role::Validator,
                    1 => Role::StorageNode,
                    tag => return Err(DecodeError::UnknownTag { what: "role", tag }),
                };
                TxKind::Unstake {
                    role,
                    amount: Amount(r.u64()?),
                }
            }
            4 => {
                let terms = DealTerms::decode_from(r)?;
                let count = r.count("deal signatures", DEAL_HOLDERS_MAX, 64)?;
                let signatures = (0..count)
                    .map(|_| r.array().map(Signature))
                    .collect::<Result<_, _>>()?;
                TxKind::OpenDeal { terms, signatures }
            }
            5 => TxKind::EndDeal { deal: r.array()? },
            6 => {
                let name = r.var("volume name", VOLUME_NAME_BYTES_MAX)?;
                let name = String::from_utf8(name.to_vec())
                    .map_err(|_| DecodeError::Invalid("volume name (not UTF-8)"))?;
                TxKind::PublishVolume {
                    name,
                    replaces: r.u64()?,
                    root: r.var("volume root", VOLUME_ROOT_BYTES_MAX)?.to_vec(),
                }
            }
            tag => {
                return Err(DecodeError::UnknownTag {
                    what: "transaction kind",
                    tag,
                });
            }
        };
        Ok(Self {
            chain_id,
            sender,
            nonce,
            fee,
            expiry_height,
            kind,
        })
    }

    fn signing_message(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.fixed(domain::TX);
        self.encode_into(&mut w);
        w.finish()
    }

    pub fn sign(self, key: &SecretKey) -> SignedTransaction {
        assert_eq!(
            key.public(),
            self.sender,
            "a transaction is signed by its sender"
        );
        let signature = key.sign(&self.signing_message());
        SignedTransaction {
            tx: self,
            signature,
        }
    }
}

impl SignedTransaction {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.tx.encode_into(&mut w);
        w.fixed(&self.signature.0);
        w.finish()
    }

    pub fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tx = Transaction::decode_from(r)?;
        let signature = Signature(r.array()?);
        Ok(Self { tx, signature })
    }

    /// Decodes one signed transaction from untrusted bytes: size first, then structure, then no trailing
    /// bytes. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, TxError> {
        if bytes.len() > TX_BYTES_MAX {
            return Err(TxError::Oversized {
                len: bytes.len(),
                max: TX_BYTES_MAX,
            });
        }
        let mut r = Reader::new(bytes);
        let tx = Self::decode_from(&mut r)?;
        r.finish()?;
        Ok(tx)
    }

    /// The transaction id: a hash of the whole signed encoding.
    pub fn id(&self) -> Hash {
        hash_with(domain::TX_ID, &[&self.encode()])
    }

    /// Every check that needs no account state: chain id, form (amounts, deal terms), and every signature.
    /// State checks (nonce, balance, expiry) are in [`crate::state`].
    pub fn check_stateless(&self, chain_id: u32) -> Result<(), TxError> {
        self.check_stateless_signature_verified(chain_id)?;
        self.check_signature()
    }

    /// [`SignedTransaction::check_stateless`] for a transaction whose signatures this node already verified
    /// (its id, which covers them, is in the caller's verified set): the cheap checks only.
    pub fn check_stateless_signature_verified(&self, chain_id: u32) -> Result<(), TxError> {
        self.check_chain_id(chain_id)?;
        self.check_form()
    }

    fn check_chain_id(&self, chain_id: u32) -> Result<(), TxError> {
        if self.tx.chain_id != chain_id {
            return Err(TxError::WrongChainId {
                expected: chain_id,
                got: self.tx.chain_id,
            });
        }
        Ok(())
    }

    /// Every signature the transaction carries: the sender's, a validator key's proof of possession, a deal's
    /// holders'. The costly part of a check (up to 33 signatures for a deal), so callers run it after the
    /// cheap form and state checks, and once per transaction id (the verified sets of the ledger and node).
    pub fn check_signature(&self) -> Result<(), TxError> {
        self.tx
            .sender
            .verify(&self.tx.signing_message(), &self.signature)
            .map_err(TxError::BadSignature)?;
        match &self.tx.kind {
            TxKind::RegisterValidator {
                bls_public_key,
                proof_of_possession,
                ..
            } => {
                // The proof must be made for this sender: one copied from another account's registration
                // does not verify.
                bls_public_key
                    .verify_proof_of_possession(&self.tx.sender_address(), proof_of_possession)
                    .map_err(TxError::BadValidatorKey)?;
            }
            TxKind::OpenDeal { terms, signatures } => {
                let id = terms.id(&self.tx.sender_address());
                let message = deal::signing_message(self.tx.chain_id, &id);
                for (i, (holder, signature)) in terms.holders.iter().zip(signatures).enumerate() {
                    holder
                        .key
                        .verify(&message, signature)
                        .map_err(|_| TxError::DealSignature(i))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn check_form(&self) -> Result<(), TxError> {
        match &self.tx.kind {
            TxKind::Transfer { amount, .. }
            | TxKind::RegisterStorageNode { stake: amount }
            | TxKind::Unstake { amount, .. } => {
                if amount.0 == 0 {
                    return Err(TxError::ZeroAmount);
                }
            }
            TxKind::RegisterValidator { stake, .. } => {
                if stake.0 == 0 {
                    return Err(TxError::ZeroAmount);
                }
            }
            TxKind::OpenDeal { terms, signatures } => {
                terms.check()?;
                if signatures.len() != terms.holders.len() {
                    return Err(TxError::DealSignatureCount {
                        holders: terms.holders.len(),
                        signatures: signatures.len(),
                    });
                }
            }
            TxKind::EndDeal { .. } => {}
            TxKind::PublishVolume {
                name,
                replaces,
                root,
            } => volume::check_publish(name, *replaces, root)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CHAIN: u32 = 7;

    fn transfer(nonce: u64) -> Transaction {
        let alice = SecretKey::dev("alice");
        Transaction {
            chain_id: CHAIN,
            sender: alice.public(),
            nonce,
            fee: Amount(1_000),
            expiry_height: 100,
            kind: TxKind::Transfer {
                to: Address::of(&SecretKey::dev("bob").public()),
                amount: Amount(5),
            },
        }
    }

    fn all_kinds() -> Vec<Transaction> {
        let bls = bls::SecretKey::dev("v");
        let kinds = [
            transfer(0).kind,
            TxKind::RegisterValidator {
                stake: Amount(9),
                bls_public_key: bls.public(),
                proof_of_possession: bls.proof_of_possession(&transfer(0).sender_address()),
            },
            TxKind::RegisterStorageNode { stake: Amount(3) },
            TxKind::Unstake {
                role: Role::Validator,
                amount: Amount(1),
            },
            TxKind::Unstake {
                role: Role::StorageNode,
                amount: Amount(2),
            },
            largest_deal(),
            TxKind::EndDeal { deal: [4; 32] },
            TxKind::PublishVolume {
                name: "site".into(),
                replaces: 3,
                root: vec![5; 100],
            },
        ];
        kinds
            .into_iter()
            .map(|kind| Transaction {
                kind,
                ..transfer(3)
            })
            .collect()
    }

    /// A deal as large as a transaction may carry: the most holders, segments and shards, each holder's
    /// signature valid for alice's deal on chain [`CHAIN`].
    fn largest_deal() -> TxKind {
        let holders: Vec<SecretKey> = (0..DEAL_HOLDERS_MAX)
            .map(|i| SecretKey::dev(&format!("holder{i}")))
            .collect();
        let n = deal::DEAL_SHARDS_MAX / deal::DEAL_SEGMENTS_MAX;
        let segments = deal::DEAL_SEGMENTS_MAX;
        let terms = DealTerms {
            root: vec![7; deal::DEAL_ROOT_BYTES_MAX],
            size: u64::MAX,
            k: 2,
            m: (n - 2) as u8,
            periods: deal::DEAL_PERIODS_MAX,
            holders: holders
                .iter()
                .map(|k| deal::Holder {
                    key: k.public(),
                    price: Amount(1),
                })
                .collect(),
            placement: (0..segments * n)
                .map(|i| (i % DEAL_HOLDERS_MAX) as u8)
                .collect(),
            segment_lens: vec![1 << 20; segments],
            commitments_root: [1; 32],
        };
        let id = terms.id(&Address::of(&SecretKey::dev("alice").public()));
        let signatures = holders.iter().map(|k| deal::sign(k, CHAIN, &id)).collect();
        TxKind::OpenDeal { terms, signatures }
    }

    #[test]
    fn every_kind_round_trips_and_verifies() {
        let key = SecretKey::dev("alice");
        for tx in all_kinds() {
            let signed = tx.clone().sign(&key);
            let bytes = signed.encode();
            assert!(bytes.len() <= TX_BYTES_MAX, "{} bytes", bytes.len());
            assert_eq!(SignedTransaction::decode(&bytes), Ok(signed.clone()));
            assert_eq!(signed.check_stateless(CHAIN), Ok(()));
        }
    }

    #[test]
    fn bad_input_is_rejected_with_a_reason() {
        let key = SecretKey::dev("alice");
        let signed = transfer(0).sign(&key);
        let bytes = signed.encode();

        assert_eq!(
            signed.check_stateless(CHAIN + 1),
            Err(TxError::WrongChainId {
                expected: CHAIN + 1,
                got: CHAIN
            })
        );
        let mut tampered = signed.clone();
        tampered.tx.nonce = 1;
        assert_eq!(
            tampered.check_stateless(CHAIN),
            Err(TxError::BadSignature(crypto::CryptoError::BadEdSignature))
        );

        // The same transaction re-signed for another chain does not verify on this one.
        let other_chain = Transaction {
            chain_id: CHAIN + 1,
            ..transfer(0)
        }
        .sign(&key);
        let mut replayed = other_chain;
        replayed.tx.chain_id = CHAIN;
        assert!(matches!(
            replayed.check_stateless(CHAIN),
            Err(TxError::BadSignature(_))
        ));

        let too_big = vec![0u8; TX_BYTES_MAX + 1];
        assert_eq!(
            SignedTransaction::decode(&too_big),
            Err(TxError::Oversized {
                len: TX_BYTES_MAX + 1,
                max: TX_BYTES_MAX
            })
        );
        assert!(matches!(
            SignedTransaction::decode(&bytes[..bytes.len() - 1]),
            Err(TxError::Malformed(_))
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            SignedTransaction::decode(&trailing),
            Err(TxError::Malformed(DecodeError::TrailingBytes(1)))
        );
        let mut version = bytes.clone();
        version[0] = 2;
        assert_eq!(
            SignedTransaction::decode(&version),
            Err(TxError::Malformed(DecodeError::UnknownVersion(2)))
        );
        let mut kind = bytes;
        kind[1 + 4 + 32 + 8 + 8 + 8] = 9;
        assert!(matches!(
            SignedTransaction::decode(&kind),
            Err(TxError::Malformed(DecodeError::UnknownTag { tag: 9, .. }))
        ));

        let zero = Transaction {
            kind: TxKind::Transfer {
                to: Address([1; 32]),
                amount: Amount(0),
            },
            ..transfer(0)
        };
        assert_eq!(
            zero.sign(&key).check_stateless(CHAIN),
            Err(TxError::ZeroAmount)
        );

        let bls_key = bls::SecretKey::dev("v");
        let wrong_pop = Transaction {
            kind: TxKind::RegisterValidator {
                stake: Amount(1),
                bls_public_key: bls_key.public(),
                proof_of_possession: bls::SecretKey::dev("w")
                    .proof_of_possession(&transfer(0).sender_address()),
            },
            ..transfer(0)
        };
        assert_eq!(
            wrong_pop.sign(&key).check_stateless(CHAIN),
            Err(TxError::BadValidatorKey(
                crypto::CryptoError::BadProofOfPossession
            ))
        );

        // Alice's registration, copied by Mallory: the key and its proof are good, but the proof was made
        // for Alice's account, so Mallory's transaction is refused (a proof of the key alone was accepted
        // from anyone).
        let alices = TxKind::RegisterValidator {
            stake: Amount(1),
            bls_public_key: bls_key.public(),
            proof_of_possession: bls_key.proof_of_possession(&transfer(0).sender_address()),
        };
        assert_eq!(
            Transaction {
                kind: alices.clone(),
                ..transfer(0)
            }
            .sign(&key)
            .check_stateless(CHAIN),
            Ok(())
        );
        let mallory = SecretKey::dev("mallory");
        let replayed = Transaction {
            sender: mallory.public(),
            kind: alices,
            ..transfer(0)
        };
        assert_eq!(
            replayed.sign(&mallory).check_stateless(CHAIN),
            Err(TxError::BadValidatorKey(
                crypto::CryptoError::BadProofOfPossession
            ))
        );
    }

    proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            // Whatever decodes must re-encode to exactly the same bytes: the encoding is canonical.
            if let Ok(tx) = SignedTransaction::decode(&bytes) {
                prop_assert_eq!(tx.encode(), bytes);
            }
        }

        #[test]
        fn decoding_mutated_transactions_never_panics(
            index in 0usize..300, value in any::<u8>(), cut in 0usize..300, which in 0usize..5,
        ) {
            let signed = all_kinds()[which].clone().sign(&SecretKey::dev("alice"));
            let mut bytes = signed.encode();
            let i = index % bytes.len();
            bytes[i] = value;
            bytes.truncate(bytes.len() - cut.min(bytes.len()));
            if let Ok(tx) = SignedTransaction::decode(&bytes) {
                prop_assert_eq!(tx.encode(), bytes);
            }
        }
    }
}
