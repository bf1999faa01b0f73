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

pub(crate) fn chain_status(api: &str) -> Result<Value> {
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
        let balance = v["balance"]
            .as_str()
            .and_then(|b| b.parse::<Amount>().ok())
            .map_or_else(|| "?".to_string(), |b| b.for_people());
        println!(
            "{balance}  {} (shard {}, nonce {})",
            address, v["shard"], v["nonce"]
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
    let (v, fee) = sign_and_post(api, &key, &status, TxKind::Transfer { to, amount })?;
    let mut fields = json!({ "from": from.to_string(), "to": to.to_string(),
                             "amount": amount.to_string(), "fee": fee.to_string() });
    if from_shard == to_shard {
        report_final(
            json,
            &v,
            fields,
            &format!(
                "transferred {} to {to} (fee {})",
                amount.for_people(),
                fee.for_people()
            ),
        );
        return Ok(());
    }
    // Atomix: final on the sender's shard as a lock, then committed by the recipient's shard.
    fields["committed"] = v["committed"].clone();
    if json {
        report_final(json, &v, fields, "");
        return Ok(());
    }
    let committed = match &v["committed"] {
        Value::Null => format!(
            "shard {to_shard} has not committed it yet (the lock is relayed again for a few minutes; check the recipient's balance)"
        ),
        c => format!("committed in shard {to_shard} block {}", c["height"]),
    };
    println!(
        "transferred {} to {to} (fee {}): locked in shard {} block {}, {committed}",
        amount.for_people(),
        fee.for_people(),
        v["shard"],
        v["height"]
    );
    Ok(())
}

/// Prints a final transaction: as JSON, `fields` with the node's `tx`, `shard` and `height`; as text, `what`
/// and where it is final.
fn report_final(json: bool, node: &Value, mut fields: Value, what: &str) {
    if json {
        for key in ["tx", "shard", "height"] {
            fields[key] = node[key].clone();
        }
        println!("{fields}");
    } else {
        println!(
            "{what}: final in shard {} block {}",
            node["shard"], node["height"]
        );
    }
}

/// Signs `kind` from the home's account with the chain's minimum fee, the account's next nonce and an
/// expiry `EXPIRY_BLOCKS` past its shard's height, and sends it; answers once it is final, with the fee.
pub(crate) fn sign_and_post(
    api: &str,
    key: &SecretKey,
    status: &Value,
    kind: TxKind,
) -> Result<(Value, Amount)> {
    let from = Address::of(&key.public());
    let shard = shard_of(&from, shard_count(status)?);
    let fee_min: Amount = status["fee_min"]
        .as_str()
        .context("the node's chain status has no fee_min")?
        .parse()
        .context("the node's fee_min is not an amount")?;
    let chain_id = status["chain_id"]
        .as_u64()
        .and_then(|c| u32::try_from(c).ok())
        .context("the node's chain status has no chain_id")?;
    let height = status["shards"][usize::from(shard)]["height"]
        .as_u64()
        .context("the node's chain status has no height for the shard")?;
    let nonce = account(api, &from)?["nonce"]
        .as_u64()
        .context("the node's account answer has no nonce")?;
    let mut tx = Transaction {
        chain_id,
        sender: key.public(),
        nonce,
        fee: fee_min,
        expiry_height: height + EXPIRY_BLOCKS,
        kind,
    };
    // A deal prepays the fees of its holders' proofs.
    tx.fee = tx
        .fee_floor(fee_min)
        .context("the deal's proof fees overflow")?;
    let fee = tx.fee;
    let tx = tx.sign(key);
    Ok((post_tx(api, &tx.encode())?, fee))
}

/// The chain id the node's chain status names.
pub fn chain_id(api: &str) -> Result<u32> {
    chain_status(api)?["chain_id"]
        .as_u64()
        .and_then(|c| u32::try_from(c).ok())
        .context("the node's chain status has no chain_id")
}

/// `huds deal end ID|CAP|CID`: ends (or, once it is over, settles) a deal the home's account owns; answers once final
/// with what came back.
pub fn end_deal(dir: &Path, api: Option<&str>, what: &str, json: bool) -> Result<()> {
    let api = api.context(NEEDS_API)?;
    let id = crate::deal::resolve(dir, api, what)?;
    let (v, summary, line) = end_deal_id(dir, api, &id)?;
    report_final(json, &v, summary, &line);
    Ok(())
}

/// Ends deal `id` from the home's account: the node's answer, what `deal end --json` prints and its line.
pub fn end_deal_id(dir: &Path, api: &str, id: &str) -> Result<(Value, Value, String)> {
    let key = wallet_key(dir)?;
    let deal = crate::deal::parse_id(id)?;
    let before = crate::deal::status(api, id)?;
    let status = chain_status(api)?;
    let (v, fee) = sign_and_post(api, &key, &status, TxKind::EndDeal { deal })?;
    let after = crate::deal::status(api, id)?;
    let refunded = |v: &Value| {
        v["refunded"]
            .as_str()
            .and_then(|a| a.parse::<Amount>().ok())
            .unwrap_or(Amount::ZERO)
    };
    let refund = Amount(refunded(&after).0.saturating_sub(refunded(&before).0));
    Ok((
        v,
        json!({ "deal": id, "refunded": refund.to_string(), "fee": fee.to_string(),
                "periods": after["periods"] }),
        format!(
            "deal ended after period {}: {} refunded (fee {})",
            after["periods"].as_u64().unwrap_or(0).saturating_sub(1),
            refund.for_people(),
            fee.for_people()
        ),
    ))
}

/// Opens a storage deal paid by `key`'s account with the holders' signatures; answers once it is final.
pub fn open_deal(
    api: &str,
    key: &SecretKey,
    terms: chain::types::deal::DealTerms,
    signatures: Vec<chain::crypto::Signature>,
) -> Result<Value> {
    let status = chain_status(api)?;
    let (node, _) = sign_and_post(api, key, &status, TxKind::OpenDeal { terms, signatures })?;
    Ok(node)
}

/// `huds wallet stake AMOUNT`: registers the home's account as a storage node staking AMOUNT; the stake
/// reaches the beacon chain's registry with the shard's next cross-link.
pub fn stake(dir: &Path, api: Option<&str>, amount: &str, json: bool) -> Result<()> {
    stake_tx(dir, api, amount, json, |stake| {
        TxKind::RegisterStorageNode { stake }
    })
}

/// `huds wallet unstake AMOUNT [--validator]`: moves AMOUNT of the storage-node (or validator) stake to
/// unbonding; it is spendable after the chain's unbonding delay.
pub fn unstake(
    dir: &Path,
    api: Option<&str>,
    amount: &str,
    validator: bool,
    json: bool,
) -> Result<()> {
    let role = if validator {
        chain::Role::Validator
    } else {
        chain::Role::StorageNode
    };
    stake_tx(dir, api, amount, json, |amount| TxKind::Unstake {
        role,
        amount,
    })
}

fn stake_tx(
    dir: &Path,
    api: Option<&str>,
    amount: &str,
    json: bool,
    kind: impl FnOnce(Amount) -> TxKind,
) -> Result<()> {
    let api = api.context(NEEDS_API)?;
    let key = wallet_key(dir)?;
    let amount: Amount = amount
        .parse()
        .with_context(|| format!("{amount:?} is not an IOST amount (up to 8 decimals)"))?;
    let status = chain_status(api)?;
    let kind = kind(amount);
    let what = match &kind {
        TxKind::RegisterStorageNode { .. } => "staked as a storage node",
        TxKind::Unstake {
            role: chain::Role::Validator,
            ..
        } => "unstaked from the validator stake",
        _ => "unstaked from the storage-node stake",
    };
    let (v, fee) = sign_and_post(api, &key, &status, kind)?;
    report_final(
        json,
        &v,
        json!({ "amount": amount.to_string(), "fee": fee.to_string() }),
        &format!("{what}: {} (fee {})", amount.for_people(), fee.for_people()),
    );
    Ok(())
}

/// Sends a signed transaction; the node answers once it is final.
pub fn post_tx(api: &str, bytes: &[u8]) -> Result<Value> {
    post(
        api,
        "/api/v0/chain/tx",
        bytes,
        "the transaction was refused",
    )
}

/// POSTs `bytes` to the node API's `path`; a refusal is an error that starts with `refused`.
pub(crate) fn post(api: &str, path: &str, bytes: &[u8], refused: &str) -> Result<Value> {
    let url = format!("{}{path}", api.trim_end_matches('/'));
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
            "{refused}: {}",
            v["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(v)
}

/// `huds chain atomix HASH`: where a transfer to another shard stands.
/// With `relay`, a transfer locked but not committed yet is relayed again by its shard's committee.
pub fn atomix(api: Option<&str>, hash: &str, relay: bool, json: bool) -> Result<()> {
    let api = api.context(NEEDS_API)?;
    let hash = hash.trim();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!(
            "{hash:?} is not a transaction hash: 64 hex digits, as `wallet transfer --json` prints in \"tx\""
        );
    }
    let mut v = api_client::json(api, &format!("/api/v0/chain/atomix?hash={hash}"))
        .context("asking the node where the transfer stands")?;
    if relay && !v["locked"].is_null() && v["committed"].is_null() {
        let r = post(
            api,
            &format!("/api/v0/chain/atomix/relay?hash={hash}"),
            &[],
            "the relay was refused",
        )?;
        v["relayed"] = r["relayed"].clone();
    }
    if json {
        println!("{v}");
        return Ok(());
    }
    match (&v["locked"], &v["committed"]) {
        (Value::Null, _) => println!(
            "{hash}: no shard holds a lock of it (not a transfer to another shard, or not final yet)"
        ),
        (l, Value::Null) if v["relayed"].is_null() => println!(
            "{hash}: locked on shard {}, not committed by the recipient's shard yet (its committee relays it again for a few minutes; --relay asks for one more now)",
            l["shard"]
        ),
        (l, Value::Null) => println!(
            "{hash}: locked on shard {}, not committed by the recipient's shard yet; relayed again now",
            l["shard"]
        ),
        (l, c) => println!(
            "{hash}: locked on shard {}, committed on shard {}: done",
            l["shard"], c["shard"]
        ),
    }
    Ok(())
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
                    "epoch": s["epoch"],
                    "state_root": s["state_root"],
                    "committee": s["committee"],
                    "committee_stake": s["committee_stake"],
                })
            })
            .collect();
        println!(
            "{}",
            json!({ "epoch": v["epoch"], "shards": shards, "beacon": v["beacon"] })
        );
    } else {
        println!(
            "epoch {} (chain id {:#x})",
            v["epoch"],
            v["chain_id"].as_u64().unwrap_or(0)
        );
        for s in v["shards"].as_array().into_iter().flatten() {
            println!(
                "shard {} height {} epoch {} state root {} committee of {} staking {}",
                s["id"],
                s["height"],
                s["epoch"],
                s["state_root"].as_str().unwrap_or("-"),
                s["committee"].as_array().map_or(0, Vec::len),
                for_people(&s["committee_stake"])
            );
        }
        let b = &v["beacon"];
        if b.is_null() {
            println!("beacon chain: no beacon validator runs on this node");
        } else {
            let linked: Vec<String> = b["links"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| format!("shard {} at {}", l["shard"], l["height"]))
                .collect();
            println!(
                "beacon height {} state root {} committee of {}; linked {}",
                b["height"],
                b["state_root"].as_str().unwrap_or("-"),
                b["committee"].as_array().map_or(0, Vec::len),
                linked.join(", ")
            );
            let validators = b["validators"].as_array().map_or(&[][..], Vec::as_slice);
            println!(
                "registry: {} validators ({} seated), {} storage nodes; registry events applied {}",
                validators.len(),
                validators.iter().filter(|v| !v["seat"].is_null()).count(),
                b["storage_nodes"].as_array().map_or(0, Vec::len),
                b["links"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| format!("shard {} {}", l["shard"], l["registry_events"]))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for n in b["storage_nodes"].as_array().into_iter().flatten() {
                println!(
                    "storage node {}: stake {} IOST, missed periods {} this epoch and {} the epoch before (placement standing {}%)",
                    n["id"].as_str().unwrap_or("-"),
                    n["stake"].as_str().unwrap_or("-"),
                    n["faults"],
                    n["faults_before"],
                    n["reputation_ppm"].as_u64().unwrap_or(0) / 10_000
                );
            }
        }
    }
    Ok(())
}

/// An amount the node gave in machine form, for people ("1,000 IOST"); "?" if it is missing or malformed.
pub(crate) fn for_people(amount: &Value) -> String {
    amount
        .as_str()
        .and_then(|t| t.parse::<Amount>().ok())
        .map_or_else(|| "?".to_string(), |a| a.for_people())
}

/// Largest proof or trust file the CLI accepts from a node.
pub(crate) const PROOF_BYTES_MAX: u64 = 1 << 20;
/// Largest list of epoch proofs the CLI accepts from a node.
const EPOCHS_BYTES_MAX: u64 = 64 << 20;
/// Where `huds chain verify` finds the committees it trusts, in the home (or `--trust FILE`).
pub const TRUST_FILE: &str = "chain-trust";

/// What `huds chain prove` proves.
pub enum ProveWhat<'a> {
    Account(&'a str),
    Tx(&'a str),
    Deal(&'a str),
    Volume {
        owner: &'a str,
        name: &'a str,
        version: u64,
    },
}

fn write_out(bytes: &[u8], out: Option<&Path>) -> Result<()> {
    match out {
        Some(path) => {
            std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(bytes)?;
            Ok(stdout.flush()?)
        }
    }
}

/// `huds chain prove account ADDRESS | tx HASH | deal ID [-o FILE]`: a proof file, from the node, to check anywhere.
pub fn prove(api: Option<&str>, what: ProveWhat<'_>, out: Option<&Path>) -> Result<()> {
    let api = api.context(NEEDS_API)?;
    let path = match what {
        ProveWhat::Account(a) => {
            let address: Address = a.parse().map_err(|e| anyhow::anyhow!("{a:?}: {e}"))?;
            format!("/api/v0/chain/prove/account?address={address}")
        }
        ProveWhat::Tx(h) => format!("/api/v0/chain/prove/tx?hash={}", h.trim()),
        ProveWhat::Deal(id) => format!("/api/v0/chain/prove/deal?id={}", id.trim()),
        ProveWhat::Volume {
            owner,
            name,
            version,
        } => {
            let owner: Address = owner
                .parse()
                .map_err(|e| anyhow::anyhow!("{owner:?}: {e}"))?;
            chain::types::volume::check_name(name)?;
            format!("/api/v0/chain/prove/volume?owner={owner}&name={name}&version={version}")
        }
    };
    let bytes = api_client::bytes(api, &path, PROOF_BYTES_MAX)?;
    // Checked here too, so a node cannot hand out a file that is not even a proof.
    chain::spv::Proof::decode(&bytes).context("the node's answer is not a proof")?;
    write_out(&bytes, out)
}

/// `huds chain trust [-o FILE]`: with no trust file yet, the node's epochs as a trust file (trust on first
/// use; a devnet writes one from genesis); with one, advances it epoch by epoch through the proofs the node
/// serves, each checked against the epoch before, so the node is not trusted at all.
pub fn trust(dir: &Path, api: Option<&str>, out: Option<&Path>) -> Result<()> {
    let api = api.context(NEEDS_API)?;
    let default = dir.join(TRUST_FILE);
    let path = out.unwrap_or(&default);
    let existing = match std::fs::read(path) {
        Ok(bytes) => Some(chain::spv::LightClient::decode(&bytes).with_context(|| {
            format!(
                "{} is not a trust file (move it away to fetch a new one)",
                path.display()
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let Some(mut client) = existing else {
        let bytes = api_client::bytes(api, "/api/v0/chain/trust", PROOF_BYTES_MAX)?;
        let client = chain::spv::LightClient::decode(&bytes)
            .context("the node's answer is not a trust file")?;
        crate::home::replace_file(path, &bytes)?;
        println!(
            "trusting chain {:#x}'s committees up to epoch {} as this node gave them; saved to {}",
            client.chain_id,
            client.newest_epoch(),
            path.display()
        );
        return Ok(());
    };
    let from = client.newest_epoch();
    advance_trust(api, &mut client)?;
    crate::home::replace_file(path, &client.encode())?;
    let to = client.newest_epoch();
    if to == from {
        println!("trust is current at epoch {to}; {}", path.display());
    } else {
        println!(
            "advanced trust from epoch {from} to epoch {to}, each epoch's committees checked against the beacon committee before it; saved to {}",
            path.display()
        );
    }
    Ok(())
}

/// Moves `client` through the epoch proofs the node serves, each checked against the epoch before it (so the
/// node is not trusted), until the node has no newer one.
fn advance_trust(api: &str, client: &mut chain::spv::LightClient) -> Result<()> {
    loop {
        let after = client.newest_epoch();
        let bytes = api_client::bytes(
            api,
            &format!("/api/v0/chain/epochs?after={after}"),
            EPOCHS_BYTES_MAX,
        )?;
        let proofs = chain::spv::EpochProof::decode_all(&bytes)
            .context("the node's answer is not a list of epoch proofs")?;
        if proofs.is_empty() {
            return Ok(());
        }
        for p in &proofs {
            client.advance(p).map_err(|e| {
                anyhow::anyhow!(
                    "the node's proof of epoch {} does not hold: {e}",
                    client.newest_epoch() + 1
                )
            })?;
        }
    }
}

/// The home's light client, current with the node at `api`: its trust file, advanced through the node's
/// epoch proofs (each checked against the epoch before) and saved when it moved. A home with no trust file is
/// refused: taking one from the same node whose answers it must check would check nothing, so that first
/// step is the user's, with `huds chain trust` (a devnet writes the file into its homes).
pub fn light_client(dir: &Path, api: &str) -> Result<chain::spv::LightClient> {
    let path = dir.join(TRUST_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "this home trusts no chain committees yet, so it cannot check what a node says: run `huds --data {} --api {api} chain trust` once (it trusts that node's committees on first use), or copy a trust file to {}",
            dir.display(),
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut client = chain::spv::LightClient::decode(&bytes).with_context(|| {
        format!(
            "{} is not a trust file: replace it with a good one (`huds chain trust` fetches one, trusting that node)",
            path.display()
        )
    })?;
    let before = client.newest_epoch();
    advance_trust(api, &mut client)?;
    if client.newest_epoch() != before {
        crate::home::replace_file(&path, &client.encode())?;
    }
    Ok(client)
}

/// `huds chain verify FILE [--trust FILE]`: checks a proof with no node at all.
pub fn verify(dir: &Path, file: &Path, trust: Option<&Path>, json: bool) -> Result<()> {
    let default = dir.join(TRUST_FILE);
    let trust_path = trust.unwrap_or(&default);
    let trust_bytes = std::fs::read(trust_path).with_context(|| {
        format!(
            "reading the trust file {} (a devnet writes DIR/wallet/{TRUST_FILE}; `huds --api URL chain trust` \
             fetches one from a node, trusting it on first use)",
            trust_path.display()
        )
    })?;
    let client = chain::spv::LightClient::decode(&trust_bytes)
        .with_context(|| format!("{} is not a trust file", trust_path.display()))?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let proof = chain::spv::Proof::decode(&bytes)
        .with_context(|| format!("{} is not a proof file", file.display()))?;
    let refused = |e: chain::spv::SpvError| anyhow::anyhow!("the proof does not hold: {e}");
    match &proof {
        chain::spv::Proof::Account(p) => {
            let account = client.verify_account(p).map_err(refused)?;
            let h = &p.certified.header;
            let (balance, nonce) = account.map_or((Amount(0), 0), |a| (a.balance, a.nonce));
            if json {
                println!(
                    "{}",
                    json!({ "valid": true, "kind": "account", "address": p.address.to_string(),
                            "shard": h.shard, "height": h.height, "balance": balance.to_string(),
                            "nonce": nonce })
                );
            } else {
                println!(
                    "valid: account {} on shard {} at height {}: balance {balance} IOST, nonce {nonce}",
                    p.address, h.shard, h.height
                );
            }
        }
        chain::spv::Proof::Tx(p) => {
            let (shard, height) = client.verify_tx(p).map_err(refused)?;
            let hash = chain_node::api::hex(&p.tx.id());
            if json {
                println!(
                    "{}",
                    json!({ "valid": true, "kind": "tx", "hash": hash, "shard": shard, "height": height })
                );
            } else {
                println!("valid: transaction {hash} is final in shard {shard} block {height}");
            }
        }
        chain::spv::Proof::Deal(p) => {
            client.verify_deal(p).map_err(refused)?;
            let h = &p.certified.header;
            let id = chain_node::api::hex(&p.id);
            let root = cid::Cid::try_from(p.terms.root.as_slice())
                .map_or_else(|_| chain_node::api::hex(&p.terms.root), |c| c.to_string());
            let (k, m) = (p.terms.k, p.terms.m);
            if json {
                println!(
                    "{}",
                    json!({ "valid": true, "kind": "deal", "deal": id, "root": root,
                            "owner": p.record.owner.to_string(), "shard": h.shard, "height": h.height,
                            "k": k, "m": m, "holders": p.terms.holders.len(),
                            "end_height": p.record.end_height(),
                            "escrow_left": p.record.escrow_left.to_string() })
                );
            } else {
                println!(
                    "valid: deal {id} for {root} ({k}+{m} over {} holders) is active on shard {} at \
                     height {}, paid through height {}; escrow left {} IOST",
                    p.terms.holders.len(),
                    h.shard,
                    h.height,
                    p.record.end_height(),
                    p.record.escrow_left
                );
            }
        }
        chain::spv::Proof::Volume(p) => {
            let newest = client.verify_volume(p).map_err(refused)?;
            let h = &p.certified.header;
            if json {
                println!(
                    "{}",
                    json!({ "valid": true, "kind": "volume", "owner": p.owner.to_string(),
                            "name": p.name, "version": p.version, "published_at": p.record.height,
                            "newest": newest, "shard": h.shard, "height": h.height,
                            "root": chain_node::api::hex(&p.record.root) })
                );
            } else {
                println!(
                    "valid: version {} of volume {} of {} (published at height {}) is on shard {} at \
                     height {}, {}",
                    p.version,
                    p.name,
                    p.owner,
                    p.record.height,
                    h.shard,
                    h.height,
                    if newest {
                        "its newest version"
                    } else {
                        "since replaced"
                    }
                );
            }
        }
    }
    Ok(())
}
