//! The genesis allocation: 21,000,000,000 IOST, split as the seed describes, on devnets too.
//!
//! | allocation | share | IOST |
//! |---|---|---|
//! | sale | 40% | 8,400,000,000 |
//! | foundation | 35% | 7,350,000,000 |
//! | community | 12.5% | 2,625,000,000 |
//! | team | 10% | 2,100,000,000 |
//! | advisors | 2.5% | 525,000,000 |
//!
//! A devnet's validators (their stake) and funded wallets are carved out of the community allocation, so the
//! total is exactly 21,000,000,000 IOST whatever the devnet configuration.

use crate::address::{Address, shard_of};
use crate::amount::Amount;
use crate::crypto::{PublicKey, SecretKey, bls};
use crate::ids::ShardId;
use crate::state::{Account, ChainParams, State};

pub const TOTAL_SUPPLY: Amount = Amount(21_000_000_000 * crate::amount::BASE_UNITS_PER_IOST);

/// Shares in parts per thousand.
pub const SHARES_PER_MILLE: [(&str, u64); 5] = [
    ("sale", 400),
    ("foundation", 350),
    ("community", 125),
    ("team", 100),
    ("advisors", 25),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisValidator {
    pub account: PublicKey,
    pub bls_public_key: bls::PublicKey,
    pub proof_of_possession: bls::Signature,
    pub stake: Amount,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenesisConfig {
    pub params: ChainParams,
    /// The holders of the five allocations, in the order of [`SHARES_PER_MILLE`].
    pub allocation_holders: [Address; 5],
    pub validators: Vec<GenesisValidator>,
    pub wallets: Vec<(Address, Amount)>,
    /// Storage nodes registered at genesis with this storage stake (added to the account when the address
    /// is also a wallet's).
    pub storage_nodes: Vec<(Address, Amount)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    #[error(
        "devnet validators and wallets need {needed}, more than the community allocation {available}"
    )]
    CommunityExhausted { needed: Amount, available: Amount },
    #[error("validator {0} has an invalid BLS key or proof of possession")]
    BadValidatorKey(usize),
    #[error("validator {0} has the BLS key of an earlier validator")]
    DuplicateValidatorKey(usize),
    #[error("two allocations name the same address {0}")]
    DuplicateAddress(Address),
}

impl GenesisConfig {
    /// A devnet: allocation holders and validators with deterministic dev keys (never for real funds),
    /// `validators` validators staking `stake` each, and one wallet funded with `wallet`.
    pub fn devnet(shard_count: u16, validators: usize, stake: Amount, wallet: Amount) -> Self {
        let holder =
            |label: &str| Address::of(&SecretKey::dev(&format!("genesis/{label}")).public());
        let allocation_holders = SHARES_PER_MILLE.map(|(label, _)| holder(label));
        let validators = (0..validators)
            .map(|i| {
                let bls = bls::SecretKey::dev(&format!("validator/{i}"));
                let account = SecretKey::dev(&format!("validator/{i}")).public();
                GenesisValidator {
                    account,
                    bls_public_key: bls.public(),
                    proof_of_possession: bls.proof_of_possession(&Address::of(&account)),
                    stake,
                }
            })
            .collect();
        let wallets = vec![(
            Address::of(&SecretKey::dev("devnet/wallet").public()),
            wallet,
        )];
        Self {
            params: ChainParams::devnet(shard_count),
            allocation_holders,
            validators,
            wallets,
            storage_nodes: Vec::new(),
        }
    }

    /// Every funded account of the whole chain, over all shards.
    pub fn accounts(&self) -> Result<Vec<(Address, Account)>, GenesisError> {
        let mut devnet_total = Amount::ZERO;
        for amount in self
            .validators
            .iter()
            .map(|v| v.stake)
            .chain(self.wallets.iter().map(|w| w.1))
            .chain(self.storage_nodes.iter().map(|n| n.1))
        {
            devnet_total =
                devnet_total
                    .checked_add(amount)
                    .ok_or(GenesisError::CommunityExhausted {
                        needed: Amount(u64::MAX),
                        available: Amount::ZERO,
                    })?;
        }
        let mut accounts: Vec<(Address, Account)> = Vec::new();
        for ((label, per_mille), holder) in SHARES_PER_MILLE.iter().zip(self.allocation_holders) {
            let mut amount = TOTAL_SUPPLY
                .mul_div(*per_mille, 1000)
                .expect("a share of the supply fits");
            if *label == "community" {
                amount =
                    amount
                        .checked_sub(devnet_total)
                        .ok_or(GenesisError::CommunityExhausted {
                            needed: devnet_total,
                            available: amount,
                        })?;
            }
            accounts.push((
                holder,
                Account {
                    balance: amount,
                    ..Account::default()
                },
            ));
        }
        let mut keys = std::collections::BTreeSet::new();
        for (i, v) in self.validators.iter().enumerate() {
            v.bls_public_key
                .verify_proof_of_possession(&Address::of(&v.account), &v.proof_of_possession)
                .map_err(|_| GenesisError::BadValidatorKey(i))?;
            // One key, one validator: the beacon's registry holds each key once (`specs/consensus.md`
            // §4.6), so genesis may not start with two.
            if !keys.insert(v.bls_public_key) {
                return Err(GenesisError::DuplicateValidatorKey(i));
            }
            let account = Account {
                validator_stake: v.stake,
                validator_key: Some(v.bls_public_key),
                ..Account::default()
            };
            accounts.push((Address::of(&v.account), account));
        }
        for (address, amount) in &self.wallets {
            accounts.push((
                *address,
                Account {
                    balance: *amount,
                    ..Account::default()
                },
            ));
        }
        for (address, stake) in &self.storage_nodes {
            let staked = |account: &mut Account| {
                account.storage_stake = *stake;
                account.storage_registered = true;
            };
            match accounts.iter_mut().find(|(a, _)| a == address) {
                Some((_, account)) if !account.storage_registered => staked(account),
                Some(_) => return Err(GenesisError::DuplicateAddress(*address)),
                None => {
                    let mut account = Account::default();
                    staked(&mut account);
                    accounts.push((*address, account));
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (address, _) in &accounts {
            if !seen.insert(*address) {
                return Err(GenesisError::DuplicateAddress(*address));
            }
        }
        Ok(accounts)
    }

    /// The genesis state of one shard: the funded accounts that live on it.
    pub fn shard_state(&self, shard: ShardId) -> Result<State, GenesisError> {
        Ok(self.build()?.shard_state(shard))
    }

    /// Checks the configuration once (validator keys, community allocation, duplicates).
    pub fn build(&self) -> Result<Genesis, GenesisError> {
        Ok(Genesis {
            params: self.params.clone(),
            accounts: self.accounts()?,
        })
    }
}

/// A checked genesis: every funded account of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    pub params: ChainParams,
    pub accounts: Vec<(Address, Account)>,
}

impl Genesis {
    /// The genesis state of one shard: the funded accounts that live on it.
    pub fn shard_state(&self, shard: ShardId) -> State {
        let mut state = State::new(self.params.clone(), shard);
        for (address, account) in &self.accounts {
            if shard_of(address, self.params.shard_count) == shard {
                state.set_account(*address, account.clone());
            }
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iost(n: u64) -> Amount {
        Amount::from_iost(n).expect("fits")
    }

    #[test]
    fn allocation_is_exact_in_base_units() {
        let config = GenesisConfig {
            validators: vec![],
            wallets: vec![],
            storage_nodes: vec![],
            ..GenesisConfig::devnet(1, 0, Amount(0), Amount(0))
        };
        let accounts = config.accounts().expect("valid");
        let balances: Vec<Amount> = accounts.iter().map(|(_, a)| a.balance).collect();
        assert_eq!(
            balances,
            [
                iost(8_400_000_000),
                iost(7_350_000_000),
                iost(2_625_000_000),
                iost(2_100_000_000),
                iost(525_000_000)
            ]
        );
        assert_eq!(
            balances.iter().map(|a| u128::from(a.0)).sum::<u128>(),
            2_100_000_000_000_000_000
        );
    }

    #[test]
    fn devnet_extras_come_out_of_community_and_supply_is_exact_over_shards() {
        let mut config = GenesisConfig::devnet(3, 12, iost(1_000_000), iost(5_000));
        // A storage node on the wallet's address and one on its own.
        let wallet = config.wallets[0].0;
        let node = Address([9; 32]);
        config.storage_nodes = vec![(wallet, iost(100)), (node, iost(50))];
        let accounts = config.accounts().expect("valid");
        let community = accounts[2].1.balance;
        assert_eq!(community, iost(2_625_000_000 - 12_000_000 - 5_000 - 150));
        let of = |a: &Address| {
            accounts
                .iter()
                .find(|(b, _)| b == a)
                .map(|(_, x)| x.clone())
        };
        let w = of(&wallet).expect("the wallet");
        assert_eq!(
            (w.balance, w.storage_stake, w.storage_registered),
            (iost(5_000), iost(100), true)
        );
        let n = of(&node).expect("the node");
        assert_eq!(
            (n.balance, n.storage_stake, n.storage_registered),
            (Amount::ZERO, iost(50), true)
        );
        let mut twice = config.clone();
        twice.storage_nodes.push((node, iost(1)));
        assert_eq!(twice.accounts(), Err(GenesisError::DuplicateAddress(node)));
        let total: u128 = (0..3)
            .map(|s| {
                config
                    .shard_state(ShardId(s))
                    .expect("valid")
                    .total_supply()
            })
            .sum();
        assert_eq!(total, u128::from(TOTAL_SUPPLY.0));
        let validators = accounts
            .iter()
            .filter(|(_, a)| a.validator_key.is_some())
            .count();
        assert_eq!(validators, 12);
    }

    #[test]
    fn impossible_devnets_are_refused() {
        let greedy = GenesisConfig::devnet(1, 1, iost(3_000_000_000), Amount(0));
        assert!(matches!(
            greedy.accounts(),
            Err(GenesisError::CommunityExhausted { .. })
        ));
        let mut bad_key = GenesisConfig::devnet(1, 2, iost(1), Amount(0));
        bad_key.validators[1].proof_of_possession = bad_key.validators[0].proof_of_possession;
        assert_eq!(bad_key.accounts(), Err(GenesisError::BadValidatorKey(1)));
        // Validator 0's key and proof under validator 1's account: the proof names account 0.
        let mut replayed = GenesisConfig::devnet(1, 2, iost(1), Amount(0));
        replayed.validators[1].bls_public_key = replayed.validators[0].bls_public_key;
        replayed.validators[1].proof_of_possession = replayed.validators[0].proof_of_possession;
        assert_eq!(replayed.accounts(), Err(GenesisError::BadValidatorKey(1)));
        // The same key with a good proof for each account (one operator's key twice) is still refused.
        let mut twice = GenesisConfig::devnet(1, 2, iost(1), Amount(0));
        let key = bls::SecretKey::dev("validator/0");
        twice.validators[1].bls_public_key = key.public();
        twice.validators[1].proof_of_possession =
            key.proof_of_possession(&Address::of(&twice.validators[1].account));
        assert_eq!(
            twice.accounts(),
            Err(GenesisError::DuplicateValidatorKey(1))
        );
        let mut dup = GenesisConfig::devnet(1, 0, iost(1), iost(1));
        dup.wallets.push(dup.wallets[0]);
        assert!(matches!(
            dup.accounts(),
            Err(GenesisError::DuplicateAddress(_))
        ));
    }
}
