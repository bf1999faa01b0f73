//! `huds rm CAP|CID`: the file's running storage deal of the home's account is ended (when `--api` names a
//! node that serves a chain), then the file is unpinned, locally or on that node, and its shards that nothing
//! else holds are deleted. The node is asked first whether it would unpin it (the token, the pin), then the
//! deal is ended: a deal that cannot be ended leaves the file pinned, and a removal cut short after the end
//! is finished by running `huds rm` again (an ended deal is not ended twice).

use std::path::Path;

use anyhow::Result;
use serde_json::{Value, json};

/// `huds rm TARGET`.
pub fn rm(
    dir: &Path,
    api: Option<&str>,
    token: Option<&str>,
    target: &str,
    json: bool,
) -> Result<()> {
    let target = target.trim();
    let v = match api {
        None => {
            let store = crate::home::Home::open(dir)?.store()?;
            let mut v = huds_net::api::removed_json(&huds::remove(&store, target)?);
            v["deal"] = Value::Null;
            v
        }
        Some(api) => {
            // The node must be able to unpin it (token, pinned there) before anything is ended.
            let pinned = crate::api_client::rm(api, token, target, true)?;
            let deal = end_running_deal(dir, api, target, pinned["cid"].as_str())?;
            let mut v = crate::api_client::rm(api, token, target, false)?;
            v["deal"] = deal;
            v
        }
    };
    if json {
        println!("{v}");
        return Ok(());
    }
    println!(
        "removed {} ({}, {} bytes): unpinned, {} of its {} shards deleted here",
        v["cid"].as_str().unwrap_or("?"),
        v["name"].as_str().unwrap_or("?"),
        v["size"],
        v["deleted"],
        v["shards"]
    );
    match v["deal"]["state"].as_str() {
        Some("ended now") => println!(
            "deal {} ended after period {}: {} refunded",
            v["deal"]["deal"].as_str().unwrap_or("?"),
            v["deal"]["periods"].as_u64().unwrap_or(0).saturating_sub(1),
            crate::wallet::for_people(&v["deal"]["refunded"])
        ),
        Some(state) => println!(
            "deal {} was already {state}",
            v["deal"]["deal"].as_str().unwrap_or("?")
        ),
        None => {}
    }
    Ok(())
}

/// Ends the home account's running deal of `target` and says what became of it (`null` when the node serves
/// no chain, the home has no wallet, or the account has no deal of the file). A public file's deal is rooted
/// at its CID, `root`, which the node names even when `target` is the capability.
fn end_running_deal(dir: &Path, api: &str, target: &str, root: Option<&str>) -> Result<Value> {
    if !dir.join("wallet.key").exists() || crate::wallet::chain_status(api).is_err() {
        return Ok(Value::Null);
    }
    let found = match crate::deal::find(dir, api, target)? {
        Some(id) => Some(id),
        None => match root {
            Some(root) if root != target => crate::deal::find(dir, api, root)?,
            _ => None,
        },
    };
    let Some(id) = found else {
        return Ok(Value::Null);
    };
    let status = crate::deal::status(api, &id)?;
    if status["state"] != "active" {
        return Ok(json!({ "deal": id, "state": status["state"] }));
    }
    let (_, mut summary, _) = crate::wallet::end_deal_id(dir, api, &id)?;
    summary["state"] = "ended now".into();
    Ok(summary)
}
