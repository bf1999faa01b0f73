//! `huds deal list|status|end`: a storage deal as its shard's validators see it (`specs/economics.md` §3–§5).
//! A deal is named by its id, or by the file it stores: a capability (its manifest CID is the deal's root) or a
//! CID (a public file's root), among the deals of the home's account.

use anyhow::{Context, Result, bail};
use chain::Amount;
use serde_json::Value;

use crate::wallet::for_people;

const NEEDS_API: &str = "this needs a running node: pass --api URL (e.g. the `api http://...` line `huds devnet` prints)";

/// A deal id: 64 hex digits.
pub fn parse_id(text: &str) -> Result<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        bail!("{text:?} is not a deal id (64 hex digits, as `huds devnet` prints it)");
    }
    chain::hex_decode(text)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .with_context(|| format!("{text:?} is not a deal id (64 hex digits)"))
}

/// The ids of every deal the account `owner` opened, page by page, in id order.
fn deal_ids(api: &str, owner: &chain::Address) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/v0/chain/deals?owner={owner}&after={a}"),
            None => format!("/api/v0/chain/deals?owner={owner}"),
        };
        let page = crate::api_client::json(api, &path)?;
        for id in page["deals"].as_array().into_iter().flatten() {
            ids.push(
                id.as_str()
                    .context("the node's deal list holds a non-string id")?
                    .to_string(),
            );
        }
        match page["next"].as_str() {
            // Pages move forward in id order (equal-length hex sorts as the ids do): a node that answers
            // otherwise would keep this loop going for ever.
            Some(next) if after.as_deref().is_none_or(|a| next > a) => {
                after = Some(next.to_string());
            }
            Some(next) => bail!("the node's deal list did not move past {next}"),
            None => break,
        }
    }
    Ok(ids)
}

/// The deal `what` names: a deal id as it is; a capability or a CID, the deal of the home's account that
/// stores that root (its manifest CID for a capability), the newest-starting one that is still active if
/// several do.
pub fn resolve(dir: &std::path::Path, api: &str, what: &str) -> Result<String> {
    let what = what.trim();
    if parse_id(what).is_ok() {
        return Ok(what.to_string());
    }
    let owner = chain::Address::of(&crate::wallet::wallet_key(dir)?.public());
    find(dir, api, what)?.with_context(|| format!("{owner} has no deal storing {what}"))
}

/// The deal of the home's account that stores the file `what` (a capability or a CID) as [`resolve`] picks
/// it, if there is one.
pub fn find(dir: &std::path::Path, api: &str, what: &str) -> Result<Option<String>> {
    let what = what.trim();
    let root = if what.starts_with("huds:") {
        huds::Capability::parse(what)
            .map_err(|e| anyhow::anyhow!("{what:?} is not a capability: {e}"))?
            .manifest
            .to_bytes()
    } else {
        huds::cids::parse(what)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{what:?} is not a deal id (64 hex digits), a capability or a CID: {e}"
                )
            })?
            .to_bytes()
    };
    let root = chain::hex(&root);
    let owner = chain::Address::of(&crate::wallet::wallet_key(dir)?.public());
    let mut found: Option<(bool, u64, String)> = None;
    for id in deal_ids(api, &owner)? {
        let v = status(api, &id)?;
        if v["root"].as_str() != Some(root.as_str()) {
            continue;
        }
        let rank = (
            v["state"] == "active",
            v["start_height"].as_u64().unwrap_or(0),
            id,
        );
        if found.as_ref().is_none_or(|f| (f.0, f.1) < (rank.0, rank.1)) {
            found = Some(rank);
        }
    }
    Ok(found.map(|f| f.2))
}

/// Where a deal stands, as `huds deal status --json` prints it (`specs/cli.md`): the node's answer with
/// amounts in IOST, the deal's state, and each holder's missed periods and the totals added.
pub fn status(api: &str, id: &str) -> Result<Value> {
    parse_id(id)?;
    let mut v = crate::api_client::json(api, &format!("/api/v0/chain/deal?id={}", id.trim()))?;
    let field = |k: &str| {
        v[k].as_u64()
            .with_context(|| format!("the deal's answer has no {k}"))
    };
    let (start, period, periods, next, per_period, escrow_left, paid, refunded) = (
        field("start_height")?,
        field("period_blocks")?.max(1),
        field("periods")?,
        field("next_height")?,
        field("per_period")?,
        field("escrow_left")?,
        field("paid")?,
        field("refunded")?,
    );
    // Period p's proof window closes with height start + (p + 2) * period: the periods whose window has
    // closed at the tip are the ones that can no longer be paid.
    let tip = next.saturating_sub(1);
    let closed = (tip.saturating_sub(start) / period)
        .saturating_sub(1)
        .min(periods);
    let (mut passed_all, mut missed_all, mut slashed_all) = (0u64, 0u64, 0u128);
    if let Some(holders) = v["holders"].as_array_mut() {
        for h in holders {
            let passed = h["passed"].as_u64().unwrap_or(0);
            // The chain records each miss at the first block after its window closed, and so does this
            // count (`closed` is the periods whose window closed before the tip): a chain that does not
            // record misses gets them counted here.
            let missed = match h["missed"].as_u64() {
                Some(m) => m,
                None => {
                    let next = h["next"].as_u64().unwrap_or(0);
                    let in_window = u64::from(next > closed);
                    closed.saturating_sub(passed.saturating_sub(in_window))
                }
            };
            let slashed = h["slashed"].as_u64().unwrap_or(0);
            passed_all += passed;
            missed_all += missed;
            slashed_all += u128::from(slashed);
            h["missed"] = missed.into();
            for k in ["pay", "price", "slashed", "bounty"] {
                h[k] = Amount(h[k].as_u64().unwrap_or(0)).to_string().into();
            }
        }
    }
    let end = start.saturating_add(periods.saturating_mul(period));
    let state = if tip <= end {
        "active"
    } else if escrow_left > 0 {
        "ended"
    } else {
        "settled"
    };
    let escrow = paid.saturating_add(escrow_left).saturating_add(refunded);
    v["state"] = state.into();
    v["closed_periods"] = closed.into();
    v["proofs_passed"] = passed_all.into();
    v["proofs_missed"] = missed_all.into();
    v["slashed"] = Amount(u64::try_from(slashed_all).unwrap_or(u64::MAX))
        .to_string()
        .into();
    v["escrow"] = Amount(escrow).to_string().into();
    for (k, a) in [
        ("escrow_left", escrow_left),
        ("paid", paid),
        ("refunded", refunded),
        ("per_period", per_period),
    ] {
        v[k] = Amount(a).to_string().into();
    }
    Ok(v)
}

/// `huds deal status ID|CAP|CID`.
pub fn show(dir: &std::path::Path, api: Option<&str>, what: &str, json: bool) -> Result<()> {
    let api = api.context(NEEDS_API)?;
    let id = resolve(dir, api, what)?;
    let id = id.as_str();
    let v = status(api, id)?;
    if json {
        println!("{v}");
        return Ok(());
    }
    let amount = |k: &str| for_people(&v[k]);
    println!(
        "deal {} ({}, {}+{}) on shard {}, owned by {}",
        v["id"].as_str().unwrap_or(id),
        v["state"].as_str().unwrap_or("?"),
        v["k"],
        v["m"],
        v["shard"],
        v["owner"].as_str().unwrap_or("?")
    );
    println!(
        "{} periods of {} blocks from height {}; at height {}, {} periods are over",
        v["periods"],
        v["period_blocks"],
        v["start_height"],
        v["next_height"].as_u64().unwrap_or(1).saturating_sub(1),
        v["closed_periods"]
    );
    println!(
        "escrow {}: paid {} to holders, {} left, {} refunded ({} a period in all); {} proofs passed, {} missed; {} of holders' stake slashed",
        amount("escrow"),
        amount("paid"),
        amount("escrow_left"),
        amount("refunded"),
        amount("per_period"),
        v["proofs_passed"],
        v["proofs_missed"],
        amount("slashed")
    );
    for (i, h) in v["holders"].as_array().into_iter().flatten().enumerate() {
        let repair = if h["taken_over"] == true {
            format!(
                " (took over the slot of {} through its repair order, for a bounty of {})",
                h["signed_by"].as_str().unwrap_or("?"),
                for_people(&h["bounty"])
            )
        } else if h["repair_order"] == true {
            format!(
                "; its repair order is open, bounty {}",
                for_people(&h["bounty"])
            )
        } else {
            String::new()
        };
        println!(
            "holder {i} {}: {} a period, proved {} periods, missed {}, slashed {}{repair}",
            h["address"].as_str().unwrap_or("?"),
            for_people(&h["pay"]),
            h["passed"],
            h["missed"],
            for_people(&h["slashed"])
        );
    }
    Ok(())
}

/// `huds deal list`: every deal the home's account opened, one line each (`--json`: an array of what
/// `huds deal status --json` prints for each).
pub fn list(dir: &std::path::Path, api: Option<&str>, json: bool) -> Result<()> {
    let api = api.context(NEEDS_API)?;
    let owner = chain::Address::of(&crate::wallet::wallet_key(dir)?.public());
    let mut all = Vec::new();
    for id in deal_ids(api, &owner)? {
        let v = status(api, &id)?;
        if !json {
            let amount = |k: &str| for_people(&v[k]);
            println!(
                "{id} {} {}+{} {} periods, {}/{} over; escrow {}, paid {}, {} left; {} proofs passed, {} missed",
                v["state"].as_str().unwrap_or("?"),
                v["k"],
                v["m"],
                v["periods"],
                v["closed_periods"],
                v["periods"],
                amount("escrow"),
                amount("paid"),
                amount("escrow_left"),
                v["proofs_passed"],
                v["proofs_missed"]
            );
        }
        all.push(v);
    }
    if json {
        println!("{}", Value::Array(all));
    } else if all.is_empty() {
        println!("{owner} has opened no deals");
    }
    Ok(())
}

/// Adds to a storage node's status (`huds node status --api`) what the chain says of the deals it holds:
/// per deal its proven and missed periods, what it earned and what its misses ordered slashed, and the
/// totals (`challenges_answered`, `challenges_missed`, `earned`, `slashed`). Left as it is when the API
/// serves no chain (or knows none of the deals).
pub fn account_node(api: &str, v: &mut Value) {
    let Some(deals) = v["deals"].as_array().cloned() else {
        return;
    };
    let (mut answered, mut missed, mut earned, mut slashed, mut known) =
        (0u64, 0u64, 0u128, 0u128, 0usize);
    let mut out = Vec::new();
    for d in deals {
        let mut d = d.clone();
        let (Some(id), Some(holder)) = (d["id"].as_str(), d["holder"].as_u64()) else {
            continue;
        };
        if let Ok(s) = status(api, id) {
            let h = &s["holders"][holder as usize];
            let pay = h["pay"]
                .as_str()
                .and_then(|a| a.parse::<Amount>().ok())
                .unwrap_or(Amount::ZERO);
            let passed = h["passed"].as_u64().unwrap_or(0);
            let m = h["missed"].as_u64().unwrap_or(0);
            let cut = h["slashed"]
                .as_str()
                .and_then(|a| a.parse::<Amount>().ok())
                .unwrap_or(Amount::ZERO);
            let e = u128::from(pay.0) * u128::from(passed);
            d["state"] = s["state"].clone();
            d["passed"] = passed.into();
            d["missed"] = m.into();
            d["earned"] = Amount(u64::try_from(e).unwrap_or(u64::MAX))
                .to_string()
                .into();
            d["slashed"] = cut.to_string().into();
            answered += passed;
            missed += m;
            earned += e;
            slashed += u128::from(cut.0);
            known += 1;
        }
        out.push(d);
    }
    v["deals"] = Value::Array(out);
    if known > 0 {
        v["challenges_answered"] = answered.into();
        v["challenges_missed"] = missed.into();
        v["earned"] = Amount(u64::try_from(earned).unwrap_or(u64::MAX))
            .to_string()
            .into();
        v["slashed"] = Amount(u64::try_from(slashed).unwrap_or(u64::MAX))
            .to_string()
            .into();
    }
}

/// The deal an add through `--api` asks for: paid by the home's account, on the chain the node serves, for
/// `periods` (default [`PERIODS_DEFAULT`]) at `price` IOST per GiB per period (default
/// `huds_net::deals::PRICE_DEFAULT`). None when the home has no wallet or the node serves no chain: the add
/// then stores without a deal, as on a network with no chain.
pub fn ask(
    dir: &std::path::Path,
    api: &str,
    periods: Option<u64>,
    price: Option<&str>,
) -> Result<Option<huds_net::deals::DealAsk>> {
    let price = match price {
        Some(p) => p
            .parse::<Amount>()
            .map_err(|e| anyhow::anyhow!("--price {p:?} is not an amount of IOST: {e}"))?,
        None => huds_net::deals::PRICE_DEFAULT,
    };
    let periods = periods.unwrap_or(PERIODS_DEFAULT);
    if periods == 0 {
        bail!("--periods must be at least 1");
    }
    if !dir.join("wallet.key").exists() {
        return Ok(None);
    }
    let Ok(chain_id) = crate::wallet::chain_id(api) else {
        return Ok(None);
    };
    Ok(Some(huds_net::deals::DealAsk {
        chain_id,
        owner: chain::Address::of(&crate::wallet::wallet_key(dir)?.public()),
        periods,
        price,
    }))
}

/// Storage periods a deal opened by `huds add` runs for unless `--periods` says otherwise.
pub const PERIODS_DEFAULT: u64 = 64;

/// Where `huds add` keeps the durability receipt of each deal it opened, in the home.
pub const RECEIPTS_DIR: &str = "receipts";

/// Opens the deal the node's add answer carries (terms and every holder's signature), paid by the home's
/// account, and keeps its durability receipt (`huds chain verify` checks it with no node) in the home's
/// `receipts/`. Answers what `huds add --json` prints under `deal`.
pub fn open_added(
    dir: &std::path::Path,
    api: &str,
    ask: &huds_net::deals::DealAsk,
    public: bool,
    added: &Value,
) -> Result<Value> {
    if let Some(e) = added["deal_error"].as_str() {
        bail!("the holders did not all sign: {e}");
    }
    let d = &added["deal"];
    let terms = d["terms"]
        .as_str()
        .and_then(chain::hex_decode)
        .context("the node's answer carries no deal terms")?;
    let terms = chain::types::deal::DealTerms::decode(&terms)
        .map_err(|e| anyhow::anyhow!("the node's deal terms do not decode: {e}"))?;
    let signatures = d["signatures"]
        .as_array()
        .context("the node's answer carries no signatures")?
        .iter()
        .map(|s| {
            s.as_str()
                .and_then(chain::hex_decode)
                .and_then(|b| <[u8; 64]>::try_from(b).ok())
                .map(chain::crypto::Signature)
                .context("a holder's signature is not 64 bytes of hex")
        })
        .collect::<Result<Vec<_>>>()?;
    check_terms(&terms, signatures.len(), ask, public, added)?;
    let key = crate::wallet::wallet_key(dir)?;
    let owner = chain::Address::of(&key.public());
    let id = chain::hex(&terms.id(&owner));
    let (holders, periods) = (terms.holders.len(), terms.periods);
    crate::wallet::open_deal(api, &key, terms, signatures)?;
    let receipt = dir.join(RECEIPTS_DIR).join(format!("{id}.proof"));
    let bytes = crate::api_client::bytes(
        api,
        &format!("/api/v0/chain/prove/deal?id={id}"),
        crate::wallet::PROOF_BYTES_MAX,
    )?;
    std::fs::create_dir_all(dir.join(RECEIPTS_DIR))
        .with_context(|| format!("creating {}", dir.join(RECEIPTS_DIR).display()))?;
    std::fs::write(&receipt, bytes).with_context(|| format!("writing {}", receipt.display()))?;
    let s = status(api, &id)?;
    Ok(serde_json::json!({
        "id": id,
        "holders": holders,
        "periods": periods,
        "escrow": s["escrow"],
        "receipt": receipt,
    }))
}

/// Headroom over twice a file's size that its shards' data may take (directory nodes of trees of tiny files).
const SHARD_BYTES_SLACK: u128 = 64 << 20;

/// The node built the terms the home's account is about to pay for: they must be what was asked (periods,
/// price), name the file that was added (its manifest CID, or its root CID when public, and its size), carry
/// a signature per holder, and not pay for more shard bytes than such a file can code into.
fn check_terms(
    terms: &chain::types::deal::DealTerms,
    signatures: usize,
    ask: &huds_net::deals::DealAsk,
    public: bool,
    added: &Value,
) -> Result<()> {
    let cid = added["cid"].as_str().unwrap_or_default();
    let root = if public {
        huds::cids::parse(cid).map(|c| c.to_bytes()).ok()
    } else {
        added["cap"]
            .as_str()
            .and_then(|c| huds::Capability::parse(c).ok())
            .map(|c| c.manifest.to_bytes())
    };
    let size = added["size"].as_u64();
    let k = u128::from(terms.k.max(1));
    let data: u128 = terms.segment_lens.iter().map(|l| u128::from(*l) * k).sum();
    let why = if terms.periods != ask.periods {
        format!(
            "runs {} periods, not the {} asked",
            terms.periods, ask.periods
        )
    } else if let Some(h) = terms.holders.iter().find(|h| h.price > ask.price) {
        format!(
            "pays {} a price above the {} offered",
            h.address(),
            ask.price.for_people()
        )
    } else if root.as_deref() != Some(terms.root.as_slice()) {
        "names another file than the one added".to_string()
    } else if size != Some(terms.size) {
        format!(
            "states a size of {} bytes, not the file's {size:?}",
            terms.size
        )
    } else if signatures != terms.holders.len() {
        format!(
            "carries {signatures} signatures for {} holders",
            terms.holders.len()
        )
    } else if data > 2 * u128::from(terms.size) + SHARD_BYTES_SLACK {
        format!(
            "pays for {data} bytes of data for a file of {} bytes",
            terms.size
        )
    } else {
        return Ok(());
    };
    bail!("the node's deal terms are not the deal asked for: it {why}; nothing was paid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chain::types::deal::{DealTerms, Holder};

    /// Terms a node could answer for a private file of 1,000 bytes: each way they differ from the ask, or
    /// from the file, is refused before anything is paid.
    #[test]
    fn terms_that_are_not_the_deal_asked_for_are_refused() {
        let manifest = huds::cids::blake3_cid(b"manifest");
        let cap = huds::Capability {
            manifest,
            key: huds::segment::FileKey([7; 32]),
        };
        let added = serde_json::json!({
            "cid": huds::cids::blake3_cid(b"root").to_string(),
            "cap": cap.to_text(),
            "size": 1_000,
        });
        let ask = huds_net::deals::DealAsk {
            chain_id: 1,
            owner: chain::Address([1; 32]),
            periods: 8,
            price: Amount(100),
        };
        let holders: Vec<Holder> = (0..6u8)
            .map(|i| Holder {
                key: chain::crypto::SecretKey::dev(&format!("holder {i}")).public(),
                price: Amount(100),
            })
            .collect();
        let good = DealTerms {
            root: manifest.to_bytes(),
            size: 1_000,
            k: 4,
            m: 2,
            periods: 8,
            holders,
            placement: (0..6).collect(),
            segment_lens: vec![256],
            commitments_root: [0; 32],
        };
        assert!(check_terms(&good, 6, &ask, false, &added).is_ok());
        let refused = |terms: &DealTerms, signatures: usize, public: bool, why: &str| {
            let e = check_terms(terms, signatures, &ask, public, &added)
                .expect_err(why)
                .to_string();
            assert!(e.contains(why), "{e}");
        };
        refused(
            &DealTerms {
                periods: 9,
                ..good.clone()
            },
            6,
            false,
            "periods",
        );
        let mut dear = good.clone();
        dear.holders[3].price = Amount(101);
        refused(&dear, 6, false, "price above");
        refused(&good, 6, true, "another file");
        refused(
            &DealTerms {
                root: vec![1, 2, 3],
                ..good.clone()
            },
            6,
            false,
            "another file",
        );
        refused(
            &DealTerms {
                size: 999,
                ..good.clone()
            },
            6,
            false,
            "size",
        );
        refused(&good, 5, false, "signatures");
        refused(
            &DealTerms {
                segment_lens: vec![1 << 30],
                ..good.clone()
            },
            6,
            false,
            "bytes of data",
        );
    }
}
