//! The IOS chain running for real: a devnet chain in this process (2 shards x 4 validators, each with its own
//! libp2p swarm on 127.0.0.1 and its own RocksDB), its HTTP API on 127.0.0.1, and the real `huds` binary's
//! `wallet` and `chain status` commands against it.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chain::crypto::SecretKey;
use chain::{Address, Amount, Transaction, TxKind, shard_of};
use chain_node::{ChainDevnet, DevnetOptions, devnet, validator};
use serde_json::Value;

/// Each test runs a whole chain (15 validators, or the `huds devnet` process); on 2 cores three at once starve
/// each other past their timeouts, so they take turns.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const SHARDS: u16 = 2;

/// A devnet chain and its API, on a runtime the test thread does not block.
struct Net {
    rt: tokio::runtime::Runtime,
    chain: Option<ChainDevnet>,
    api: String,
    _dir: tempfile::TempDir,
}

impl Net {
    fn start(wallets: Vec<Address>) -> Net {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (chain, api) = rt.block_on(async {
            let chain = ChainDevnet::start(dir.path(), DevnetOptions::new(SHARDS, wallets))
                .await
                .expect("devnet chain starts");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(chain_node::api::serve(listener, chain.api()));
            (chain, format!("http://{addr}"))
        });
        Net {
            rt,
            chain: Some(chain),
            api,
            _dir: dir,
        }
    }

    fn chain(&mut self) -> &mut ChainDevnet {
        self.chain.as_mut().expect("the chain runs until drop")
    }

    fn status(&self) -> Value {
        self.get("/api/v0/chain/status")
    }

    fn heights(&self) -> Vec<u64> {
        self.status()["shards"]
            .as_array()
            .expect("shards")
            .iter()
            .map(|s| s["height"].as_u64().expect("height"))
            .collect()
    }

    fn get(&self, path: &str) -> Value {
        let mut resp = ureq::get(format!("{}{path}", self.api))
            .call()
            .expect("GET");
        serde_json::from_reader(resp.body_mut().as_reader()).expect("JSON")
    }

    /// POSTs raw transaction bytes; returns the status code and the JSON answer.
    fn post_tx(&self, bytes: &[u8]) -> (u16, Value) {
        self.post("/api/v0/chain/tx", bytes)
    }

    fn post(&self, path: &str, bytes: &[u8]) -> (u16, Value) {
        let mut resp = ureq::post(format!("{}{path}", self.api))
            .config()
            .http_status_as_error(false)
            .build()
            .send(bytes)
            .expect("POST");
        let code = resp.status().as_u16();
        (
            code,
            serde_json::from_reader(resp.body_mut().as_reader()).expect("JSON"),
        )
    }

    /// `huds --api URL --data HOME --json ARGS...`, which must succeed.
    fn huds(&self, home: &Path, args: &[&str]) -> Value {
        let mut full = vec!["--api", &self.api];
        full.extend_from_slice(args);
        common::run_json(home, &full)
    }

    fn wait_until(&self, what: &str, mut done: impl FnMut(&Net) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting until {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(chain) = self.chain.take() {
            self.rt.block_on(chain.shutdown());
        }
    }
}

/// Wallet homes (just `wallet.key`) whose accounts all live on one shard.
fn wallets_on_one_shard(root: &Path, count: usize) -> (Vec<PathBuf>, Vec<SecretKey>, u16) {
    let key = |i: u8| SecretKey::from_bytes([i; 32]);
    let shard = shard_of(&Address::of(&key(1).public()), SHARDS);
    let seeds: Vec<u8> = (1..=u8::MAX)
        .filter(|i| shard_of(&Address::of(&key(*i).public()), SHARDS) == shard)
        .take(count)
        .collect();
    let homes = seeds
        .iter()
        .map(|i| {
            let home = root.join(format!("wallet-{i}"));
            std::fs::create_dir_all(&home).expect("mkdir");
            std::fs::write(home.join("wallet.key"), [*i; 32]).expect("write key");
            home
        })
        .collect();
    (homes, seeds.into_iter().map(key).collect(), shard.0)
}

fn iost(text: &str) -> Amount {
    text.parse().expect("an amount")
}

fn balance(net: &Net, home: &Path) -> Amount {
    let v = net.huds(home, &["wallet", "balance"]);
    iost(v["balance"].as_str().expect("balance"))
}

#[test]
fn wallets_transfer_with_exact_balances_and_a_killed_validator_catches_up() {
    let _serial = serial();
    let homes_dir = tempfile::tempdir().expect("tempdir");
    let (homes, keys, shard) = wallets_on_one_shard(homes_dir.path(), 2);
    let addresses: Vec<Address> = keys.iter().map(|k| Address::of(&k.public())).collect();
    let mut net = Net::start(addresses.clone());

    // Heights advance on every shard.
    let first = net.heights();
    assert_eq!(first.len(), usize::from(SHARDS));
    net.wait_until("every shard finalised 3 more blocks", |n| {
        n.heights().iter().zip(&first).all(|(h, f)| *h >= f + 3)
    });
    let status = net.huds(&homes[0], &["chain", "status"]);
    assert_eq!(status["epoch"], 0);
    for s in status["shards"].as_array().expect("shards") {
        assert_eq!(s["committee"].as_array().expect("committee").len(), 4);
        assert_eq!(s["state_root"].as_str().expect("root").len(), 64);
    }

    let a = net.huds(&homes[0], &["wallet", "address"]);
    assert_eq!(a["address"], addresses[0].to_string());
    assert_eq!(a["shard"], shard);
    let funded = Amount::from_iost(devnet::WALLET_IOST).expect("small");
    assert_eq!(balance(&net, &homes[0]), funded);

    let fee = iost(net.status()["fee_min"].as_str().expect("fee"));
    let to_b = addresses[1].to_string();
    let to_a = addresses[0].to_string();
    let t = net.huds(&homes[0], &["wallet", "transfer", &to_b, "100"]);
    assert_eq!(t["shard"], shard);
    assert!(t["height"].as_u64().expect("final height") >= 1);
    net.huds(&homes[1], &["wallet", "transfer", &to_a, "30.5"]);
    net.huds(&homes[0], &["wallet", "transfer", &to_b, "0.00000001"]);
    let a_expected = funded.0 - iost("100").0 - 1 + iost("30.5").0 - 2 * fee.0;
    let b_expected = funded.0 + iost("100").0 + 1 - iost("30.5").0 - fee.0;
    assert_eq!(balance(&net, &homes[0]), Amount(a_expected));
    assert_eq!(balance(&net, &homes[1]), Amount(b_expected));

    // Atomix: a transfer to an account of the other shard is locked on this shard, relayed by its committee
    // and committed on the other; the recipient pays some back the same way. Balances stay exact.
    let away_seed = (1..=u8::MAX)
        .find(|i| {
            shard_of(
                &Address::of(&SecretKey::from_bytes([*i; 32]).public()),
                SHARDS,
            ) != shard
        })
        .expect("some key lives on the other shard");
    let away_home = homes_dir.path().join("wallet-away");
    std::fs::create_dir_all(&away_home).expect("mkdir");
    std::fs::write(away_home.join("wallet.key"), [away_seed; 32]).expect("write key");
    let away = Address::of(&SecretKey::from_bytes([away_seed; 32]).public());
    let away_shard = shard_of(&away, SHARDS).0;
    let t = net.huds(&homes[0], &["wallet", "transfer", &away.to_string(), "7"]);
    assert_eq!(t["shard"], shard, "{t}");
    assert_eq!(t["committed"]["shard"], away_shard, "{t}");
    assert!(t["committed"]["height"].as_u64() >= Some(1), "{t}");
    assert_eq!(balance(&net, &away_home), iost("7"));
    let where_ = net.huds(
        &homes[0],
        &["chain", "atomix", t["tx"].as_str().expect("tx hash")],
    );
    assert_eq!(where_["locked"]["shard"], shard, "{where_}");
    assert_eq!(where_["committed"]["shard"], away_shard, "{where_}");
    // Anyone may have the lock relayed again; the recipient's shard ignores what it committed already.
    let tx_hash = t["tx"].as_str().expect("tx hash");
    let (code, relayed) = net.post(&format!("/api/v0/chain/atomix/relay?hash={tx_hash}"), &[]);
    assert_eq!(
        (code, &relayed["relayed"]["shard"]),
        (200, &Value::from(shard)),
        "{relayed}"
    );
    let (code, _) = net.post(
        &format!("/api/v0/chain/atomix/relay?hash={}", "ab".repeat(32)),
        &[],
    );
    assert_eq!(code, 404);
    let (code, _) = net.post("/api/v0/chain/atomix/relay?hash=nothex", &[]);
    assert_eq!(code, 400);
    let back = net.huds(&away_home, &["wallet", "transfer", &to_a, "2"]);
    assert_eq!(back["shard"], away_shard, "{back}");
    assert_eq!(back["committed"]["shard"], shard, "{back}");
    let a_expected = a_expected - iost("7").0 - fee.0 + iost("2").0;
    assert_eq!(balance(&net, &homes[0]), Amount(a_expected));
    assert_eq!(balance(&net, &away_home), Amount(iost("5").0 - fee.0));

    // Validators of the other shard follow this shard's certified head over the beacon topic.
    let other = (0..net.chain().validator_count())
        .find(|i| {
            let s = net.chain().shard_of_validator(*i);
            s != shard && s < SHARDS
        })
        .and_then(|i| net.chain().handle(i))
        .expect("a validator of the other shard");
    let mine = (0..net.chain().validator_count())
        .find(|i| net.chain().shard_of_validator(*i) == shard)
        .and_then(|i| net.chain().handle(i))
        .expect("a validator of the wallets' shard");
    net.wait_until("the other shard saw a certified head of this one", |_| {
        other.heads()[usize::from(shard)]
            .as_ref()
            .is_some_and(|h| h.height >= validator::HEAD_EVERY_BLOCKS)
    });
    // (Heads go out every HEAD_EVERY_BLOCKS heights, and the tip's head again whenever the beacon's link of
    // the shard lags while the lane is idle, so the one seen may be at any height the shard reached.)
    let head = other.heads()[usize::from(shard)].clone().expect("a head");
    assert!(mine.status().lane.height >= head.height);

    // The beacon chain, with its own committee, finalises blocks that link every shard's certified heads,
    // and records each linked certificate's voters and proposers.
    net.wait_until("the beacon chain linked every shard", |n| {
        let status = n.huds(&homes[0], &["chain", "status"]);
        status["beacon"]["links"].as_array().is_some_and(|l| {
            l.len() == usize::from(SHARDS)
                && l.iter()
                    .all(|l| l["height"].as_u64() >= Some(validator::HEAD_EVERY_BLOCKS))
        })
    });
    let status = net.huds(&homes[0], &["chain", "status"]);
    let beacon = &status["beacon"];
    assert!(beacon["height"].as_u64().expect("beacon height") >= 1);
    assert_eq!(beacon["committee"].as_array().expect("committee").len(), 4);
    let linked = beacon["links"][usize::from(shard)]["height"]
        .as_u64()
        .expect("linked height");
    assert_eq!(linked % validator::HEAD_EVERY_BLOCKS, 0);
    assert!(
        mine.status().lane.height >= linked,
        "the beacon links only certified blocks"
    );
    let validators = beacon["validators"].as_array().expect("validators");
    assert_eq!(validators.len(), net.chain().validator_count());
    for v in validators {
        let seat = &v["seat"];
        let certificates = v["certificates"].as_u64().expect("certificates");
        if *seat == "beacon" || seat.is_null() {
            assert_eq!(
                certificates, 0,
                "the beacon's own votes are not linked, spares have no seat"
            );
        } else {
            assert!(certificates >= 1, "{v}");
            assert!(v["votes_in_certificates"].as_u64().expect("votes") <= certificates);
            assert!(v["reputation_now_ppm"].as_u64().expect("reputation") <= 1_000_000);
        }
    }
    let linked_certificates: u64 = validators
        .iter()
        .filter(|v| v["seat"].is_u64())
        .map(|v| v["blocks_proposed"].as_u64().expect("proposed"))
        .sum();
    assert!(
        linked_certificates >= u64::from(SHARDS),
        "every linked block had a proposer"
    );

    // Kill one validator of the wallets' shard (3 of 4 equal stakes still make a quorum), keep transferring,
    // restart it on its database: it catches up to the others' height and agrees on the state.
    let victim = (0..net.chain().validator_count())
        .find(|i| net.chain().shard_of_validator(*i) == shard)
        .expect("the shard has validators");
    let chain = net.chain.take().expect("running");
    let mut chain = net.rt.block_on(async move {
        let mut chain = chain;
        chain.kill_validator(victim).await;
        chain
    });
    net.huds(&homes[0], &["wallet", "transfer", &to_b, "1"]);
    let a_expected = a_expected - iost("1").0 - fee.0;
    let b_expected = b_expected + iost("1").0;
    let target = net.heights()[usize::from(shard)] + 20;
    net.wait_until("the shard moved on without the killed validator", |n| {
        n.heights()[usize::from(shard)] >= target
    });
    net.rt
        .block_on(chain.start_validator(victim))
        .expect("the killed validator restarts on its database");
    let restarted = chain.handle(victim).expect("running again");
    net.chain = Some(chain);
    net.wait_until("the restarted validator caught up", |_| {
        restarted.status().lane.height >= target
    });
    let seen = net
        .rt
        .block_on(restarted.account(addresses[1]))
        .expect("the restarted validator answers")
        .expect("B exists");
    assert_eq!(seen.balance, Amount(b_expected));
    assert_eq!(balance(&net, &homes[0]), Amount(a_expected));
    assert_eq!(balance(&net, &homes[1]), Amount(b_expected));
    // And it takes part again: the shard keeps finalising.
    let now = restarted.status().lane.height;
    net.wait_until("the restarted validator follows new blocks", |_| {
        restarted.status().lane.height >= now + 3
    });
}

#[test]
fn bad_transactions_are_refused_with_reasons_and_validators_keep_running() {
    let _serial = serial();
    let homes_dir = tempfile::tempdir().expect("tempdir");
    let (homes, keys, shard) = wallets_on_one_shard(homes_dir.path(), 2);
    let addresses: Vec<Address> = keys.iter().map(|k| Address::of(&k.public())).collect();
    let net = Net::start(addresses.clone());
    let status = net.status();
    let chain_id = u32::try_from(status["chain_id"].as_u64().expect("chain id")).expect("u32");
    let fee = iost(status["fee_min"].as_str().expect("fee"));
    let transfer = |nonce: u64, amount: Amount| Transaction {
        chain_id,
        sender: keys[0].public(),
        nonce,
        fee,
        expiry_height: 10_000,
        kind: TxKind::Transfer {
            to: addresses[1],
            amount,
        },
    };
    let good = transfer(0, iost("1")).sign(&keys[0]);
    let mut bad_signature = good.encode();
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 1;
    let wrong_chain = Transaction {
        chain_id: chain_id + 1,
        ..transfer(0, iost("1"))
    }
    .sign(&keys[0])
    .encode();
    let overspend = transfer(0, iost("2000000")).sign(&keys[0]).encode();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("malformed", vec![1, 2, 3], "malformed transaction"),
        ("empty", vec![], "malformed transaction"),
        (
            "oversized",
            vec![1; chain::tx::TX_BYTES_MAX + 1],
            "the maximum is 9824",
        ),
        ("bad signature", bad_signature, "bad signature"),
        ("wrong chain id", wrong_chain, "is for chain"),
        ("overspend", overspend, "overspend"),
    ];
    for (what, bytes, reason) in &cases {
        let (code, v) = net.post_tx(bytes);
        assert_eq!(code, 400, "{what}: {v}");
        let error = v["error"].as_str().expect("an error");
        assert!(error.contains(reason), "{what}: {error:?}");
    }

    let (code, v) = net.post_tx(&good.encode());
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["shard"], shard);
    let (code, v) = net.post_tx(&good.encode());
    assert_eq!(code, 400, "replay: {v}");
    assert!(
        v["error"].as_str().expect("error").contains("replayed"),
        "{v}"
    );

    // The CLI says why too, and exits non-zero.
    let out = common::run(
        &homes[1],
        &[
            "--api",
            &net.api,
            "wallet",
            "transfer",
            &addresses[0].to_string(),
            "5000000",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("overspend"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every validator is still running and every shard still finalises blocks.
    let before = net.heights();
    net.wait_until("every shard finalised 3 more blocks", |n| {
        n.heights().iter().zip(&before).all(|(h, b)| *h >= b + 3)
    });
    let mut net = net;
    let chain = net.chain();
    assert_eq!(chain.handles().len(), chain.validator_count());
    assert!(chain.handles().iter().all(|h| h.is_running()));
}

/// `huds devnet --shards 2` as a user runs it: the `wallet` line names a funded home, the CLI works against
/// the `api` line, and a restart on the same directory resumes the chain at its heights with its balances.
#[test]
fn huds_devnet_runs_the_chain_and_resumes_it_on_restart() {
    let _serial = serial();
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().expect("tempdir");
    /// The devnet process, killed if the test fails before it is stopped.
    struct Devnet(std::process::Child);
    impl Drop for Devnet {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let run = |check: &mut dyn FnMut(&str, &Path)| {
        let child = Command::new(common::huds())
            .args([
                "devnet",
                "--nodes",
                "2",
                "--shards",
                "2",
                "--api",
                "127.0.0.1:0",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn devnet");
        let mut child = Devnet(child);
        let stdout = child.0.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let (mut api, mut wallet) = (None, None);
        for line in lines.by_ref() {
            if let Some(w) = line.strip_prefix("wallet ") {
                wallet = Some(PathBuf::from(w));
            }
            if let Some(a) = line.strip_prefix("api ") {
                api = Some(a.to_string());
                break;
            }
        }
        let (api, wallet) = (api.expect("an api line"), wallet.expect("a wallet line"));
        check(&api, &wallet);
        let pid = child.0.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success());
        assert!(child.0.wait().expect("exits").success());
    };
    let json = |api: &str, home: &Path, args: &[&str]| {
        let mut full = vec!["--api", api];
        full.extend_from_slice(args);
        common::run_json(home, &full)
    };
    let heights = |v: &Value| -> Vec<u64> {
        v["shards"]
            .as_array()
            .expect("shards")
            .iter()
            .map(|s| s["height"].as_u64().expect("height"))
            .collect()
    };
    let mut before = Vec::new();
    let mut balance_before = String::new();
    run(&mut |api, wallet| {
        assert_eq!(wallet, dir.path().join("wallet"));
        let b = json(api, wallet, &["wallet", "balance"]);
        assert_eq!(b["balance"], "1000000.00000000");
        // Pay the wallet's own address: the fee is the only change.
        let me = json(api, wallet, &["wallet", "address"]);
        let me = me["address"].as_str().expect("address").to_string();
        let sent = json(api, wallet, &["wallet", "transfer", &me, "1"]);
        let b = json(api, wallet, &["wallet", "balance"]);
        assert_eq!(b["balance"], "999999.99999000");

        // SPV: proofs from the node, checked with no node against the trust file the devnet wrote from genesis.
        let (account_proof, tx_proof) = (
            dir.path().join("account.proof"),
            dir.path().join("tx.proof"),
        );
        let prove = |args: &[&str], out: &Path| {
            let mut full = vec!["--api", api, "chain", "prove"];
            full.extend_from_slice(args);
            full.extend_from_slice(&["-o", out.to_str().expect("utf-8")]);
            let o = common::run(wallet, &full);
            assert!(
                o.status.success(),
                "prove {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        // The trust file the devnet wrote is current: `chain trust` advances it through nothing.
        let o = common::run(wallet, &["--api", api, "chain", "trust"]);
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains("current at epoch 0"),
            "chain trust: {} {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        prove(&["account", &me], &account_proof);
        let tx = sent["tx"]
            .as_str()
            .expect("the transfer's hash")
            .to_string();
        prove(&["tx", &tx], &tx_proof);
        let verify = |file: &Path| {
            common::run(
                wallet,
                &["--json", "chain", "verify", file.to_str().expect("utf-8")],
            )
        };
        let v: Value = serde_json::from_slice(&verify(&account_proof).stdout).expect("verify JSON");
        assert_eq!(
            (v["valid"].as_bool(), v["balance"].as_str()),
            (Some(true), Some("999999.99999000")),
            "{v}"
        );
        let v: Value = serde_json::from_slice(&verify(&tx_proof).stdout).expect("verify JSON");
        assert_eq!(
            (v["valid"].as_bool(), v["hash"].as_str()),
            (Some(true), Some(tx.as_str())),
            "{v}"
        );
        // One byte changed anywhere in the certified part, and the proof no longer holds.
        let mut forged = std::fs::read(&account_proof).expect("proof");
        forged[30] ^= 1;
        std::fs::write(&account_proof, &forged).expect("write");
        let o = verify(&account_proof);
        assert!(!o.status.success(), "a forged proof verified");
        let err = String::from_utf8_lossy(&o.stdout);
        assert!(
            err.contains("does not hold") || err.contains("not a proof"),
            "{err}"
        );

        // Staking as a storage node, then unstaking part of it: both reach the beacon's registry.
        let storage_stake = |api: &str, wallet: &Path| -> Option<String> {
            let status = json(api, wallet, &["chain", "status"]);
            status["beacon"]["storage_nodes"]
                .as_array()?
                .iter()
                .find(|n| n["id"] == me.as_str())
                .and_then(|n| n["stake"].as_str().map(str::to_string))
        };
        for (args, stake) in [
            (["wallet", "stake", "100"], "100.00000000"),
            (["wallet", "unstake", "40"], "60.00000000"),
        ] {
            let done = json(api, wallet, &args);
            assert!(done["height"].as_u64().is_some(), "{done}");
            let start = Instant::now();
            while storage_stake(api, wallet).as_deref() != Some(stake) {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "the registry never showed a stake of {stake}: {:?}",
                    storage_stake(api, wallet)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let b = json(api, wallet, &["wallet", "balance"]);
        assert_eq!(b["balance"], "999899.99997000", "stake and two fees");
        balance_before = b["balance"].as_str().expect("balance").to_string();
        let start = Instant::now();
        loop {
            let h = heights(&json(api, wallet, &["chain", "status"]));
            if h.iter().all(|h| *h >= 3) {
                before = h;
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "heights {h:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    run(&mut |api, wallet| {
        let status = json(api, wallet, &["chain", "status"]);
        let after = heights(&status);
        assert!(
            after.iter().zip(&before).all(|(a, b)| a >= b),
            "resumed at {after:?}, had reached {before:?}"
        );
        let b = json(api, wallet, &["wallet", "balance"]);
        assert_eq!(b["balance"], balance_before.as_str());
    });
}
