//! The CLI of `specs/cli.md` on one home: init, add (files, trees, stdin, --public), get, cat, ls, and errors.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{new_home, run, run_json};

#[test]
fn add_get_cat_ls_a_tree_and_a_file() {
    let (dir, home) = new_home();
    let src = dir.path().join("site");
    std::fs::create_dir_all(src.join("docs/empty")).expect("mkdir");
    std::fs::write(src.join("index.html"), b"<h1>hi</h1>").expect("write");
    std::fs::write(src.join("docs/a.txt"), vec![b'a'; 600_000]).expect("write");
    let added = run_json(&home, &["add", src.to_str().expect("utf-8")]);
    let cap = added["cap"].as_str().expect("cap").to_string();
    assert!(cap.starts_with("huds:"));
    assert_eq!(added["size"], 600_000 + 11);

    let ls = run_json(&home, &["ls", &cap]);
    let names: Vec<&str> = ls["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["docs", "index.html"]);
    let ls = run_json(&home, &["ls", &format!("{cap}/docs")]);
    assert_eq!(ls["entries"][0]["name"], "a.txt");
    assert_eq!(ls["entries"][0]["size"], 600_000);
    assert_eq!(ls["entries"][1]["type"], "directory");

    let out = run(&home, &["cat", &format!("{cap}/index.html")]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"<h1>hi</h1>");

    let got = dir.path().join("got");
    run_json(&home, &["get", &cap, "-o", got.to_str().expect("utf-8")]);
    assert_eq!(
        std::fs::read(got.join("docs/a.txt")).expect("read"),
        vec![b'a'; 600_000]
    );
    assert!(got.join("docs/empty").is_dir());
    assert!(!dir.path().join("got.huds-partial").exists());

    let one = dir.path().join("one.bin");
    run_json(
        &home,
        &[
            "get",
            &format!("{cap}/docs/a.txt"),
            "-o",
            one.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(std::fs::read(&one).expect("read").len(), 600_000);
}

#[test]
fn public_adds_read_by_cid_and_private_ones_do_not() {
    let (dir, home) = new_home();
    let f = dir.path().join("f.txt");
    std::fs::write(&f, b"public bytes").expect("write");
    let public = run_json(
        &home,
        &[
            "add",
            "--public",
            "-k",
            "2",
            "-m",
            "1",
            f.to_str().expect("utf-8"),
        ],
    );
    let out = run(&home, &["cat", public["cid"].as_str().expect("cid")]);
    assert_eq!(out.stdout, b"public bytes");

    std::fs::write(&f, b"private bytes").expect("write");
    let private = run_json(&home, &["add", f.to_str().expect("utf-8")]);
    let out = run(&home, &["cat", private["cid"].as_str().expect("cid")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("capability"), "{err}");
}

#[test]
fn stdin_adds_stream() {
    let (_dir, home) = new_home();
    let mut child = common::spawn_add_stdin(&home, true, Stdio::piped());
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"from a pipe")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        run(&home, &["cat", v["cap"].as_str().expect("cap")]).stdout,
        b"from a pipe"
    );
}

#[test]
fn bad_input_gets_one_clear_line_and_a_non_zero_exit() {
    let (dir, home) = new_home();
    let cases: [(&[&str], &str); 7] = [
        (&["cat", "bafynotacid"], "malformed CID"),
        (&["cat", "huds:!!!"], "base32"),
        (&["cat", "huds:aaaa"], "capability"),
        (
            &[
                "ls",
                "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
            ],
            "not a public file known here",
        ),
        (&["add", "/nonexistent/path"], "No such file"),
        (&["add", "-k", "0", "/"], "invalid erasure coding"),
        (&["init"], "already a huds home"),
    ];
    for (args, want) in cases {
        let out = run(&home, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: ") && err.trim_end().lines().count() == 1,
            "{args:?}: {err}"
        );
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let nohome = dir.path().join("nohome");
    let out = run(
        &nohome,
        &[
            "cat",
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("huds --data"),
        "suggests init"
    );
    let out = run(&home, &["--json", "cat", "bafynotacid"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert!(
        v["error"]
            .as_str()
            .expect("error")
            .contains("malformed CID")
    );
}

/// `huds completions SHELL` prints a completion script made from the command definitions, with no home.
#[test]
fn completions_come_from_the_command_definitions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_huds()"),
        ("zsh", "#compdef huds"),
        ("fish", "complete -c huds"),
    ] {
        let out = std::process::Command::new(common::huds())
            .args(["completions", shell])
            .env("HUDS_HOME", "/nonexistent/huds-home")
            .output()
            .expect("runs");
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).expect("utf-8");
        assert!(script.contains(marker), "{shell} script lacks {marker}");
        // Every subcommand is offered.
        for sub in ["add", "get", "wallet", "chain", "devnet", "completions"] {
            assert!(script.contains(sub), "{shell} script lacks {sub}");
        }
    }
    let bad = std::process::Command::new(common::huds())
        .args(["completions", "tcsh"])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
}

/// `huds man` prints a roff manual page made from the same definitions as `--help`.
#[test]
fn the_manual_page_comes_from_the_command_definitions() {
    let out = std::process::Command::new(common::huds())
        .arg("man")
        .env("HUDS_HOME", "/nonexistent/huds-home")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8(out.stdout).expect("utf-8");
    assert!(page.contains(".TH huds 1"), "not a section-1 page");
    for sub in ["add", "get", "wallet", "devnet", "completions"] {
        assert!(page.contains(sub), "the page lacks {sub}");
    }
}

/// `huds rm` on a home: a file added twice (once public) shares its shards, so removing one add deletes only
/// what the other does not hold; the public CID stops resolving once its add is removed; removing again, or
/// something never added, says so and changes nothing; deal flags need a node.
#[test]
fn rm_unpins_and_deletes_only_what_nothing_else_holds() {
    let (dir, home) = new_home();
    let file = dir.path().join("f.bin");
    std::fs::write(&file, vec![7u8; 300_000]).expect("write");
    let path = file.to_str().expect("utf-8");
    let private = run_json(&home, &["add", path]);
    let public = run_json(&home, &["add", "--public", path]);
    let other = dir.path().join("g.txt");
    std::fs::write(&other, b"another file").expect("write");
    let kept = run_json(&home, &["add", other.to_str().expect("utf-8")]);
    let status = |home: &std::path::Path| run_json(home, &["node", "status"]);
    let before = status(&home);

    let cid = public["cid"].as_str().expect("cid");
    let removed = run_json(&home, &["rm", cid]);
    assert_eq!(removed["cid"].as_str(), Some(cid));
    assert_eq!(removed["name"], "f.bin");
    assert_eq!(removed["deal"], serde_json::Value::Null);
    let deleted = removed["deleted"].as_u64().expect("deleted");
    assert!(removed["shards"].as_u64() >= Some(deleted));
    let after = status(&home);
    assert_eq!(
        after["shards"].as_u64(),
        before["shards"].as_u64().map(|s| s - deleted)
    );
    assert_eq!(after["pins"].as_u64(), Some(2), "{after}");
    let gone = run(&home, &["cat", cid]);
    assert!(!gone.status.success(), "the public CID no longer resolves");

    // The private add and the other file read as before.
    let out = run(&home, &["cat", private["cap"].as_str().expect("cap")]);
    assert_eq!(out.stdout, vec![7u8; 300_000]);
    let out = run(&home, &["cat", kept["cap"].as_str().expect("cap")]);
    assert_eq!(out.stdout, b"another file");

    let cap = private["cap"].as_str().expect("cap");
    run_json(&home, &["rm", cap]);
    let again = run(&home, &["rm", cap]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not pinned"));
    let bad = run(&home, &["rm", "huds:notacapability"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("capability"));
    let last = status(&home);
    assert_eq!(last["pins"].as_u64(), Some(1), "{last}");
    let out = run(&home, &["cat", kept["cap"].as_str().expect("cap")]);
    assert_eq!(out.stdout, b"another file");

    let local = run(&home, &["add", "--periods", "3", path]);
    assert!(!local.status.success());
    assert!(String::from_utf8_lossy(&local.stderr).contains("--api"));
}

#[test]
fn pins_list_what_the_home_added_with_capabilities_only_when_asked() {
    let (dir, home) = new_home();
    assert_eq!(run_json(&home, &["pins"])["pins"], serde_json::json!([]));
    let a = dir.path().join("a.txt");
    std::fs::write(&a, b"private bytes").expect("write");
    let b = dir.path().join("b.txt");
    std::fs::write(&b, vec![b'b'; 70_000]).expect("write");
    let private = run_json(&home, &["add", a.to_str().expect("utf-8")]);
    let public = run_json(&home, &["add", "--public", b.to_str().expect("utf-8")]);

    let pins = run_json(&home, &["pins"]);
    let list = pins["pins"].as_array().expect("pins");
    assert_eq!(list.len(), 2, "{pins}");
    let find = |name: &str| {
        list.iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {pins}"))
            .clone()
    };
    let (pa, pb) = (find("a.txt"), find("b.txt"));
    assert_eq!(pa["cid"], private["cid"]);
    assert_eq!(pa["size"], 13);
    assert_eq!(pa["public"], false);
    assert_eq!(pb["cid"], public["cid"]);
    assert_eq!(pb["size"], 70_000);
    assert_eq!(pb["public"], true);
    let added = pa["added"].as_str().expect("added");
    assert!(
        added.len() == 20 && added.starts_with("20") && added.ends_with('Z'),
        "{added}"
    );
    assert!(
        !pins.to_string().contains("huds:"),
        "no capability unless asked: {pins}"
    );

    let with_caps = run_json(&home, &["pins", "--caps"]);
    let caps: Vec<&str> = with_caps["pins"]
        .as_array()
        .expect("pins")
        .iter()
        .map(|p| p["cap"].as_str().expect("cap"))
        .collect();
    assert!(caps.contains(&private["cap"].as_str().expect("cap")));
    assert!(caps.contains(&public["cap"].as_str().expect("cap")));

    let text = run(&home, &["pins"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("a.txt") && text.contains("private"), "{text}");
    assert!(text.contains("b.txt") && text.contains("public"), "{text}");

    run_json(&home, &["rm", private["cap"].as_str().expect("cap")]);
    let left = run_json(&home, &["pins"]);
    assert_eq!(left["pins"].as_array().expect("pins").len(), 1);
    assert_eq!(left["pins"][0]["name"], "b.txt");
}
