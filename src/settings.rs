//! The effective configuration: each value with where it came from (a flag, an environment variable,
//! `config.toml`, or the default), resolved in that order. `huds config show` prints it; logging starts from
//! it; a running node re-reads `config.toml` on SIGHUP and applies what changed there (see [`reload`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde_json::{Value, json};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::home::{self, Config};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    /// `config.toml` of the home, with the key.
    ConfigFile(PathBuf, &'static str),
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(name) => write!(f, "flag {name}"),
            Source::Env(name) => write!(f, "environment ${name}"),
            Source::ConfigFile(path, key) => write!(f, "{} {key}", path.display()),
            Source::Default => write!(f, "default"),
        }
    }
}

/// A value and its source.
#[derive(Debug, Clone)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

/// The log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line: timestamp, level, target, fields.
    Json,
}

impl LogFormat {
    fn parse(text: &str) -> Result<LogFormat> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => bail!("log format {other:?} is not known: use text or json"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// The default log level: warnings and errors.
pub const LOG_LEVEL_DEFAULT: &str = "warn";

/// What was given on the command line or in the environment, before the home's `config.toml` is read.
pub struct Given {
    pub home: Setting<PathBuf>,
    pub api: Option<Setting<String>>,
    pub log_level: Option<Setting<String>>,
    pub log_format: Option<Setting<LogFormat>>,
}

fn source_of(matches: &ArgMatches, id: &str, flag: &'static str, env: &'static str) -> Source {
    match matches.value_source(id) {
        Some(ValueSource::EnvVariable) => Source::Env(env),
        Some(ValueSource::DefaultValue) => Source::Default,
        _ => Source::Flag(flag),
    }
}

impl Given {
    /// Reads the global options from the parsed command line.
    pub fn from_matches(matches: &ArgMatches) -> Result<Given> {
        let home = match matches.get_one::<PathBuf>("data") {
            Some(dir) => Setting {
                value: dir.clone(),
                source: source_of(matches, "data", "--data", "HUDS_HOME"),
            },
            // Without $HOME the home is unknown; commands that need one say so when they open it.
            None => Setting {
                value: home::dir_from(None).unwrap_or_default(),
                source: Source::Default,
            },
        };
        let api = matches.get_one::<String>("api").map(|a| Setting {
            value: a.clone(),
            source: source_of(matches, "api", "--api", "HUDS_API"),
        });
        let log_level = matches.get_one::<String>("log_level").map(|l| Setting {
            value: l.clone(),
            source: source_of(matches, "log_level", "--log-level", "HUDS_LOG_LEVEL"),
        });
        let log_format = matches.get_one::<LogFormat>("log_format").map(|f| Setting {
            value: *f,
            source: source_of(matches, "log_format", "--log-format", "HUDS_LOG_FORMAT"),
        });
        Ok(Given {
            home,
            api,
            log_level,
            log_format,
        })
    }
}

/// The configuration in effect.
pub struct Effective {
    pub home: Setting<PathBuf>,
    pub api: Option<Setting<String>>,
    pub log_level: Setting<String>,
    pub log_format: Setting<LogFormat>,
    /// The shard bytes a node holds at most (`None`: unlimited); `huds node --storage` overrides it.
    pub storage_max: Setting<Option<u64>>,
    pub k: Setting<u8>,
    pub m: Setting<u8>,
    pub segment_bytes_max: Setting<u32>,
    /// Whether uploads through the API need a token (its value is never printed).
    pub api_token: Setting<bool>,
}

/// The home's `config.toml`, if the home exists (`None` before `huds init`).
pub fn read_config(dir: &Path) -> Result<Option<Config>> {
    if dir.as_os_str().is_empty() || !dir.join("config.toml").exists() {
        return Ok(None);
    }
    Ok(Some(home::Home::open(dir)?.config))
}

impl Effective {
    /// Resolves every value: flag, environment, `config.toml` (`config`), default.
    pub fn resolve(given: &Given, config: Option<&Config>) -> Result<Effective> {
        let file = given.home.value.join("config.toml");
        let from_file = |key: &'static str| Source::ConfigFile(file.clone(), key);
        let defaults = Config::default();
        let log_level = match (&given.log_level, config.and_then(|c| c.log.level.clone())) {
            (Some(s), _) => s.clone(),
            (None, Some(level)) => Setting {
                value: level,
                source: from_file("log.level"),
            },
            (None, None) => match std::env::var("RUST_LOG") {
                Ok(level) if !level.is_empty() => Setting {
                    value: level,
                    source: Source::Env("RUST_LOG"),
                },
                _ => Setting {
                    value: LOG_LEVEL_DEFAULT.into(),
                    source: Source::Default,
                },
            },
        };
        let log_format = match (&given.log_format, config.and_then(|c| c.log.format.clone())) {
            (Some(s), _) => s.clone(),
            (None, Some(format)) => Setting {
                value: LogFormat::parse(&format).with_context(|| format!("{}", file.display()))?,
                source: from_file("log.format"),
            },
            (None, None) => Setting {
                value: LogFormat::Text,
                source: Source::Default,
            },
        };
        let storage_max = match config.and_then(|c| c.node.storage_max.clone()) {
            Some(text) => Setting {
                value: Some(
                    crate::parse_bytes(&text)
                        .map_err(anyhow::Error::msg)
                        .with_context(|| format!("{} node.storage_max", file.display()))?,
                ),
                source: from_file("node.storage_max"),
            },
            None => Setting {
                value: None,
                source: Source::Default,
            },
        };
        let storage = config.map(|c| &c.storage);
        let pick = |v: Option<u8>, d: u8, key: &'static str| match v {
            Some(v) => Setting {
                value: v,
                source: from_file(key),
            },
            None => Setting {
                value: d,
                source: Source::Default,
            },
        };
        let segment_bytes_max = match storage.map(|s| s.segment_bytes_max) {
            Some(v) => Setting {
                value: v,
                source: from_file("storage.segment_bytes_max"),
            },
            None => Setting {
                value: defaults.storage.segment_bytes_max,
                source: Source::Default,
            },
        };
        let token_env = std::env::var("HUDS_API_TOKEN").is_ok_and(|t| !t.is_empty());
        let api_token = if token_env {
            Setting {
                value: true,
                source: Source::Env("HUDS_API_TOKEN"),
            }
        } else if config.is_some_and(|c| c.api.token.is_some()) {
            Setting {
                value: true,
                source: from_file("api.token"),
            }
        } else {
            Setting {
                value: false,
                source: Source::Default,
            }
        };
        Ok(Effective {
            home: given.home.clone(),
            api: given.api.clone(),
            log_level,
            log_format,
            storage_max,
            k: pick(storage.map(|s| s.k), defaults.storage.k, "storage.k"),
            m: pick(storage.map(|s| s.m), defaults.storage.m, "storage.m"),
            segment_bytes_max,
            api_token,
        })
    }

    /// Each key with its value and source, in the order `huds config show` prints them.
    pub fn rows(&self) -> Vec<(&'static str, Value, String)> {
        let row = |key, value: Value, source: &Source| (key, value, source.to_string());
        vec![
            row(
                "home",
                json!(self.home.value.display().to_string()),
                &self.home.source,
            ),
            match &self.api {
                Some(a) => row("api", json!(a.value), &a.source),
                None => row("api", Value::Null, &Source::Default),
            },
            row(
                "log.level",
                json!(self.log_level.value),
                &self.log_level.source,
            ),
            row(
                "log.format",
                json!(self.log_format.value.name()),
                &self.log_format.source,
            ),
            row(
                "node.storage_max",
                json!(self.storage_max.value),
                &self.storage_max.source,
            ),
            row("storage.k", json!(self.k.value), &self.k.source),
            row("storage.m", json!(self.m.value), &self.m.source),
            row(
                "storage.segment_bytes_max",
                json!(self.segment_bytes_max.value),
                &self.segment_bytes_max.source,
            ),
            row(
                "api.token",
                json!(if self.api_token.value { "set" } else { "none" }),
                &self.api_token.source,
            ),
        ]
    }
}

/// `huds config show`.
pub fn show(effective: &Effective, json_out: bool) {
    let rows = effective.rows();
    if json_out {
        let map: serde_json::Map<String, Value> = rows
            .into_iter()
            .map(|(k, v, s)| (k.to_string(), json!({ "value": v, "source": s })))
            .collect();
        println!("{}", Value::Object(map));
        return;
    }
    let width = rows.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
    for (key, value, source) in rows {
        let value = match value {
            Value::Null => match key {
                "node.storage_max" => "unlimited".to_string(),
                _ => "none".to_string(),
            },
            Value::String(s) => s,
            other => other.to_string(),
        };
        println!("{key:<width$}  {value}  ({source})");
    }
}

type FilterHandle = tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// The log filter's reload handle, set once logging starts.
static LOG_FILTER: OnceLock<FilterHandle> = OnceLock::new();

fn filter(level: &str) -> Result<EnvFilter> {
    EnvFilter::try_new(level).with_context(|| {
        format!("log level {level:?} is not valid: use error, warn, info, debug, trace or target=level directives")
    })
}

/// Starts logging to standard error at `level` in `format`. A level that does not parse falls back to the
/// default, with the reason on standard error, so a typo never silences errors.
pub fn start_logging(level: &str, format: LogFormat) {
    let (chosen, problem) = match filter(level) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new(LOG_LEVEL_DEFAULT), Some(e)),
    };
    let (layer, handle) = tracing_subscriber::reload::Layer::new(chosen);
    let registry = tracing_subscriber::registry().with(layer);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let started = match format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json()).try_init(),
    };
    if started.is_ok() {
        let _ = LOG_FILTER.set(handle);
    }
    if let Some(e) = problem {
        tracing::error!("{e:#}; logging at {LOG_LEVEL_DEFAULT}");
    }
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Reloaded {
    pub log_level: Option<String>,
    pub storage_max: Option<Option<u64>>,
}

/// Re-reads the home's `config.toml` and applies the values that can change while a node runs: the log level
/// (unless a flag or the environment set it, which a reload cannot change) and the storage limit (unless
/// `--storage` set it). A config that does not parse changes nothing and says why.
pub fn reload(given: &Given, storage_flag: bool, node: &huds_net::NodeHandle) -> Result<Reloaded> {
    // A config.toml that is gone (moved away, or mid-replacement) changes nothing: reading it as "no settings"
    // would drop the storage limit and the log level without a word.
    let Some(config) = read_config(&given.home.value)? else {
        bail!(
            "{} is gone: nothing changed",
            given.home.value.join("config.toml").display()
        );
    };
    let config = Some(config);
    let effective = Effective::resolve(given, config.as_ref())?;
    let mut done = Reloaded::default();
    if given.log_level.is_none()
        && let Some(handle) = LOG_FILTER.get()
    {
        let f = filter(&effective.log_level.value)?;
        handle
            .reload(f)
            .context("the log filter is gone (logging stopped)")?;
        done.log_level = Some(effective.log_level.value.clone());
    }
    if !storage_flag {
        node.set_storage_limit(effective.storage_max.value);
        done.storage_max = Some(effective.storage_max.value);
    }
    Ok(done)
}
