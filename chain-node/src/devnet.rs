//! A whole chain on loopback in one process: `S` shards and the beacon chain, 4 validators each, every
//! validator with its own libp2p swarm and its own RocksDB under `dir/validator-<i>`. Used by `huds devnet`,
//! the tests and `huds bench chain`.
//!
//! Genesis is a pure function of the shard count and the funded wallet's address (validator keys are the
//! deterministic devnet keys of `GenesisConfig::devnet`), so a devnet restarted on its directory computes the
//! same genesis and every validator resumes from its database.

use chain::ShardId;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chain::crypto::bls;
use chain::genesis::{Genesis, GenesisConfig, GenesisError};
use chain::{Address, Amount};
use libp2p::Multiaddr;

use super::api::ChainApi;
use super::beacon::{Beacon, BeaconError};
use super::validator::{Validator, ValidatorConfig, ValidatorError, ValidatorHandle};
use chain::block::BEACON_SHARD;

pub const COMMITTEE_SIZE: usize = 4;
pub const VALIDATOR_STAKE_IOST: u64 = 1_000_000;
pub const WALLET_IOST: u64 = 1_000_000;
/// The storage stake of each devnet storage node registered at genesis: what a missed proof is slashed from.
pub const STORAGE_STAKE_IOST: u64 = 1_000;
/// Blocks a candidate's registration stays valid for.
const CANDIDATE_EXPIRY_BLOCKS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    #[error("devnet genesis: {0}")]
    Genesis(#[from] GenesisError),
    #[error(transparent)]
    Beacon(#[from] BeaconError),
    #[error("validator {index}: {source}")]
    Validator {
        index: usize,
        source: ValidatorError,
    },
    #[error("a devnet has 1 to 64 shards, not {0}")]
    Shards(u16),
}

/// What a devnet chain is made of.
#[derive(Clone)]
pub struct DevnetOptions {
    pub shards: u16,
    /// The accounts funded at genesis with [`WALLET_IOST`] each.
    pub wallets: Vec<Address>,
    /// Storage nodes registered at genesis with [`STORAGE_STAKE_IOST`] each of storage stake.
    pub storage_nodes: Vec<Address>,
    pub block_txs_max: usize,
    pub bft: Option<fn(u32, ShardId) -> chain::bft::Config>,
    pub sync_writes: bool,
    /// Shard heights per epoch (0: no epoch changes).
    pub epoch_length: u64,
    /// Validators beyond the committees' seats, so that every epoch some seats change hands.
    pub spares: usize,
    /// Validators that run from the start but are not in the genesis registry: each is funded at genesis
    /// and registers itself with a `RegisterValidator` transaction once the devnet runs, so its stake
    /// reaches the beacon's registry through its shard's cross-links and it can be drawn from the next epoch.
    pub candidates: usize,
}

impl DevnetOptions {
    pub fn new(shards: u16, wallets: Vec<Address>) -> Self {
        Self {
            shards,
            wallets,
            storage_nodes: Vec::new(),
            block_txs_max: 1024,
            bft: None,
            sync_writes: true,
            epoch_length: DEFAULT_EPOCH_LENGTH,
            spares: usize::from(shards) + 1,
            candidates: 0,
        }
    }

    /// Validators in the genesis registry: a committee for each shard, one for the beacon chain, and the
    /// spares.
    pub fn registered_count(&self) -> usize {
        (usize::from(self.shards) + 1) * COMMITTEE_SIZE + self.spares
    }

    /// Validators that run: the registered ones, then the candidates.
    pub fn validator_count(&self) -> usize {
        self.registered_count() + self.candidates
    }
}

/// Shard heights per epoch in a devnet: about 40 s of an idle shard.
pub const DEFAULT_EPOCH_LENGTH: u64 = 256;

/// The devnet genesis: `validators` validators (deterministic devnet keys), the given wallets funded,
/// `candidates` more validator accounts (the next devnet keys) funded with a stake and fees but not
/// registered, and the given storage nodes registered with [`STORAGE_STAKE_IOST`] of storage stake.
pub fn genesis(
    shards: u16,
    validators: usize,
    candidates: usize,
    wallets: &[Address],
    storage_nodes: &[Address],
) -> Result<Genesis, GenesisError> {
    let stake = Amount::from_iost(VALIDATOR_STAKE_IOST).expect("a small amount");
    let funded = Amount::from_iost(WALLET_IOST).expect("a small amount");
    let mut config = GenesisConfig::devnet(shards, validators, stake, funded);
    config.wallets = wallets.iter().map(|a| (*a, funded)).collect();
    let candidate_funds =
        Amount::from_iost(VALIDATOR_STAKE_IOST + CANDIDATE_FEES_IOST).expect("a small amount");
    config.wallets.extend(
        (validators..validators + candidates).map(|i| (validator_account(i), candidate_funds)),
    );
    let storage_stake = Amount::from_iost(STORAGE_STAKE_IOST).expect("a small amount");
    config.storage_nodes = storage_nodes.iter().map(|a| (*a, storage_stake)).collect();
    config.build()
}

/// What a candidate holds beyond its stake, for fees.
const CANDIDATE_FEES_IOST: u64 = 1_000;

fn validator_secret(i: usize) -> chain::crypto::SecretKey {
    chain::crypto::SecretKey::dev(&format!("validator/{i}"))
}

fn validator_account(i: usize) -> Address {
    Address::of(&validator_secret(i).public())
}

/// A running devnet chain.
pub struct ChainDevnet {
    pub genesis: Arc<Genesis>,
    pub beacon: Arc<Beacon>,
    dir: PathBuf,
    options: DevnetOptions,
    /// Validator `i`, `None` while stopped.
    validators: Vec<Option<Validator>>,
    addrs: Vec<Vec<Multiaddr>>,
}

impl ChainDevnet {
    pub async fn start(dir: &Path, options: DevnetOptions) -> Result<Self, DevnetError> {
        if options.shards == 0 || options.shards > 64 {
            return Err(DevnetError::Shards(options.shards));
        }
        let count = options.validator_count();
        let genesis = Arc::new(genesis(
            options.shards,
            options.registered_count(),
            options.candidates,
            &options.wallets,
            &options.storage_nodes,
        )?);
        let beacon = Arc::new(Beacon::from_genesis(
            &genesis,
            COMMITTEE_SIZE,
            options.epoch_length,
        )?);
        let mut net = Self {
            genesis,
            beacon,
            dir: dir.to_path_buf(),
            options,
            validators: (0..count).map(|_| None).collect(),
            addrs: vec![Vec::new(); count],
        };
        for i in 0..count {
            net.start_validator(i).await?;
        }
        net.register_candidates().await?;
        Ok(net)
    }

    /// The accounts of the candidates (validators not in the genesis registry).
    pub fn candidates(&self) -> Vec<Address> {
        (self.options.registered_count()..self.validators.len())
            .map(validator_account)
            .collect()
    }

    /// Each candidate stakes [`VALIDATOR_STAKE_IOST`] with its BLS key and proof of possession, submitted
    /// to a validator keeping its account's shard. A candidate already registered (a restarted devnet) has
    /// used nonce 0, so its transaction is refused as replayed and nothing changes.
    async fn register_candidates(&self) -> Result<(), DevnetError> {
        let params = &self.genesis.params;
        for i in self.options.registered_count()..self.validators.len() {
            let key = validator_secret(i);
            let account = Address::of(&key.public());
            let shard = chain::shard_of(&account, params.shard_count);
            let Some(entry) = self
                .handles()
                .into_iter()
                .find(|h| h.status().lane.shard == shard)
            else {
                continue;
            };
            let bls_key = bls::SecretKey::dev(&format!("validator/{i}"));
            let tx = chain::Transaction {
                chain_id: params.chain_id,
                sender: key.public(),
                nonce: 0,
                fee: params.fee_min,
                expiry_height: entry.status().lane.height + CANDIDATE_EXPIRY_BLOCKS,
                kind: chain::TxKind::RegisterValidator {
                    stake: Amount::from_iost(VALIDATOR_STAKE_IOST).expect("a small amount"),
                    bls_public_key: bls_key.public(),
                    proof_of_possession: bls_key.proof_of_possession(&account),
                },
            }
            .sign(&key);
            entry
                .submit(vec![tx])
                .await
                .map_err(|source| DevnetError::Validator { index: i, source })?;
        }
        Ok(())
    }

    fn config(&self, i: usize) -> ValidatorConfig {
        let seed = blake3::derive_key(
            "HUDS devnet validator p2p key v1",
            &(i as u64).to_be_bytes(),
        );
        let peers = self
            .addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, a)| a.iter().cloned())
            .collect();
        let account = validator_account(i);
        ValidatorConfig {
            genesis: self.genesis.clone(),
            beacon: self.beacon.clone(),
            account,
            bls_secret: bls::SecretKey::dev(&format!("validator/{i}")),
            keypair: {
                let mut seed = seed;
                libp2p::identity::Keypair::ed25519_from_bytes(&mut seed)
                    .expect("any 32 bytes are an ed25519 secret key")
            },
            db_dir: self.dir.join(format!("validator-{i}")),
            listen: "/ip4/127.0.0.1/tcp/0".parse().expect("a valid multiaddr"),
            peers,
            block_txs_max: self.options.block_txs_max,
            bft: self.options.bft,
            epoch_length: self.options.epoch_length,
            sync_writes: self.options.sync_writes,
        }
    }

    /// Starts (or restarts) validator `i` on its database.
    pub async fn start_validator(&mut self, i: usize) -> Result<(), DevnetError> {
        let v = Validator::start(self.config(i))
            .await
            .map_err(|source| DevnetError::Validator { index: i, source })?;
        self.addrs[i] = v.handle.addrs();
        self.validators[i] = Some(v);
        Ok(())
    }

    /// Stops validator `i` at once, as a crash would.
    pub async fn kill_validator(&mut self, i: usize) {
        if let Some(v) = self.validators[i].take() {
            v.kill().await;
        }
    }

    pub fn validator_count(&self) -> usize {
        self.validators.len()
    }

    /// The running validators' handles.
    pub fn handles(&self) -> Vec<ValidatorHandle> {
        self.validators
            .iter()
            .flatten()
            .map(|v| v.handle.clone())
            .collect()
    }

    /// Validator `i`'s handle, if it runs.
    pub fn handle(&self, i: usize) -> Option<ValidatorHandle> {
        self.validators[i].as_ref().map(|v| v.handle.clone())
    }

    /// The shard validator `i` works on now (`BEACON_SHARD`: none, it only keeps the beacon chain),
    /// or in epoch 0 if it is stopped.
    pub fn shard_of_validator(&self, i: usize) -> ShardId {
        match &self.validators[i] {
            Some(v) => v.handle.status().lane.shard,
            None => self
                .beacon
                .seat_of(&validator_account(i))
                .map_or(BEACON_SHARD, |a| a.shard),
        }
    }

    /// Whether validator `i` runs and is a member of the committee deciding its shard's next height.
    pub fn is_member(&self, i: usize) -> bool {
        self.validators[i]
            .as_ref()
            .is_some_and(|v| v.handle.status().lane.member)
    }

    /// What the node API serves the chain with.
    pub fn api(&self) -> ChainApi {
        ChainApi::new(self.genesis.clone(), self.beacon.clone(), self.handles())
    }

    pub async fn shutdown(self) {
        for v in self.validators.into_iter().flatten() {
            v.shutdown().await;
        }
    }
}
