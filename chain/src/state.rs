//! Account state of one shard, its authenticated root, and the execution of transactions.
//!
//! Every account is a leaf of the shard's [`SparseMerkleTree`] keyed by its address; the value hash is a
//! hash of the account's versioned encoding. Fees are not burnt: they accumulate in the shard's fee pool (a
//! leaf under a reserved key) from which later slices pay proposers and storage nodes. So the total supply
//! (balances + stakes + unbonding + fee pool) is conserved by every transaction, and tests check it.

use crate::address::{Address, ShardId, shard_of};
use crate::amount::Amount;
use crate::atomix::{self, Inbound, InboundError, Lock, Totals};
use crate::codec::Writer;
use crate::crypto::{Hash, hash_with};
use crate::registry::{self, Cursor, RegistryEvent};
use crate::smt::{self, SparseMerkleTree};
use crate::store::{Store, StoreError, WriteBatch};
use crate::tx::{Role, SignedTransaction, TxError, TxKind};
pub use crate::types::account::Account;
use std::collections::{BTreeMap, BTreeSet};

const KEY_ACCOUNT_PREFIX: &[u8] = b"state/acct/";
const KEY_FEE_POOL: &[u8] = b"state/fee_pool";
/// `state/registry/<count:u64 BE>` -> the `count`-th registry event (from 1) this shard emitted.
const KEY_REGISTRY_PREFIX: &[u8] = b"state/registry/";
/// `state/atomix/<tree key>` -> the value hash of an Atomix lock or done leaf.
const KEY_ATOMIX_PREFIX: &[u8] = b"state/atomix/";
const KEY_ATOMIX_TOTALS: &[u8] = b"state/atomix_totals";

/// The chain rules that execution needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainParams {
    pub chain_id: u32,
    pub shard_count: u16,
    pub fee_min: Amount,
    /// Blocks between an unstake and the moment its amount is spendable again.
    pub unbonding_delay_blocks: u64,
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
        self.tree.insert(address.0, account.value_hash());
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
        self.tree.prove(&address.0)
    }

    /// Balances, stakes, unbonding amounts and the fee pool, summed.
    pub fn total_supply(&self) -> u128 {
        self.accounts.values().map(Account::holdings).sum::<u128>() + u128::from(self.fee_pool.0)
    }

    /// What this shard has locked out to other shards and committed in from them, since genesis.
    pub fn atomix_totals(&self) -> Totals {
        self.totals
    }

    /// The supply this shard answers for: its holdings, plus what it locked out, minus what it committed
    /// in. Every transaction and every inbound leaves it unchanged, so it always equals the shard's genesis
    /// supply.
    pub fn accountable_supply(&self) -> u128 {
        self.total_supply() + self.totals.locked_out - self.totals.committed_in
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
        for (lock, _) in &inbound.locks {
            if self.is_committed(&lock.tx_id) || !seen.insert(lock.tx_id) {
                return Err(InboundError::AlreadyCommitted(
                    lock.tx_id[..8].iter().map(|b| format!("{b:02x}")).collect(),
                ));
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
        if signature_verified {
            stx.check_stateless_signature_verified(self.params.chain_id)?;
        } else {
            stx.check_stateless(self.params.chain_id)?;
        }
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
        if tx.fee < self.params.fee_min {
            return Err(TxError::FeeTooLow {
                min: self.params.fee_min,
                got: tx.fee,
            });
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
        // Matured unbonding becomes spendable the first time the account acts after the delay.
        if sender.unbonding.0 > 0 && height >= sender.unbonding_release_height {
            sender.balance = sender
                .balance
                .checked_add(sender.unbonding)
                .ok_or(TxError::Overflow)?;
            sender.unbonding = Amount::ZERO;
        }
        let outgoing = match &tx.kind {
            TxKind::Transfer { amount, .. }
            | TxKind::RegisterValidator { stake: amount, .. }
            | TxKind::RegisterStorageNode { stake: amount } => *amount,
            TxKind::Unstake { .. } => Amount::ZERO,
        };
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
        match &tx.kind {
            TxKind::Transfer { to, amount } => {
                if shard_of(to, self.params.shard_count) != self.shard {
                    // Atomix: the amount waits in a lock for the recipient's shard to commit it.
                    lock = Some(Lock {
                        tx_id: stx.id(),
                        from,
                        to: *to,
                        amount: *amount,
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
        let event = match &tx.kind {
            TxKind::Transfer { .. } => None,
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
            state.tree.insert(address.0, account.value_hash());
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
        state.dirty.clear();
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

    const SHARD: ShardId = 0;

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

    fn tx(key: &SecretKey, nonce: u64, kind: TxKind) -> SignedTransaction {
        Transaction {
            chain_id: params().chain_id,
            sender: key.public(),
            nonce,
            fee: Amount(1_000),
            expiry_height: 50,
            kind,
        }
        .sign(key)
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
        };
        let header = crate::block::BlockHeader {
            chain_id: params.chain_id,
            shard: home,
            height: 1,
            parent: [0; 32],
            state_root: input.root(),
            transactions_root: [0; 32],
            receipts_root: [0; 32],
        };
        let inbound = Inbound {
            header,
            certificate: Vec::new(),
            locks: vec![(lock.clone(), input.prove_lock(&lock.tx_id))],
        };

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
        let mut elsewhere = State::new(params.clone(), (away + 1) % 4);
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
            let mut store = MemStore::new();
            let mut batch = WriteBatch::default();
            state.persist_into(&mut batch);
            store.write(batch).expect("in-memory");
            let mut loaded = State::load(params.clone(), state.shard(), &store).expect("loads");
            assert_eq!(loaded.root(), state.root());
            assert_eq!(loaded.atomix_totals(), state.atomix_totals());
            assert_eq!(loaded.accountable_supply(), state.accountable_supply());
        }

        // A sender on another shard is still refused.
        let mut elsewhere = State::new(params, (home + 1) % 4);
        let t = pay(&alice, 0, "x", 1);
        assert!(matches!(
            elsewhere.apply(&t, 1),
            Err(TxError::WrongShard { .. })
        ));
    }

    #[test]
    fn proofs_of_accounts_against_the_state_root() {
        let (mut state, alice) = setup();
        state.apply(&pay(&alice, 0, "bob", 1), 1).expect("valid");
        let root = state.root();
        let me = Address::of(&alice.public());
        let account = state.account(&me).cloned().expect("exists");
        assert_eq!(
            smt::verify(&root, &me.0, &state.prove(&me)),
            Ok(Some(account.value_hash()))
        );
        let nobody = Address::of(&SecretKey::dev("nobody").public());
        assert_eq!(
            smt::verify(&root, &nobody.0, &state.prove(&nobody)),
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
