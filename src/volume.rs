//! `huds volume create|publish|log`, and the `NAME[@N]` targets `huds mount` takes (`specs/volumes.md`).
//!
//! A volume is a name the home's account owns on the IOS chain, pointing at a file tree through numbered
//! versions: each publish is a transaction that names the version it replaces, so two writers cannot both
//! move the volume on from the same version. The chain keeps each version's root sealed under the volume's
//! key (`volumes/NAME.key` in the home, made by `create`): XChaCha20-Poly1305 over the tree's root CID and
//! capability, bound to the volume and version. The chain thus learns neither the content nor which file a
//! version is, and a root cannot be replayed as another version's.
//!
//! The node is not trusted with what the chain holds: the version a mount opens, the head `log` shows and the
//! version a publish made are each checked with a proof against the home's light client (its trust file,
//! `huds chain trust`'s, advanced through the node's epoch proofs), which also shows the version is the newest.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chain::types::volume::{VOLUME_ROOT_BYTES_MAX, check_name, volume_id};
use chain::{Address, TxKind};
use cid::Cid;
use serde_json::{Value, json};

use crate::{api_client, deal, home, wallet};

const NEEDS_API: &str = "volumes live on the chain: pass --api URL (e.g. the `api http://...` line `huds devnet` prints)";
const NONCE_BYTES: usize = 24;

/// What one version of a volume points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub version: u64,
    pub height: u64,
    pub root: Cid,
    pub cap: String,
}

fn key_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("volumes").join(format!("{name}.key"))
}

fn owner_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("volumes").join(format!("{name}.owner"))
}

/// The account that owns the home's volume `name`: the one `volume join` recorded, else the home's own.
fn owner_of(dir: &Path, name: &str) -> Result<Address> {
    match std::fs::read_to_string(owner_path(dir, name)) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: {e}", owner_path(dir, name).display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(Address::of(&wallet::wallet_key(dir)?.public()))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", owner_path(dir, name).display())),
    }
}

/// Refuses to write to a volume another account owns: the chain would take the publish as a new volume of the
/// sender's own under the same name.
pub fn check_writable(dir: &Path, name: &str) -> Result<()> {
    let owner = owner_of(dir, name)?;
    let me = Address::of(&wallet::wallet_key(dir)?.public());
    if owner != me {
        bail!(
            "volume {name} belongs to {owner}, not to this home's account {me}: only its owner can publish to it (mount it with --read-only, or NAME@N)"
        );
    }
    Ok(())
}

const SHARE_PREFIX: &str = "hudsvol:";

fn base32() -> data_encoding::Encoding {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.encoding().expect("a valid base32 alphabet")
}

/// `huds volume share NAME`: what another home needs to read every version: the owner, the key and the name.
pub fn share(dir: &Path, name: &str, json: bool) -> Result<()> {
    checked_name(name)?;
    let key = read_key(dir, name)?;
    let owner = owner_of(dir, name)?;
    let bytes = [&[1u8], owner.0.as_slice(), &key, name.as_bytes()].concat();
    let text = format!("{SHARE_PREFIX}{}", base32().encode(&bytes));
    if json {
        println!(
            "{}",
            json!({ "name": name, "owner": owner.to_string(), "share": text })
        );
    } else {
        println!("{text}");
        eprintln!(
            "anyone holding this reads every version of volume {name}: `huds volume join` it on another home"
        );
    }
    Ok(())
}

/// `huds volume join TEXT`: records a shared volume in this home, to mount read-only.
pub fn join(dir: &Path, text: &str, json: bool) -> Result<()> {
    let bad =
        || anyhow::anyhow!("not a volume share (`huds volume share NAME` prints one: hudsvol:...)");
    let body = text.trim().strip_prefix(SHARE_PREFIX).ok_or_else(bad)?;
    if body.len() > 400 {
        return Err(bad());
    }
    let bytes = base32().decode(body.as_bytes()).map_err(|_| bad())?;
    if bytes.len() < 66 || bytes[0] != 1 {
        return Err(bad());
    }
    let owner = Address(bytes[1..33].try_into().expect("32 bytes"));
    let key: [u8; 32] = bytes[33..65].try_into().expect("32 bytes");
    let name = std::str::from_utf8(&bytes[65..]).map_err(|_| bad())?;
    checked_name(name)?;
    volumes_dir(dir)?;
    match std::fs::read(key_path(dir, name)) {
        Ok(existing) if existing == key && owner_of(dir, name)? == owner => {}
        Ok(_) => bail!(
            "this home already has a volume {name} with another key or owner ({}): remove it first",
            key_path(dir, name).display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            home::write_new(&owner_path(dir, name), owner.to_string().as_bytes(), 0o600)?;
            home::write_new(&key_path(dir, name), &key, 0o600)?;
        }
        Err(e) => {
            return Err(e).with_context(|| format!("reading {}", key_path(dir, name).display()));
        }
    }
    if json {
        println!("{}", json!({ "name": name, "owner": owner.to_string() }));
    } else {
        println!(
            "volume {name} of {owner} joined: mount it with `huds --api URL mount {name} DIR --read-only`"
        );
    }
    Ok(())
}

/// A name as a volume name, refusing what `huds mount` would take for a CID.
fn checked_name(name: &str) -> Result<()> {
    check_name(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    if huds::cids::parse(name).is_ok() {
        bail!("{name:?} reads as a CID: pick a volume name that does not");
    }
    Ok(())
}

/// The volume's key from the home (`create` made it).
fn read_key(dir: &Path, name: &str) -> Result<[u8; 32]> {
    let path = key_path(dir, name);
    let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "this home has no volume {name:?} ({} is missing): `huds volume create {name}` makes one",
            path.display()
        ),
        _ => anyhow::anyhow!("reading {}: {e}", path.display()),
    })?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", path.display()))
}

fn aad(id: &[u8; 32], version: u64) -> Vec<u8> {
    [
        b"huds volume root v1".as_slice(),
        id,
        &version.to_be_bytes(),
    ]
    .concat()
}

/// Seals what a version points at: `cid_len:u8 cid cap_text`, under the volume's key.
fn seal_root(key: &[u8; 32], id: &[u8; 32], version: u64, root: &Cid, cap: &str) -> Vec<u8> {
    let cid = root.to_bytes();
    let plain = [&[cid.len() as u8], cid.as_slice(), cap.as_bytes()].concat();
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).expect("the OS random source is available");
    let sealed = XChaCha20Poly1305::new(key.into())
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &plain,
                aad: &aad(id, version),
            },
        )
        .expect("XChaCha20-Poly1305 seals a short message");
    [nonce.as_slice(), &sealed].concat()
}

/// Opens a version's sealed root; an error if it was not sealed under this key for this volume and version.
fn open_root(key: &[u8; 32], id: &[u8; 32], version: u64, sealed: &[u8]) -> Result<(Cid, String)> {
    let refused = || {
        anyhow::anyhow!(
            "version {version}'s root does not open with this home's key of the volume (another key, or not a HUDS volume root)"
        )
    };
    if sealed.len() < NONCE_BYTES {
        return Err(refused());
    }
    let (nonce, body) = sealed.split_at(NONCE_BYTES);
    let nonce: [u8; NONCE_BYTES] = nonce.try_into().expect("split at the nonce's length");
    let plain = XChaCha20Poly1305::new(key.into())
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: body,
                aad: &aad(id, version),
            },
        )
        .map_err(|_| refused())?;
    let (len, rest) = plain.split_first().ok_or_else(refused)?;
    let len = usize::from(*len);
    if rest.len() < len {
        return Err(refused());
    }
    let cid = Cid::try_from(&rest[..len]).map_err(|_| refused())?;
    let cap = std::str::from_utf8(&rest[len..]).map_err(|_| refused())?;
    huds::Capability::parse(cap).map_err(|_| refused())?;
    Ok((cid, cap.to_string()))
}

/// A volume as the chain answers it: the raw JSON page of versions after `after`.
fn page(api: &str, owner: &Address, name: &str, after: u64) -> Result<Value> {
    api_client::json(
        api,
        &format!("/api/v0/chain/volume?owner={owner}&name={name}&after={after}"),
    )
    .with_context(|| format!("asking the chain for volume {name:?}"))
}

fn head_of(page: &Value) -> Result<u64> {
    page["version"]
        .as_u64()
        .context("the node's volume answer has no version")
}

/// Every version of the volume after `after`, opened with the home's key.
fn versions(dir: &Path, api: &str, name: &str, after: u64) -> Result<(Value, Vec<Version>)> {
    let key = read_key(dir, name)?;
    let owner = owner_of(dir, name)?;
    let id = volume_id(&owner, name);
    let mut out = Vec::new();
    let mut after = after;
    loop {
        let p = page(api, &owner, name, after)?;
        for v in p["versions"].as_array().into_iter().flatten() {
            let version = v["version"]
                .as_u64()
                .context("a version without a number")?;
            if version <= after {
                bail!("the node's volume answer went back to version {version}");
            }
            let sealed = v["root"]
                .as_str()
                .and_then(chain::hex_decode)
                .filter(|r| r.len() <= VOLUME_ROOT_BYTES_MAX)
                .context("a version without a readable root")?;
            let (root, cap) = open_root(&key, &id, version, &sealed)?;
            out.push(Version {
                version,
                height: v["height"].as_u64().unwrap_or(0),
                root,
                cap,
            });
            after = version;
        }
        if p["next"].is_null() {
            return Ok((p, out));
        }
        if p["versions"].as_array().is_none_or(Vec::is_empty) {
            bail!("the node's volume answer pages on with no versions in it");
        }
    }
}

/// What a proof showed of a volume version.
struct Proven {
    record: chain::types::volume::VolumeVersion,
    /// The version was the newest in the certified state.
    newest: bool,
    /// The height of the certified header the proof was against.
    at: u64,
}

/// The newest version of volume `name` this home has seen proven (0: none), from `volumes/NAME.proven`.
/// Versions never go away, so a node that later shows an older one as the newest hides the later ones.
fn floor(dir: &Path, name: &str) -> u64 {
    std::fs::read_to_string(dir.join("volumes").join(format!("{name}.proven")))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn raise_floor(dir: &Path, name: &str, version: u64) -> Result<()> {
    if version > floor(dir, name) {
        home::replace_file(
            &dir.join("volumes").join(format!("{name}.proven")),
            format!("{version}\n").as_bytes(),
        )?;
    }
    Ok(())
}

/// Version `version` of the volume as a certified state of the owner's shard holds it, checked by the home's
/// light client; whether it was the newest version there (the node's newest certified state); and that
/// state's height. Each version proven raises the home's floor for the volume.
fn proven(dir: &Path, api: &str, owner: &Address, name: &str, version: u64) -> Result<Proven> {
    let client = wallet::light_client(dir, api)?;
    let bytes = api_client::bytes(
        api,
        &format!("/api/v0/chain/prove/volume?owner={owner}&name={name}&version={version}"),
        wallet::PROOF_BYTES_MAX,
    )
    .with_context(|| format!("asking for a proof of version {version} of volume {name}"))?;
    let chain::spv::Proof::Volume(p) =
        chain::spv::Proof::decode(&bytes).context("the node's answer is not a proof")?
    else {
        bail!("the node answered with a proof of something else than volume {name}");
    };
    if p.owner != *owner || p.name != name || p.version != version {
        bail!("the node answered with a proof of another volume or version than {name}@{version}");
    }
    let newest = client.verify_volume(&p).map_err(|e| {
        anyhow::anyhow!("the node's proof of version {version} of volume {name} does not hold: {e}")
    })?;
    raise_floor(dir, name, version)?;
    Ok(Proven {
        record: p.record,
        newest,
        at: p.certified.header.height,
    })
}

/// [`proven`], opened with the home's key: the version the chain holds, never the node's word for it. With
/// `newest`, it must also be the volume's newest version (a node that hides later ones is refused).
/// Also returns the height of the certified header it was proven at.
fn proven_version(
    dir: &Path,
    api: &str,
    name: &str,
    version: u64,
    newest: bool,
) -> Result<(Version, u64)> {
    let owner = owner_of(dir, name)?;
    let seen = floor(dir, name);
    let p = proven(dir, api, &owner, name, version)?;
    if newest && !p.newest {
        bail!(
            "the node named version {version} as the newest of volume {name}, but its own certified state holds a later one"
        );
    }
    if newest && version < seen {
        bail!(
            "the node shows version {version} of volume {name} as the newest (at shard height {}), but this home has seen version {seen} proven: the node hides later versions, or lags",
            p.at
        );
    }
    let key = read_key(dir, name)?;
    let (root, cap) = open_root(&key, &volume_id(&owner, name), version, &p.record.root)?;
    Ok((
        Version {
            version,
            height: p.record.height,
            root,
            cap,
        },
        p.at,
    ))
}

/// Adds `path` through the node (with a storage deal when the home has a wallet on a chain) and publishes it
/// as the version after `replaces`.
fn publish_path(
    dir: &Path,
    api: &str,
    token: Option<&str>,
    name: &str,
    path: &Path,
    replaces: u64,
) -> Result<Value> {
    let key = read_key(dir, name)?;
    let wallet = wallet::wallet_key(dir)?;
    let owner = Address::of(&wallet.public());
    let id = volume_id(&owner, name);
    // A publish on top of a version already replaced can never go through: refused before anything is stored
    // or paid for.
    let head = head_of(&page(api, &owner, name, 0)?)?;
    if head != replaces {
        bail!(
            "volume {name} {} {replaces} to {head} (another writer): nothing was published",
            fuse_mount::work_fs::MOVED_ON
        );
    }
    // The light client is made current before anything is stored or posted, so that checking the version
    // afterwards fails only on the node's answer.
    wallet::light_client(dir, api)?;
    let ask = deal::ask(dir, api, None, None)?;
    let params = api_client::AddParams {
        public: false,
        k: None,
        m: None,
        deal: ask,
    };
    let added = api_client::add(api, token, path, params, None)
        .with_context(|| format!("adding {}", path.display()))?;
    // The node is not trusted with what the version names: its root CID must be the content's own.
    let expected =
        huds::add::cid_of_path(path).with_context(|| format!("hashing {}", path.display()))?;
    let cap = added["cap"]
        .as_str()
        .context("the node's add answer has no capability")?
        .to_string();
    let root = huds::cids::parse(added["cid"].as_str().unwrap_or(""))
        .context("the node's add answer has no root CID")?;
    if root != expected {
        bail!(
            "the node stored {} as {root}, but its content is {expected}: refusing to publish it",
            path.display()
        );
    }
    let deal = match &ask {
        Some(ask) => Some(
            deal::open_added(dir, api, ask, false, &added).with_context(|| {
                format!(
                    "{} is stored, but its storage deal was not opened",
                    path.display()
                )
            })?,
        ),
        None => None,
    };
    let version = replaces + 1;
    let sealed = seal_root(&key, &id, version, &root, &cap);
    let status = wallet::chain_status(api)?;
    let kind = TxKind::PublishVolume {
        name: name.to_string(),
        replaces,
        root: sealed.clone(),
    };
    let (posted, fee) = wallet::sign_and_post(api, &wallet, &status, kind).map_err(|e| {
        if e.to_string().contains("the volume is at version") {
            e.context(format!(
                "volume {name} {} {replaces} (another writer got there first): nothing was published (the content stays stored)",
                fuse_mount::work_fs::MOVED_ON
            ))
        } else {
            e
        }
    })?;
    // The node's word that the transaction is final is not enough: the version must be in a certified state
    // with exactly this root (a nonce moved by another transaction would otherwise pass for it).
    let mut attempts = 0;
    let landed = loop {
        attempts += 1;
        match proven(dir, api, &owner, name, version) {
            Ok(p) => break p.record.root == sealed,
            // The node may serve proofs from a certified state a moment behind the one it answered from.
            Err(_) if attempts < 5 => std::thread::sleep(std::time::Duration::from_secs(1)),
            Err(e) => {
                return Err(e.context(format!(
                    "the node said version {version} of {name} is final, but did not prove it"
                )));
            }
        }
    };
    if !landed {
        bail!(
            "the node said version {version} of {name} is final, but the chain holds another root for it: nothing is taken as published"
        );
    }
    Ok(json!({
        "name": name,
        "id": chain::hex(&id),
        "version": version,
        "cid": root.to_string(),
        "height": posted["height"],
        "fee": fee.to_string(),
        "deal": deal.map_or(Value::Null, |d| d["id"].clone()),
    }))
}

fn print_published(v: &Value, json: bool) {
    if json {
        println!("{v}");
    } else {
        println!(
            "volume {} version {}: {} (shard height {})",
            v["name"].as_str().unwrap_or(""),
            v["version"],
            v["cid"].as_str().unwrap_or(""),
            v["height"]
        );
    }
}

/// `huds volume create NAME`: a volume key in the home and version 1, an empty directory.
pub fn create(
    dir: &Path,
    api: Option<&str>,
    token: Option<&str>,
    name: &str,
    json: bool,
) -> Result<()> {
    checked_name(name)?;
    let api = api.context(NEEDS_API)?;
    let owner = Address::of(&wallet::wallet_key(dir)?.public());
    let head = head_of(&page(api, &owner, name, 0)?)?;
    if head > 0 {
        bail!(
            "volume {name} already exists (version {head}): `huds volume publish {name} PATH` makes a new version"
        );
    }
    if owner_path(dir, name).exists() {
        bail!(
            "this home joined volume {name} of {}: pick another name for a volume of its own",
            owner_of(dir, name)?
        );
    }
    let volumes = volumes_dir(dir)?;
    // A create cut short after the key was written but before the chain took version 1 finds the key again.
    home::key_if_absent(&key_path(dir, name))?;
    // The key must outlive a crash before any version sealed under it can exist.
    std::fs::File::open(&volumes)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", volumes.display()))?;
    let empty = volumes.join(format!(".empty-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&empty);
    std::fs::create_dir(&empty).with_context(|| format!("creating {}", empty.display()))?;
    let published = publish_path(dir, api, token, name, &empty, 0);
    let _ = std::fs::remove_dir(&empty);
    print_published(&published?, json);
    Ok(())
}

/// `huds volume publish NAME PATH`: stores PATH and makes it the volume's next version.
pub fn publish(
    dir: &Path,
    api: Option<&str>,
    token: Option<&str>,
    name: &str,
    path: &Path,
    json: bool,
) -> Result<()> {
    checked_name(name)?;
    let api = api.context(NEEDS_API)?;
    read_key(dir, name)?;
    check_writable(dir, name)?;
    let owner = Address::of(&wallet::wallet_key(dir)?.public());
    let head = head_of(&page(api, &owner, name, 0)?)?;
    if head == 0 {
        bail!("volume {name} has no version on the chain yet: `huds volume create {name}` first");
    }
    print_published(&publish_path(dir, api, token, name, path, head)?, json);
    Ok(())
}

/// `huds volume log NAME`: every version, oldest first.
pub fn log(dir: &Path, api: Option<&str>, name: &str, json: bool) -> Result<()> {
    checked_name(name)?;
    let api = api.context(NEEDS_API)?;
    let (last, all) = versions(dir, api, name, 0)?;
    // Every listed root opened under the volume's key, so none is forged; the head is proven, so none is hidden.
    let head = head_of(&last)?;
    if all.last().map(|v| v.version) != (head > 0).then_some(head) {
        bail!("the node's list of versions of {name} does not end at its newest, {head}");
    }
    // The head is replaced by what its proof shows; older entries are the node's list (each root opens only
    // under the volume's key, so none is made up, but only the head is proven to be on the chain).
    let mut all = all;
    let proven_at = match all.pop() {
        None => None,
        Some(listed) => {
            let (head, at) = proven_version(dir, api, name, listed.version, true)?;
            if head != listed {
                bail!(
                    "the node lists version {} of {name} with another root or height than the chain proves",
                    listed.version
                );
            }
            all.push(head);
            Some(at)
        }
    };
    if json {
        let list: Vec<Value> = all
            .iter()
            .map(|v| {
                json!({ "version": v.version, "height": v.height, "cid": v.root.to_string(),
                             "proven": v.version == head && proven_at.is_some() })
            })
            .collect();
        println!(
            "{}",
            json!({ "name": name, "id": last["id"], "owner": last["owner"], "version": head,
                    "proven": proven_at.is_some(), "proven_at": proven_at, "versions": list })
        );
        return Ok(());
    }
    if all.is_empty() && floor(dir, name) > 0 {
        bail!(
            "the node says volume {name} has no version, but this home has seen version {} proven: the node hides them",
            floor(dir, name)
        );
    }
    if all.is_empty() {
        println!("volume {name} has no version on the chain (as the node says)");
        return Ok(());
    }
    println!(
        "volume {name} of {}: {} versions",
        last["owner"].as_str().unwrap_or("?"),
        all.len()
    );
    for v in &all {
        println!("{:>6}  height {:>8}  {}", v.version, v.height, v.root);
    }
    println!(
        "version {head} is the newest at shard height {}: proven with this home's trust file",
        proven_at.unwrap_or(0)
    );
    Ok(())
}

/// The volume's newest version, proven, if it is newer than `shown`: what a following mount moves to.
pub fn newer_version(dir: &Path, api: &str, name: &str, shown: u64) -> Result<Option<Version>> {
    let head = head_of(&page(api, &owner_of(dir, name)?, name, 0)?)?;
    if head <= shown {
        return Ok(None);
    }
    Ok(Some(proven_version(dir, api, name, head, true)?.0))
}

/// A volume `huds mount` was asked for.
pub struct Target {
    pub name: String,
    pub version: Version,
    /// A version was named (`NAME@N`): such a mount is always read-only.
    pub pinned: bool,
}

/// What `huds mount` reads for a target that names a volume of this home: `NAME` (its newest version) or
/// `NAME@N`. None if `target` is no volume name this home has a key for.
pub fn mount_target(dir: &Path, api: Option<&str>, target: &str) -> Result<Option<Target>> {
    let (name, at) = match target.split_once('@') {
        Some((name, n)) => (name, Some(n)),
        None => (target, None),
    };
    if checked_name(name).is_err() || !key_path(dir, name).exists() {
        if at.is_some() {
            bail!(
                "{target:?}: this home has no volume {name:?} (`huds volume create {name}` makes one)"
            );
        }
        return Ok(None);
    }
    let api = api.context(NEEDS_API)?;
    let wanted =
        match at {
            Some(n) => Some(n.parse::<u64>().ok().filter(|n| *n > 0).with_context(|| {
                format!("{target:?}: the version after '@' is a number from 1")
            })?),
            None => None,
        };
    let head = head_of(&page(api, &owner_of(dir, name)?, name, 0)?)?;
    let version = match wanted {
        Some(n) if n > head => {
            bail!("volume {name} has no version {n} (its newest is {head})")
        }
        Some(n) => proven_version(dir, api, name, n, false)?.0,
        None if head == 0 && floor(dir, name) > 0 => bail!(
            "the node says volume {name} has no version, but this home has seen version {} proven: the node hides them",
            floor(dir, name)
        ),
        None if head == 0 => bail!("volume {name} has no version on the chain yet"),
        None => proven_version(dir, api, name, head, true)?.0,
    };
    Ok(Some(Target {
        name: name.to_string(),
        version,
        pinned: wanted.is_some(),
    }))
}

/// Publishes a read-write mount's working copy through the node: stored with a deal, then the chain
/// transaction that makes it the version after the mount's base.
pub struct NodePublisher {
    pub home: PathBuf,
    pub api: String,
    pub token: Option<String>,
    pub name: String,
}

impl fuse_mount::Publisher for NodePublisher {
    fn publish(&self, dir: &Path, base: u64) -> std::result::Result<u64, String> {
        let v = publish_path(
            &self.home,
            &self.api,
            self.token.as_deref(),
            &self.name,
            dir,
            base,
        )
        .map_err(|e| format!("{e:#}"))?;
        let version = v["version"].as_u64().unwrap_or(base + 1);
        // Stdout may be gone (a closed terminal): the publish happened all the same.
        let _ = writeln!(
            std::io::stdout(),
            "published volume {} version {version}: {}",
            self.name,
            v["cid"].as_str().unwrap_or("")
        );
        Ok(version)
    }
}

/// The home's `volumes/` directory, made if missing, readable by its owner alone (it holds keys and working
/// copies, the plaintext of private volumes).
pub fn volumes_dir(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let volumes = dir.join("volumes");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&volumes)
        .with_context(|| format!("creating {}", volumes.display()))?;
    std::fs::set_permissions(&volumes, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("securing {}", volumes.display()))?;
    Ok(volumes)
}

/// Where a volume's working copy, its state and its lock live in the home.
pub fn work_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let volumes = dir.join("volumes");
    (
        volumes.join(format!("{name}.work")),
        volumes.join(format!("{name}.state")),
        volumes.join(format!("{name}.lock")),
    )
}

/// The version after `after` whose root is `root`, if the chain has one: how a mount that died between the
/// chain taking its publish and its state file saying so finds its own version.
pub fn find_published(
    dir: &Path,
    api: &str,
    name: &str,
    after: u64,
    root: &Cid,
) -> Result<Option<u64>> {
    let (_, all) = versions(dir, api, name, after)?;
    let Some(listed) = all.iter().find(|v| v.root == *root) else {
        return Ok(None);
    };
    // Taken as published only once the chain proves it, not on the node's word.
    let (p, _) = proven_version(dir, api, name, listed.version, false).with_context(|| {
        format!(
            "the node lists version {} of {name} with this tree, but does not prove it",
            listed.version
        )
    })?;
    if p.root != *root {
        bail!(
            "the node lists version {} of {name} with this tree, but the chain holds another",
            p.version
        );
    }
    Ok(Some(p.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_open_only_under_their_key_volume_and_version() {
        let key = [7u8; 32];
        let id = [1u8; 32];
        let root = huds::cids::parse("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
            .expect("a CID");
        let cap = huds::Capability {
            manifest: root,
            key: huds::segment::FileKey([9; 32]),
        }
        .to_text();
        let sealed = seal_root(&key, &id, 3, &root, &cap);
        assert!(sealed.len() <= VOLUME_ROOT_BYTES_MAX, "{}", sealed.len());
        assert_eq!(
            open_root(&key, &id, 3, &sealed).expect("opens"),
            (root, cap)
        );
        assert!(open_root(&key, &id, 4, &sealed).is_err(), "another version");
        assert!(
            open_root(&key, &[2; 32], 3, &sealed).is_err(),
            "another volume"
        );
        assert!(open_root(&[8; 32], &id, 3, &sealed).is_err(), "another key");
        let mut flipped = sealed.clone();
        flipped[30] ^= 1;
        assert!(open_root(&key, &id, 3, &flipped).is_err(), "tampered");
        assert!(open_root(&key, &id, 3, &sealed[..10]).is_err(), "short");
    }

    #[test]
    fn names_that_read_as_cids_are_refused() {
        assert!(checked_name("site").is_ok());
        assert!(
            checked_name("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku").is_err()
        );
        assert!(checked_name("Site").is_err());
    }
}
