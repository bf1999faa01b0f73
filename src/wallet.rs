//! `huds wallet` and `huds chain`: the home's IOS account, and the chain as a running node sees it.
//!
//! The account key is `wallet.key` in the home (32 secret bytes, made by `huds init` or `huds wallet new`).
//! Transactions are signed here, on the client, and sent to the node's API, which answers once they are
//! final; the node never sees the key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use chain::crypto::SecretKey;
use chain::{Address, Amount, Transaction, TxKind, shard_of};
use serde_json::{Value, json};

use crate::api_client;

/// Shard count assumed when no node is asked (the devnet default), for `wallet address` without `--api`.
const DEFAULT_SHARDS: u16 = 2;
/// Blocks a transfer stays valid for.
const EXPIRY_BLOCKS: u64 = 600;

const NEEDS_API: &str = "this needs a running node: pass --api URL (e.g. the `api http://...` line `huds devnet` prints)";

pub fn wallet_key(dir: &Path) -> Result<SecretKey> {
    let path = dir.join("wallet.key");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no wallet key at {}: run `huds --data {} init` or `huds --data {} wallet new`",
            path.display(),
            dir.display(),
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", path.display()))?;
    Ok(SecretKey::from_bytes(seed))
}

fn wallet_address(dir: &Path) -> Result<Address> {
    Ok(Address::of(&wallet_key(dir)?.public()))
}

fn chain_status(api: &str) -> Result<Value> {
    api_client::json(api, "/api/v0/chain/status").context("asking the node for the chain status")
}

fn shard_count(status: &Value) -> Result<u16> {
    let n = status["shards"].as_array().map_or(0, Vec::len);
    u16::try_from(n)
        .ok()
        .filter(|n| *n > 0)
        .context("the node's chain status lists no shards: is it running validators?")
}

/// `huds wallet address`.
pub fn address(dir: &Path, api: Option<&str>, json: bool) -> Result<()> {
    let address = wallet_address(dir)?;
    let shards = match api {
        Some(api) => shard_count(&chain_status(api)?)?,
        None => DEFAULT_SHARDS,
    };
    let shard = shard_of(&address, shards);
    if json {
        println!(
            "{}",
            json!({ "address": address.to_string(), "shard": shard })
        );
    } else {
        println!("{address}");
        println!("shard {shard} (of {shards})");
    }
    Ok(())
}

/// `huds wallet new`: a fresh account key, only where none exists (a key is money: never overwritten).
pub fn new(dir: &Path, json: bool) -> Result<()> {
    let path = dir.join("wallet.key");
    if path.exists() {
        bail!(
            "{} already holds an account key; move it away first if you really mean to replace it",
            path.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("the OS random source is available");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&seed)?;
    f.sync_all()?;
    let address = Address::of(&SecretKey::from_bytes(seed).public());
    if json {
        println!("{}", json!({ "address": address.to_string() }));
    } else {
        println!("new account {address}");
    }
    Ok(())
}

fn account(api: &str, address: &Address) -> Result<Value> {
    api_client::json(api, &format!("/api/v0/chain/account?address={address}"))
        .with_context(|| format!("asking the node for account {address}"))
}

/// `huds wallet balance [ADDRESS]`.
pub fn balance(dir: &Path, api: Option<&str>, address: Option<&str>, json: bool) -> Result<()> {
    let api = api.context(NEEDS_API)?;
    let address = match address {
        Some(a) => a
            .parse::<Address>()
            .with_context(|| format!("{a:?} is not an address"))?,
        None => wallet_address(dir)?,
    };
    let v = account(api, &address)?;
    if json {
        println!(
            "{}",
            json!({
                "address": v["address"],
                "shard": v["shard"],
                "balance": v["balance"],
                "nonce": v["nonce"],
            })
        );
    } else {
        println!(
            "{} IOST  {} (shard {}, nonce {})",
            v["balance"].as_str().unwrap_or("?"),
            address,
            v["shard"],
            v["nonce"]
        );
    }
    Ok(())
}

/// `huds wallet transfer TO AMOUNT`: signs, submits, returns once final.
pub fn transfer(dir: &Path, api: Option<&str>, to: &str, amount: &str, json: bool) -> Result<()> {
    let api = api.context(NEEDS_API)?;
    let key = wallet_key(dir)?;
    let from = Address::of(&key.public());
    let to: Address = to
        .parse()
        .with_context(|| format!("{to:?} is not an address"))?;
    let amount: Amount = amount
        .parse()
        .with_context(|| format!("{amount:?} is not an IOST amount (up to 8 decimals)"))?;
    let status = chain_status(api)?;
    let shards = shard_count(&status)?;
    let (from_shard, to_shard) = (shard_of(&from, shards), shard_of(&to, shards));
    if from_shard != to_shard {
        bail!(
            "cross-shard transfers are not supported yet (Atomix is not in the node): your account is on shard {from_shard}, {to} is on shard {to_shard}; send to an account on shard {from_shard}"
        );
    }
    let fee: Amount = status["fee_min"]
        .as_str()
        .context("the node's chain status has no fee_min")?
        .parse()
        .context("the node's fee_min is not an amount")?;
    let chain_id = status["chain_id"]
        .as_u64()
        .and_then(|c| u32::try_from(c).ok())
        .context("the node's chain status has no chain_id")?;
    let height = status["shards"][usize::from(from_shard)]["height"]
        .as_u64()
        .context("the node's chain status has no height for the shard")?;
    let nonce = account(api, &from)?["nonce"]
        .as_u64()
        .context("the node's account answer has no nonce")?;
    let tx = Transaction {
        chain_id,
        sender: key.public(),
        nonce,
        fee,
        expiry_height: height + EXPIRY_BLOCKS,
        kind: TxKind::Transfer { to, amount },
    }
    .sign(&key);
    let v = post_tx(api, &tx.encode())?;
    if json {
        println!(
            "{}",
            json!({
                "tx": v["tx"],
                "from": from.to_string(),
                "to": to.to_string(),
                "amount": amount.to_string(),
                "fee": fee.to_string(),
                "shard": v["shard"],
                "height": v["height"],
            })
        );
    } else {
        println!(
            "transferred {amount} IOST to {to} (fee {fee} IOST): final in shard {} block {}",
            v["shard"], v["height"]
        );
    }
    Ok(())
}

/// Sends a signed transaction; the node answers once it is final.
pub fn post_tx(api: &str, bytes: &[u8]) -> Result<Value> {
    let url = format!("{}/api/v0/chain/tx", api.trim_end_matches('/'));
    let mut resp = ureq::post(&url)
        .config()
        .http_status_as_error(false)
        .build()
        .header("content-type", "application/octet-stream")
        .send(bytes)
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the node API at {api} ({e}): is `huds node` or `huds devnet` running?"
            )
        })?;
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "error": text }));
    if !resp.status().is_success() {
        bail!(
            "the transaction was refused: {}",
            v["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(v)
}

/// `huds chain status`.
pub fn status(api: Option<&str>, json: bool) -> Result<()> {
    let api = api.context(NEEDS_API)?;
    let v = chain_status(api)?;
    if json {
        let shards: Vec<Value> = v["shards"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                json!({
                    "id": s["id"],
                    "height": s["height"],
                    "state_root": s["state_root"],
                    "committee": s["committee"],
                })
            })
            .collect();
        println!("{}", json!({ "epoch": v["epoch"], "shards": shards }));
    } else {
        println!(
            "epoch {} (chain id {:#x})",
            v["epoch"],
            v["chain_id"].as_u64().unwrap_or(0)
        );
        for s in v["shards"].as_array().into_iter().flatten() {
            println!(
                "shard {} height {} state root {} committee of {}",
                s["id"],
                s["height"],
                s["state_root"].as_str().unwrap_or("-"),
                s["committee"].as_array().map_or(0, Vec::len)
            );
        }
    }
    Ok(())
}
