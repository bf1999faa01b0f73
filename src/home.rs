//! The node home: `config.toml`, the node and wallet keys, and the RocksDB block store under `db/`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// `config.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub storage: StorageConfig,
    #[serde(default)]
    pub api: ApiConfig,
    /// What `huds node` runs with; a running node reloads it on SIGHUP.
    #[serde(default, skip_serializing_if = "NodeConfig::is_empty")]
    pub node: NodeConfig,
    /// Diagnostics on standard error; a running node reloads it on SIGHUP.
    #[serde(default, skip_serializing_if = "LogConfig::is_empty")]
    pub log: LogConfig,
}

/// `[node]`: what a running node can change without a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Most shard bytes to hold for the network, as `--storage` takes it ("500G"); absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_max: Option<String>,
}

impl NodeConfig {
    fn is_empty(&self) -> bool {
        self.storage_max.is_none()
    }
}

/// `[log]`: the level filter and the format of diagnostics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A level (`error`, `warn`, `info`, `debug`, `trace`) or per-target directives (`warn,huds_net=debug`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// `text` or `json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl LogConfig {
    fn is_empty(&self) -> bool {
        self.level.is_none() && self.format.is_none()
    }
}

/// The HTTP API and gateway.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The bearer token uploads need (`Authorization: Bearer <token>`); `huds init` makes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Data shards per segment.
    pub k: u8,
    /// Parity shards per segment.
    pub m: u8,
    /// Plaintext bytes per segment.
    pub segment_bytes_max: u32,
}

impl Default for Config {
    fn default() -> Self {
        let d = huds::AddOptions::default();
        Config {
            storage: StorageConfig {
                k: d.k,
                m: d.m,
                segment_bytes_max: d.segment_bytes_max,
            },
            api: ApiConfig::default(),
            node: NodeConfig::default(),
            log: LogConfig::default(),
        }
    }
}

pub struct Home {
    pub dir: PathBuf,
    pub config: Config,
}

/// The home directory: --data, else $HUDS_HOME (clap reads it), else ~/.huds.
pub fn dir_from(data: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = data {
        return Ok(d);
    }
    let home = std::env::var_os("HOME")
        .context("neither --data, $HUDS_HOME nor $HOME is set: pass --data DIR")?;
    Ok(Path::new(&home).join(".huds"))
}

pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))
}

/// Writes a new random key at `path` unless a whole 32-byte key is already there.
pub(crate) fn key_if_absent(path: &Path) -> Result<()> {
    match fs::metadata(path) {
        Ok(m) if m.len() == 32 => Ok(()),
        Ok(_) => bail!(
            "{} exists but is not a 32-byte key: move it away and run init again",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_new(path, &random_key(), 0o600),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn random_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).expect("the OS random source is available");
    k
}

/// A fresh API token: 32 random bytes in hex.
fn new_token() -> String {
    random_key().iter().map(|b| format!("{b:02x}")).collect()
}

impl Home {
    /// Creates a home: config, node key, wallet key, and the store. Refuses to overwrite one.
    pub fn init(dir: &Path) -> Result<Home> {
        if dir.join("config.toml").exists() {
            bail!(
                "{} is already a huds home (config.toml exists); use it as is or pick another --data",
                dir.display()
            );
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut config = Config::default();
        config.api.token = Some(new_token());
        // An init cut short (a crash, a full disk) may have left keys without a config: they were never used
        // (nothing runs on a home without config.toml), so a whole 32-byte key is kept and anything else
        // refused, and the init can simply run again.
        key_if_absent(&dir.join("node.key"))?;
        key_if_absent(&dir.join("wallet.key"))?;
        huds::Store::open(&dir.join("db")).context("creating the block store")?;
        let text = toml::to_string_pretty(&config).expect("the config serialises");
        // The config holds the API token: readable by its owner only. Written aside and renamed, so that a
        // home never has a half-written config.toml.
        let tmp = dir.join("config.toml.tmp");
        let _ = fs::remove_file(&tmp);
        write_new(&tmp, text.as_bytes(), 0o600)?;
        fs::rename(&tmp, dir.join("config.toml"))
            .with_context(|| format!("creating {}", dir.join("config.toml").display()))?;
        Ok(Home {
            dir: dir.to_path_buf(),
            config,
        })
    }

    /// Opens an existing home.
    pub fn open(dir: &Path) -> Result<Home> {
        let path = dir.join("config.toml");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!(
                    "no huds home at {}: run `huds --data {} init` first",
                    dir.display(),
                    dir.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let config: Config = toml::from_str(&text)
            .with_context(|| format!("{} is not a valid config", path.display()))?;
        Ok(Home {
            dir: dir.to_path_buf(),
            config,
        })
    }

    /// The API token, made and saved to config.toml first if the home predates tokens.
    pub fn api_token(&mut self) -> Result<String> {
        if let Some(t) = &self.config.api.token {
            return Ok(t.clone());
        }
        let token = new_token();
        self.config.api.token = Some(token.clone());
        let path = self.dir.join("config.toml");
        let tmp = self.dir.join("config.toml.tmp");
        let text = toml::to_string_pretty(&self.config).expect("the config serialises");
        let _ = fs::remove_file(&tmp);
        write_new(&tmp, text.as_bytes(), 0o600)?;
        fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(token)
    }

    /// The node key's 32-byte seed.
    pub fn node_seed(&self) -> Result<[u8; 32]> {
        let path = self.dir.join("node.key");
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("{} is not a 32-byte key", path.display()))
    }

    /// The add options config.toml sets.
    pub fn add_options(&self) -> huds::AddOptions {
        huds::AddOptions {
            k: self.config.storage.k,
            m: self.config.storage.m,
            public: false,
            segment_bytes_max: self.config.storage.segment_bytes_max,
        }
    }

    /// The block store as it is now, for reading only: usable while a node or another command holds the home.
    pub fn store_read_only(&self) -> Result<huds::Store> {
        huds::Store::open_read_only(&self.dir.join("db"))
            .with_context(|| format!("opening the block store of {}", self.dir.display()))
    }

    pub fn store(&self) -> Result<huds::Store> {
        huds::Store::open(&self.dir.join("db")).with_context(|| {
            format!(
                "opening the block store of {} (is another huds using it?)",
                self.dir.display()
            )
        })
    }
}

/// Replaces `path` with `bytes` whole: written beside it under a name of this process's own, synced, renamed
/// over it and its directory synced. A crash or a full disk leaves the old file or the new one, never a part
/// of one, and two processes replacing it at once leave one of their files.
pub fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?
        .to_string_lossy()
        .into_owned();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    };
    write()
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
        .with_context(|| format!("writing {}", path.display()))
}
