//! The `huds` command: `specs/cli.md` is the contract, `README.md` shows it in use.

mod api_client;
mod bench;
mod bench_chain;
mod bench_economy;
mod bench_fuse;
mod bench_net;
mod chain_feed;
mod deal;
mod home;
mod metrics;
mod mount;
mod network;
mod prover;
mod registry;
mod repairer;
mod rm;
mod settings;
mod volume;
mod wallet;
mod worker;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use huds::read::EntryKind;
use huds::{AddOptions, BlockStore, Reader, Source};

#[derive(Parser)]
#[command(
    name = "huds",
    version,
    about = "HUDS: content-addressed, sealed, erasure-coded storage"
)]
struct Cli {
    /// Node home (default $HUDS_HOME, else ~/.huds).
    #[arg(long, global = true, env = "HUDS_HOME", value_name = "DIR")]
    data: Option<PathBuf>,
    /// Send the command to a running node's HTTP API (e.g. http://127.0.0.1:5001).
    #[arg(long, env = "HUDS_API", value_name = "URL")]
    api: Option<String>,
    /// Print data as one JSON object on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Diagnostics on standard error: error, warn, info, debug, trace, or directives such as
    /// `warn,huds_net=debug` (default: config.toml's log.level, else $RUST_LOG, else warn).
    #[arg(long, global = true, env = "HUDS_LOG_LEVEL", value_name = "LEVEL")]
    log_level: Option<String>,
    /// How diagnostics are written (default: config.toml's log.format, else text).
    #[arg(long, global = true, env = "HUDS_LOG_FORMAT", value_enum)]
    log_format: Option<settings::LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a node home: node key, wallet key, config.toml, block store.
    Init,
    /// Store a file or a directory tree (`-` reads standard input).
    Add {
        /// Derive the key from the content and record it, so the CID alone reads it.
        #[arg(long)]
        public: bool,
        /// Data shards per segment (default from config.toml).
        #[arg(short = 'k')]
        k: Option<u8>,
        /// Parity shards per segment (default from config.toml).
        #[arg(short = 'm')]
        m: Option<u8>,
        /// With --api on a chain: store without opening a storage deal.
        #[arg(long)]
        no_deal: bool,
        /// With --api on a chain: the deal's length in storage periods (default 64).
        #[arg(long, value_name = "N")]
        periods: Option<u64>,
        /// With --api on a chain: the price offered each holder, IOST per GiB per period (default 1).
        #[arg(long, value_name = "IOST")]
        price: Option<String>,
        path: PathBuf,
    },
    /// Fetch a file or a tree to OUT (default: ./<CID>).
    Get {
        /// A capability (huds:...) or a public CID, optionally followed by /path.
        target: String,
        #[arg(short = 'o', value_name = "OUT")]
        out: Option<PathBuf>,
    },
    /// Write a file's content to standard output.
    Cat { target: String },
    /// List a directory.
    Ls { target: String },
    /// Unpin a file or tree this home (or, with --api, that node) added, deleting its shards nothing else
    /// holds; with --api on a chain, first end the home account's running storage deal of it.
    Rm {
        /// A capability (huds:...) or a public CID.
        target: String,
    },
    /// List what this home (or, with --api, that node) added: CID, size, date, name; capabilities only with
    /// --caps.
    Pins {
        /// Also print each pin's capability (anyone who sees it can read the file).
        #[arg(long)]
        caps: bool,
    },
    /// Mount a stored file or tree as a read-only directory until SIGINT/SIGTERM (with --api, read through that
    /// node from the network; the file key stays in this process).
    Mount {
        /// A capability (huds:...) or a public CID, optionally followed by /path.
        target: String,
        /// An empty directory to mount on (a stale mount left there by a killed `huds mount` is cleared).
        dir: PathBuf,
        /// Mount read-only: always so for a capability, a CID or a volume's NAME@N, whose content never
        /// changes; a volume's NAME mounts read-write without it.
        #[arg(long)]
        read_only: bool,
        /// A read-write volume mount publishes its changes this often, in seconds (0: only on fsync of its
        /// root and at unmount).
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        publish_every: u64,
        /// A read-only mount of a volume's NAME (not NAME@N) moves to each newer version, asking the chain
        /// this often, in seconds (0: it stays on the version it mounted).
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        follow_every: u64,
        /// Let other local users use the mount (root may always; others need user_allow_other in
        /// /etc/fuse.conf); the kernel still checks each file's mode.
        #[arg(long)]
        allow_other: bool,
        /// The most decoded segments to keep in memory, in MiB (at least 12 segments are kept).
        #[arg(long, value_name = "MIB", default_value_t = 128)]
        cache_mb: u64,
        /// Threads serving the kernel's requests.
        #[arg(long, value_name = "N", default_value_t = fuse_mount::THREADS_DEFAULT)]
        threads: usize,
    },
    /// Run a storage node until SIGINT/SIGTERM (`huds node status`: what a node holds).
    #[command(args_conflicts_with_subcommands = true)]
    Node {
        #[command(subcommand)]
        action: Option<NodeAction>,
        /// Address to listen on (repeatable).
        #[arg(
            long,
            value_name = "MULTIADDR",
            default_value = "/ip4/127.0.0.1/tcp/4001"
        )]
        listen: Vec<huds_net::libp2p::Multiaddr>,
        /// A node to join through (repeatable).
        #[arg(long, value_name = "MULTIADDR")]
        bootstrap: Vec<huds_net::libp2p::Multiaddr>,
        /// Where the HTTP API listens.
        #[arg(long = "api", value_name = "ADDR", default_value = "127.0.0.1:5001")]
        api_listen: std::net::SocketAddr,
        /// Most shard bytes to hold for the network (e.g. 500G, 64M, 1048576); unlimited if absent.
        #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
        storage: Option<u64>,
        /// Also serve the HTTP gateway on ADDR.
        #[arg(long = "gateway", value_name = "ADDR")]
        gateway_listen: Option<std::net::SocketAddr>,
    },
    /// Serve the HTTP gateway from a node on this home until SIGINT/SIGTERM.
    Gateway {
        /// Where the gateway listens.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// The node's libp2p address (repeatable).
        #[arg(
            long = "p2p-listen",
            value_name = "MULTIADDR",
            default_value = "/ip4/127.0.0.1/tcp/0"
        )]
        p2p_listen: Vec<huds_net::libp2p::Multiaddr>,
        /// A node to join through (repeatable).
        #[arg(long, value_name = "MULTIADDR")]
        bootstrap: Vec<huds_net::libp2p::Multiaddr>,
    },
    /// A whole network in one process: N storage nodes and S chain shards on loopback, and the API of node 0.
    Devnet {
        #[arg(long, default_value_t = 6)]
        nodes: usize,
        /// Chain shards, each with a committee of 4 validators.
        #[arg(long, default_value_t = 2)]
        shards: u16,
        /// Where the nodes' homes live (default: <home>/devnet).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Where node 0's HTTP API listens.
        #[arg(long = "api", value_name = "ADDR", default_value = "127.0.0.1:5001")]
        api_listen: std::net::SocketAddr,
        /// Where the HTTP gateway listens.
        #[arg(
            long = "gateway",
            value_name = "ADDR",
            default_value = "127.0.0.1:8080"
        )]
        gateway_listen: std::net::SocketAddr,
    },
    /// The home's IOS account: address, balance, transfers (balance and transfer need --api).
    Wallet {
        #[command(subcommand)]
        what: WalletWhat,
    },
    /// A volume: a named tree with numbered versions on the IOS chain (needs --api).
    Volume {
        #[command(subcommand)]
        what: VolumeWhat,
    },
    /// A storage deal: where it stands, or end it (needs --api).
    Deal {
        #[command(subcommand)]
        what: DealWhat,
    },
    /// The IOS chain as a running node sees it (needs --api).
    Chain {
        #[command(subcommand)]
        what: ChainWhat,
    },
    /// Measure throughput beside the machine's own limits.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// The configuration in effect.
    Config {
        #[command(subcommand)]
        what: ConfigWhat,
    },
    /// Print shell completions for bash, zsh, fish, elvish or powershell, e.g.
    /// `huds completions bash > /etc/bash_completion.d/huds`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `huds man > /usr/local/share/man/man1/huds.1`.
    Man,
}

#[derive(Subcommand)]
enum ConfigWhat {
    /// Every setting's value and where it came from: a flag, the environment, config.toml, or the default.
    Show,
}

#[derive(Subcommand)]
enum WalletWhat {
    /// The account's address and shard.
    Address,
    /// The balance of ADDRESS (default: the home's account).
    Balance { address: Option<String> },
    /// Send AMOUNT IOST to TO; returns once the transfer is final.
    Transfer { to: String, amount: String },
    /// Create the account key if the home has none.
    New,
    /// Register the account as a storage node staking AMOUNT IOST (it reaches the beacon's registry).
    Stake { amount: String },
    /// Move AMOUNT IOST of the storage-node stake (or, with --validator, the validator stake) to unbonding.
    Unstake {
        amount: String,
        #[arg(long)]
        validator: bool,
    },
}

#[derive(Subcommand)]
enum DealWhat {
    /// Every deal the home's account opened: state, escrow, pay and proofs (`--json` for all fields).
    List,
    /// Paid, escrow left, and each holder's pay and proven and missed periods (`--json` for all fields).
    /// The deal is named by its id, or by the capability or CID of the file it stores (a deal of the home's
    /// account).
    Status {
        #[arg(value_name = "ID|CAP|CID")]
        id: String,
    },
    /// End a deal the home's account owns: the periods not begun are refunded; once the deal is over, this
    /// settles it (the pay of unproven periods comes back).
    End {
        #[arg(value_name = "ID|CAP|CID")]
        id: String,
    },
}

#[derive(Subcommand)]
enum VolumeWhat {
    /// Make a volume owned by the home's account: its key in the home, and version 1, an empty directory.
    Create { name: String },
    /// Store PATH (a file or a directory) and make it the volume's next version; refused if another publish
    /// moved the volume on first.
    Publish { name: String, path: PathBuf },
    /// Every version of a volume: number, shard height, root CID.
    Log { name: String },
    /// Print what another home needs to read every version of the volume (keep it secret).
    Share { name: String },
    /// Record a volume another account shared (`huds volume share` prints TEXT), to mount it read-only.
    Join {
        #[arg(value_name = "TEXT")]
        share: String,
    },
}

#[derive(Subcommand)]
enum ChainWhat {
    /// Epoch, and each shard's height, state root and committee.
    Status,
    /// An SPV proof file, from the node (needs --api): `account ADDRESS` or `tx HASH`.
    Prove {
        #[command(subcommand)]
        what: ProveWhat,
        /// Write the proof here (default: standard output).
        #[arg(short = 'o', value_name = "FILE", global = true)]
        out: Option<PathBuf>,
    },
    /// Check a proof file with no node, against the committees in the trust file.
    Verify {
        file: PathBuf,
        /// The trust file (default: <home>/chain-trust).
        #[arg(long, value_name = "FILE")]
        trust: Option<PathBuf>,
    },
    /// Save the node's committees as the home's trust file (needs --api; trust on first use).
    Trust {
        #[arg(short = 'o', value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Where a transfer to another shard stands: locked on the sender's shard, committed on the
    /// recipient's (needs --api).
    Atomix {
        hash: String,
        /// If it is locked but not committed yet, have its shard's committee relay it again.
        #[arg(long)]
        relay: bool,
    },
}

#[derive(Subcommand)]
enum ProveWhat {
    /// The account's state at its shard's latest finalised block.
    Account { address: String },
    /// That a transaction (by its hash) is in a finalised block.
    Tx { hash: String },
    /// A storage deal's durability receipt (by its id): active, with its terms, at its shard's latest block.
    Deal { id: String },
    /// A volume version (`huds volume log` numbers them), and whether it is the volume's newest.
    Volume {
        /// The volume's owner (an `ios1...` address).
        owner: String,
        name: String,
        version: u64,
    },
}

#[derive(Subcommand)]
enum NodeAction {
    /// What the node holds (through --api: the running node, with its peers and repair figures).
    Status,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Primitives (sha2-256, ChaCha20-Poly1305, RS 4+2) alone and chained, against add and get.
    Core {
        /// Input size in MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: usize,
    },
    /// Transfers per second finalised by a 1-shard and a 4-shard chain (4 validators each), in process.
    Chain {
        /// Transfers per setup.
        #[arg(long, default_value_t = 40_000)]
        transfers: usize,
        /// Run the chains as `huds devnet` does: epochs on, spare validators, every validator following the
        /// beacon chain (default: fixed committees, no spares, only the beacon's members keep it).
        #[arg(long)]
        epochs: bool,
        /// Percent of the transfers whose recipient is on another shard (Atomix: final when the recipient's
        /// shard committed them); only the multi-shard setup has any.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
        cross_shard: u8,
    },
    /// What proofs of storage cost: proof size and check time beside a signature check, their share of
    /// block space for a network of `--shards` shards, and a shard block's check with and without them.
    Economy {
        /// Shards the network holds.
        #[arg(long, default_value_t = 10_000)]
        shards: usize,
        /// Storage nodes holding them (the devnet's six by default).
        #[arg(long, default_value_t = 6)]
        nodes: usize,
    },
    /// A read-only mount beside the local disk: a large file read sequentially, a directory of small files
    /// walked and read.
    Fuse {
        /// The large file's size in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: usize,
        /// Small files in the directory.
        #[arg(long, default_value_t = 10_000)]
        files: usize,
        /// Threads serving the mount's kernel requests.
        #[arg(long, value_name = "N", default_value_t = fuse_mount::THREADS_DEFAULT)]
        threads: usize,
    },
    /// A network on loopback: add and get through it, beside a plain HTTP download of the same file.
    Net {
        /// Input size in MiB.
        #[arg(long, default_value_t = 256)]
        size_mib: usize,
        #[arg(long, default_value_t = 6)]
        nodes: usize,
    },
    /// The HTTP gateway against nginx serving the same bytes from disk (with wrk), and time to first byte.
    Gateway {
        /// Storage nodes in the in-process network.
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// The small file's size in bytes.
        #[arg(long, default_value_t = 4096)]
        small_bytes: usize,
        /// The large file's size in MiB.
        #[arg(long, default_value_t = 256)]
        large_mib: usize,
        /// Seconds of each wrk run.
        #[arg(long, default_value_t = 10)]
        duration_s: u64,
        /// wrk's connections for the small file (the large file uses at most 4).
        #[arg(long, default_value_t = 32)]
        connections: usize,
    },
}

/// `huds --help` lists the commands by task rather than alphabetically; every command is in one group (a unit
/// test checks).
const COMMAND_GROUPS: &[(&str, &[&str])] = &[
    (
        "Store and read files",
        &["init", "add", "get", "cat", "ls", "rm", "pins", "mount"],
    ),
    ("Run a network", &["devnet", "node", "gateway"]),
    (
        "The IOS chain and your wallet",
        &["wallet", "chain", "deal", "volume"],
    ),
    ("Operate and measure", &["config", "bench"]),
    ("Set up your shell", &["completions", "man"]),
];

const EXAMPLES: &str = "\
Examples:
  huds init                                   make a home (keys, config, store) in ~/.huds
  huds add photo.jpg                          store a file sealed; prints its capability (keep it)
  huds get huds:... -o photo.jpg              read it back, every byte checked
  huds add --public site/                     store a folder anyone can read by its CID
  huds devnet                                 a whole network and chain on this machine
  huds --api http://127.0.0.1:5001 add f.txt  store through a running node's API
  huds --api http://127.0.0.1:5001 chain status
  huds --api http://127.0.0.1:5001 wallet transfer ADDRESS 1.5
  huds config show                            the settings in effect, and where each came from
  huds completions bash > /etc/bash_completion.d/huds

Each command has its own help: huds help add, huds add --help. The manual: huds man | man -l -";

/// The command definitions with the grouped command list and the examples: what `--help`, the completions
/// and the manual page are all made from.
fn cli_command() -> clap::Command {
    let cmd = Cli::command();
    let mut groups = String::new();
    for (title, names) in COMMAND_GROUPS {
        groups.push_str(&format!("{title}:\n"));
        for name in *names {
            let about = cmd
                .find_subcommand(name)
                .and_then(|c| c.get_about())
                .map(|a| a.to_string())
                .unwrap_or_default();
            // The first sentence: the list stays one line per command.
            let about = [" (", ", e.g.", ": "]
                .iter()
                .fold(about.as_str(), |a, cut| a.split(cut).next().unwrap_or(a))
                .trim_end_matches('.');
            groups.push_str(&format!("  {name:<12} {about}\n"));
        }
        groups.push('\n');
    }
    cmd.help_template(format!(
        "{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{groups}Options:\n{{options}}{{after-help}}"
    ))
    .after_help(EXAMPLES)
}

fn main() {
    let matches = cli_command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let json = cli.json;
    let result = settings::Given::from_matches(&matches).and_then(|given| {
        // Diagnostics go to standard error, at the level and in the format in effect. A config.toml that does
        // not parse leaves logging at its defaults; the command then says what is wrong with it.
        let config = settings::read_config(&given.home.value).ok().flatten();
        let (level, format) = match settings::Effective::resolve(&given, config.as_ref()) {
            Ok(e) => (e.log_level.value, e.log_format.value),
            Err(_) => (
                settings::LOG_LEVEL_DEFAULT.to_string(),
                settings::LogFormat::Text,
            ),
        };
        settings::start_logging(&level, format);
        run(cli, given)
    });
    if let Err(e) = result {
        if json {
            println!("{}", json!({ "error": format!("{e:#}") }));
        } else {
            eprintln!("error: {e:#}");
        }
        std::process::exit(1);
    }
}

fn run(cli: Cli, given: settings::Given) -> Result<()> {
    // Completions come from the command definitions alone: no home, no node.
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut cli_command(), "huds", &mut std::io::stdout());
            return Ok(());
        }
        Command::Man => {
            clap_mangen::Man::new(cli_command())
                .render(&mut std::io::stdout())
                .context("writing the manual page")?;
            return Ok(());
        }
        _ => {}
    }
    let dir = home::dir_from(cli.data)?;
    let api = cli.api.as_deref();
    match &cli.command {
        Command::Config {
            what: ConfigWhat::Show,
        } => {
            let config = settings::read_config(&dir)?;
            let effective = settings::Effective::resolve(&given, config.as_ref())?;
            settings::show(&effective, cli.json);
            return Ok(());
        }
        Command::Mount {
            target,
            dir: mountpoint,
            read_only,
            cache_mb,
            threads,
            publish_every,
            follow_every,
            allow_other,
        } => {
            let args = mount::MountArgs {
                target,
                dir: mountpoint,
                cache_bytes: cache_mb.saturating_mul(1 << 20),
                threads: *threads,
                read_only: *read_only,
                publish_every: std::time::Duration::from_secs(*publish_every),
                follow_every: std::time::Duration::from_secs(*follow_every),
                allow_other: *allow_other,
            };
            return mount::mount(&dir, api, args, cli.json);
        }
        Command::Pins { caps } => {
            let v = match api {
                Some(api) => api_client::pins(api, api_token(&dir).as_deref(), *caps)?,
                None => {
                    let store = home::Home::open(&dir)?.store_read_only()?;
                    huds_net::api::pins_json(&huds::read::pins(&store)?, *caps)
                }
            };
            print_pins(v, *caps, cli.json);
            return Ok(());
        }
        Command::Rm { target } => {
            return rm::rm(&dir, api, api_token(&dir).as_deref(), target, cli.json);
        }
        Command::Volume { what } => {
            let token = api_token(&dir);
            return match what {
                VolumeWhat::Create { name } => {
                    volume::create(&dir, api, token.as_deref(), name, cli.json)
                }
                VolumeWhat::Publish { name, path } => {
                    volume::publish(&dir, api, token.as_deref(), name, path, cli.json)
                }
                VolumeWhat::Log { name } => volume::log(&dir, api, name, cli.json),
                VolumeWhat::Share { name } => volume::share(&dir, name, cli.json),
                VolumeWhat::Join { share } => volume::join(&dir, share, cli.json),
            };
        }
        Command::Deal { what } => {
            return match what {
                DealWhat::List => deal::list(&dir, api, cli.json),
                DealWhat::Status { id } => deal::show(&dir, api, id, cli.json),
                DealWhat::End { id } => wallet::end_deal(&dir, api, id, cli.json),
            };
        }
        Command::Wallet { what } => {
            return match what {
                WalletWhat::Address => wallet::address(&dir, api, cli.json),
                WalletWhat::Balance { address } => {
                    wallet::balance(&dir, api, address.as_deref(), cli.json)
                }
                WalletWhat::Transfer { to, amount } => {
                    wallet::transfer(&dir, api, to, amount, cli.json)
                }
                WalletWhat::New => wallet::new(&dir, cli.json),
                WalletWhat::Stake { amount } => wallet::stake(&dir, api, amount, cli.json),
                WalletWhat::Unstake { amount, validator } => {
                    wallet::unstake(&dir, api, amount, *validator, cli.json)
                }
            };
        }
        Command::Chain {
            what: ChainWhat::Status,
        } => return wallet::status(api, cli.json),
        Command::Chain {
            what: ChainWhat::Prove { what, out },
        } => {
            let what = match what {
                ProveWhat::Account { address } => wallet::ProveWhat::Account(address),
                ProveWhat::Tx { hash } => wallet::ProveWhat::Tx(hash),
                ProveWhat::Deal { id } => wallet::ProveWhat::Deal(id),
                ProveWhat::Volume {
                    owner,
                    name,
                    version,
                } => wallet::ProveWhat::Volume {
                    owner,
                    name,
                    version: *version,
                },
            };
            return wallet::prove(api, what, out.as_deref());
        }
        Command::Chain {
            what: ChainWhat::Verify { file, trust },
        } => return wallet::verify(&dir, file, trust.as_deref(), cli.json),
        Command::Chain {
            what: ChainWhat::Trust { out },
        } => return wallet::trust(&dir, api, out.as_deref()),
        Command::Chain {
            what: ChainWhat::Atomix { hash, relay },
        } => return wallet::atomix(api, hash, *relay, cli.json),
        _ => {}
    }
    if let Some(api) = &cli.api {
        let token = api_token(&dir);
        return run_remote(&dir, api, token.as_deref(), cli.command, cli.json);
    }
    match cli.command {
        Command::Init => {
            home::Home::init(&dir)?;
            if cli.json {
                println!("{}", json!({ "home": dir }));
            } else {
                println!("initialised huds home at {}", dir.display());
            }
            Ok(())
        }
        Command::Add {
            public,
            k,
            m,
            no_deal,
            periods,
            price,
            path,
        } => {
            if no_deal || periods.is_some() || price.is_some() {
                bail!(
                    "--no-deal, --periods and --price are for adds through a node on a chain: pass --api URL"
                );
            }
            cmd_add(&dir, public, k, m, &path, cli.json)
        }
        Command::Get { target, out } => cmd_get(&dir, &target, out, cli.json),
        Command::Cat { target } => cmd_cat(&dir, &target),
        Command::Ls { target } => cmd_ls(&dir, &target, cli.json),
        Command::Bench {
            what: BenchWhat::Core { size_mib },
        } => bench::core(size_mib, cli.json),
        Command::Bench {
            what:
                BenchWhat::Chain {
                    transfers,
                    epochs,
                    cross_shard,
                },
        } => bench_chain::chain(transfers, epochs, cross_shard, cli.json),
        Command::Bench {
            what: BenchWhat::Net { size_mib, nodes },
        } => bench_net::net(size_mib, nodes.max(1), cli.json),
        Command::Bench {
            what:
                BenchWhat::Fuse {
                    size_mib,
                    files,
                    threads,
                },
        } => bench_fuse::fuse(size_mib.max(1), files.max(1), threads.max(1), cli.json),
        Command::Bench {
            what: BenchWhat::Economy { shards, nodes },
        } => bench_economy::economy(shards.max(1), nodes.max(1), cli.json),
        Command::Bench {
            what:
                BenchWhat::Gateway {
                    nodes,
                    small_bytes,
                    large_mib,
                    duration_s,
                    connections,
                },
        } => bench::gateway(
            bench::GatewayBench {
                nodes: nodes.max(1),
                small_bytes,
                large_mib,
                duration_s,
                connections: connections.max(1),
            },
            cli.json,
        ),
        Command::Node {
            action: Some(NodeAction::Status),
            ..
        } => node_status_local(&dir, cli.json),
        Command::Node {
            action: None,
            listen,
            bootstrap,
            api_listen,
            storage,
            gateway_listen,
        } => {
            let home = home::Home::open(&dir)?;
            let effective = settings::Effective::resolve(&given, Some(&home.config))?;
            network::node(
                home,
                network::NodeArgs {
                    listen,
                    bootstrap,
                    api_listen,
                    gateway_listen,
                    storage_flag: storage.is_some(),
                    storage: storage.or(effective.storage_max.value),
                    given,
                },
            )
        }
        Command::Gateway {
            listen,
            p2p_listen,
            bootstrap,
        } => network::gateway(home::Home::open(&dir)?, p2p_listen, bootstrap, listen),
        Command::Devnet {
            nodes,
            shards,
            dir: devnet_dir,
            api_listen,
            gateway_listen,
        } => network::devnet(
            &devnet_dir.unwrap_or_else(|| dir.join("devnet")),
            nodes,
            shards,
            api_listen,
            gateway_listen,
        ),
        Command::Wallet { .. }
        | Command::Rm { .. }
        | Command::Mount { .. }
        | Command::Pins { .. }
        | Command::Deal { .. }
        | Command::Volume { .. }
        | Command::Chain { .. }
        | Command::Config { .. }
        | Command::Completions { .. }
        | Command::Man => {
            unreachable!(
                "wallet, rm, pins, mount, deal, volume, chain, config, completions and man return above"
            )
        }
    }
}

/// The token `--api` uploads send: $HUDS_API_TOKEN, else the home's config.toml (none if neither has one).
pub(crate) fn api_token(dir: &Path) -> Option<String> {
    match std::env::var("HUDS_API_TOKEN") {
        Ok(t) if !t.is_empty() => Some(t),
        _ => home::Home::open(dir).ok()?.config.api.token,
    }
}

/// The commands that go to a running node when `--api` is given.
fn run_remote(
    dir: &Path,
    api: &str,
    token: Option<&str>,
    command: Command,
    json: bool,
) -> Result<()> {
    match command {
        Command::Add {
            public,
            k,
            m,
            no_deal,
            periods,
            price,
            path,
        } => {
            let ask = if no_deal {
                None
            } else {
                deal::ask(dir, api, periods, price.as_deref())?
            };
            let stdin = path == Path::new("-");
            let bar = progress_bar(if stdin { 0 } else { size_of_path(&path) }, json);
            let params = api_client::AddParams {
                public,
                k,
                m,
                deal: ask,
            };
            let v = api_client::add(api, token, &path, params, bar.clone());
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let mut v = v.with_context(|| format!("adding {}", path.display()))?;
            if !json {
                println!(
                    "added {} ({} bytes)",
                    v["cid"].as_str().unwrap_or(""),
                    v["size"]
                );
                println!("capability {}", v["cap"].as_str().unwrap_or(""));
            }
            if let Some(ask) = &ask {
                // The file is stored and its capability printed whatever becomes of the deal.
                let opened = deal::open_added(dir, api, ask, public, &v);
                if json {
                    v["deal"] = opened
                        .as_ref()
                        .map_or(serde_json::Value::Null, |d| d.clone());
                    println!("{v}");
                }
                let d = opened.with_context(|| {
                    format!(
                        "{} is stored (capability {}), but its storage deal was not opened",
                        path.display(),
                        v["cap"].as_str().unwrap_or("")
                    )
                })?;
                if !json {
                    println!(
                        "deal {} active: {} holders for {} periods, escrow {}; receipt {} (check it with `huds chain verify`)",
                        d["id"].as_str().unwrap_or("?"),
                        d["holders"],
                        d["periods"],
                        wallet::for_people(&d["escrow"]),
                        d["receipt"].as_str().unwrap_or("?")
                    );
                }
            } else if json {
                println!("{v}");
            }
            Ok(())
        }
        Command::Cat { target } => {
            let mut out = std::io::stdout().lock();
            api_client::cat(api, &target, &mut out)?;
            Ok(out.flush()?)
        }
        Command::Get { target, out } => {
            let got = api_client::get_to(api, &target, out, |total| match total {
                Some(t) => progress_bar(t, json),
                None => progress_spinner(json),
            })?;
            if json {
                println!(
                    "{}",
                    json!({ "cid": got.cid, "path": got.path, "kind": got.kind })
                );
            } else {
                println!("saved {} to {}", got.cid, got.path.display());
            }
            Ok(())
        }
        Command::Ls { target } => {
            let v = api_client::ls(api, &target)?;
            if json {
                println!("{v}");
            } else {
                for e in v["entries"].as_array().into_iter().flatten() {
                    let cid = e["cid"].as_str().unwrap_or("");
                    println!(
                        "{cid:<62} {:>14} {}",
                        e["size"],
                        e["name"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        Command::Node {
            action: Some(NodeAction::Status),
            ..
        } => {
            let mut v = api_client::json(api, "/api/v0/node/status")?;
            deal::account_node(api, &mut v);
            print_node_status(&v, json);
            Ok(())
        }
        _ => bail!("this command runs on a node home, not through --api: drop --api"),
    }
}

/// `huds pins`: one line per pin (CID, size, date added, public or private, name; the capability last when
/// asked for), or the JSON as it is.
fn print_pins(mut v: serde_json::Value, caps: bool, json: bool) {
    // Whatever the node answered, a capability is shown only when asked for.
    if !caps {
        for p in v["pins"].as_array_mut().into_iter().flatten() {
            if let Some(o) = p.as_object_mut() {
                o.remove("cap");
            }
        }
    }
    if json {
        println!("{v}");
        return;
    }
    let pins = v["pins"].as_array().map(Vec::as_slice).unwrap_or_default();
    if pins.is_empty() {
        println!("nothing pinned");
        return;
    }
    for p in pins {
        let mut line = format!(
            "{:<62} {:>14} {} {:<7} {}",
            p["cid"].as_str().unwrap_or("(unknown)"),
            p["size"].as_u64().unwrap_or(0),
            p["added"].as_str().unwrap_or(""),
            if p["public"].as_bool() == Some(true) {
                "public"
            } else {
                "private"
            },
            p["name"].as_str().unwrap_or("")
        );
        if let Some(cap) = p["cap"].as_str() {
            line.push(' ');
            line.push_str(cap);
        }
        if let Some(e) = p["error"].as_str() {
            line.push_str(&format!(" (cannot be read: {e})"));
        }
        println!("{line}");
    }
}

/// A progress bar on standard error when it is a terminal and the output is not `--json`.
fn progress_bar(total: u64, json: bool) -> Option<ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    Some(bar)
}

/// Bytes so far, for a transfer whose total is not known up front (a part of a tree through `--api`).
fn progress_spinner(json: bool) -> Option<ProgressBar> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec} {msg}")
            .expect("the template is valid"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(bar)
}

fn size_of_path(path: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

fn cmd_add(
    dir: &Path,
    public: bool,
    k: Option<u8>,
    m: Option<u8>,
    path: &Path,
    json: bool,
) -> Result<()> {
    let home = home::Home::open(dir)?;
    let opts = AddOptions {
        k: k.unwrap_or(home.config.storage.k),
        m: m.unwrap_or(home.config.storage.m),
        public,
        segment_bytes_max: home.config.storage.segment_bytes_max,
    };
    let store = home.store()?;
    let stdin = path == Path::new("-");
    let bar = progress_bar(if stdin { 0 } else { size_of_path(path) }, json);
    let mut progress = |n: u64| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    };
    let added = if stdin {
        let mut input = std::io::stdin().lock();
        huds::add(
            &store,
            Source::Stream {
                name: "stdin",
                reader: &mut input,
            },
            &opts,
            &mut progress,
        )
    } else {
        huds::add(&store, Source::Path(path), &opts, &mut progress)
    }
    .with_context(|| format!("adding {}", path.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let cap = added.capability.to_text();
    if json {
        println!(
            "{}",
            json!({ "cid": added.root.to_string(), "cap": cap, "size": added.size })
        );
    } else {
        println!(
            "added {} ({} bytes, {} segments, k={} m={})",
            added.root, added.size, added.segments, opts.k, opts.m
        );
        if public {
            println!("public: read it with `huds cat {}`", added.root);
        }
        println!("capability {cap}");
    }
    Ok(())
}

/// Opens the DAG a `CAP|CID[/path]` target names; returns the reader and the CID the path leads to.
fn open_target(dir: &Path, target: &str) -> Result<(Reader, cid::Cid)> {
    let (head, path) = target.split_once('/').unwrap_or((target, ""));
    let home = home::Home::open(dir)?;
    let store = Arc::new(home.store()?);
    let cap = huds::resolve_capability(&store, head)?;
    let reader = Reader::open_local(store, &cap)?;
    let root = reader.root();
    let cid = reader.resolve(&root, path)?;
    Ok((reader, cid))
}

/// Counts bytes through to a progress bar.
struct Counting<W> {
    inner: W,
    bar: Option<ProgressBar>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn cmd_get(dir: &Path, target: &str, out: Option<PathBuf>, json: bool) -> Result<()> {
    let (reader, cid) = open_target(dir, target)?;
    let out = out.unwrap_or_else(|| PathBuf::from(cid.to_string()));
    let (kind, size) = reader.stat(&cid)?;
    if kind == EntryKind::File {
        // A single file streams through a progress bar into OUT.huds-partial, renamed when whole.
        let mut partial = out.as_os_str().to_owned();
        partial.push(".huds-partial");
        let partial = PathBuf::from(partial);
        let file = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut w = Counting {
            inner: std::io::BufWriter::with_capacity(1 << 20, file),
            bar: progress_bar(size, json),
        };
        let result = reader
            .cat(&cid, &mut w)
            .map_err(anyhow::Error::from)
            .and_then(|_| Ok(w.flush()?));
        if let Some(b) = &w.bar {
            b.finish_and_clear();
        }
        if let Err(e) = result {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        std::fs::rename(&partial, &out)
            .with_context(|| format!("renaming into {}", out.display()))?;
    } else {
        reader.export(&cid, &out)?;
    }
    if json {
        println!(
            "{}",
            json!({ "cid": cid.to_string(), "path": out, "kind": kind.as_str() })
        );
    } else {
        println!("saved {cid} to {}", out.display());
    }
    Ok(())
}

fn cmd_cat(dir: &Path, target: &str) -> Result<()> {
    let (reader, cid) = open_target(dir, target)?;
    let stdout = std::io::stdout().lock();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, stdout);
    match reader.cat(&cid, &mut w) {
        // A closed pipe (`huds cat X | head`) is the reader's choice, not an error.
        Err(huds::ReadError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            return Ok(());
        }
        r => r?,
    };
    match w.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn cmd_ls(dir: &Path, target: &str, json: bool) -> Result<()> {
    let (reader, cid) = open_target(dir, target)?;
    let entries = match reader.list(&cid) {
        Err(huds::ReadError::NotDirectory(_)) => {
            bail!("{target} is not a directory: use `huds cat` or `huds get`")
        }
        r => r?,
    };
    if json {
        let list: Vec<_> = entries
            .iter()
            .map(|e| json!({ "name": e.name, "cid": e.cid.to_string(), "type": e.kind.as_str(), "size": e.size }))
            .collect();
        println!("{}", json!({ "cid": cid.to_string(), "entries": list }));
    } else {
        for e in entries {
            let name = if e.kind == EntryKind::Directory {
                format!("{}/", e.name)
            } else {
                e.name
            };
            println!("{:<62} {:>14} {}", e.cid, e.size, name);
        }
    }
    Ok(())
}

/// A byte count: digits with an optional binary suffix K, M, G or T (`500G` = 500 GiB).
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown size suffix {c:?}: use K, M, G or T")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count (e.g. 500G, 64M, 1048576)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `huds node status` without `--api`: what the home's store holds (the node must not be running on it).
fn node_status_local(dir: &Path, json: bool) -> Result<()> {
    let home = home::Home::open(dir)?;
    let peer = huds_net::keypair_from_seed(home.node_seed()?)
        .public()
        .to_peer_id();
    let store = home
        .store()
        .context("a node is probably running on this home: ask it with --api")?;
    let (shards, bytes) = store.shard_stats()?;
    let v = json!({ "peer": peer.to_string(), "stored_bytes": bytes, "shards": shards, "pins": store.pins()?.len() });
    print_node_status(&v, json);
    Ok(())
}

fn print_node_status(v: &serde_json::Value, json: bool) {
    if json {
        println!("{v}");
        return;
    }
    println!("peer {}", v["peer"].as_str().unwrap_or(""));
    println!("shards {} ({} bytes)", v["shards"], v["stored_bytes"]);
    if let Some(max) = v["storage_bytes_max"].as_u64() {
        println!("storage limit {max} bytes");
    }
    if let Some(p) = v["peers"].as_u64() {
        println!("peers {p}");
    }
    if let Some(deals) = v["deals"].as_array() {
        println!(
            "deals {} (paid to {}){}",
            deals.len(),
            v["account"].as_str().unwrap_or("?"),
            match (v["earned"].as_str(), v["challenges_answered"].as_u64()) {
                (Some(_), Some(answered)) => format!(
                    ": {answered} challenges answered, {} missed, {} earned",
                    v["challenges_missed"],
                    wallet::for_people(&v["earned"])
                ),
                _ => String::new(),
            }
        );
    }
    let r = &v["repair"];
    if r.is_object() {
        println!(
            "repair: {} sweeps, {} shards rebuilt; last sweep {} segments, {} healthy, {} waiting, {} lost",
            r["sweeps"],
            r["shards_rebuilt"],
            r["last_sweep"]["segments"],
            r["last_sweep"]["healthy"],
            r["last_sweep"]["waiting"],
            r["last_sweep"]["lost"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{COMMAND_GROUPS, cli_command, parse_bytes};

    #[test]
    fn help_lists_every_command_once_by_task_with_examples() {
        let mut cmd = cli_command();
        let mut listed: Vec<&str> = COMMAND_GROUPS
            .iter()
            .flat_map(|(_, names)| names.iter().copied())
            .collect();
        listed.sort_unstable();
        let mut defined: Vec<String> = cmd
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .filter(|n| n != "help")
            .collect();
        defined.sort_unstable();
        assert_eq!(listed, defined, "each command in exactly one group");
        let help = cmd.render_help().to_string();
        for (title, names) in COMMAND_GROUPS {
            assert!(help.contains(&format!("{title}:")), "{help}");
            for name in *names {
                assert!(help.contains(&format!("  {name} ")), "{name} in {help}");
            }
        }
        assert!(help.contains("Examples:") && help.contains("huds add photo.jpg"));
        assert!(
            help.contains("--log-format"),
            "the options are listed: {help}"
        );
    }

    #[test]
    fn byte_counts_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("500g"), Ok(500 << 30));
        assert_eq!(parse_bytes("2T"), Ok(2 << 40));
        assert!(parse_bytes("12Q").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }
}
