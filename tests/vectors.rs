//! The six UnixFS vectors of tests/vectors/unixfs-cids.txt: the CIDs `ipfs add --cid-version=1` prints for
//! files made by gen.py. Each is checked with the library importer and through `huds add`, then read back.

mod common;

use std::path::Path;
use std::process::Command;

fn vectors() -> Vec<(String, u64, String)> {
    let text = include_str!("vectors/unixfs-cids.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                f[1].parse().expect("size"),
                f[3].to_string(),
            )
        })
        .collect()
}

fn generate(dir: &Path) {
    let script = common::repo().join("tests/vectors/gen.py");
    let st = Command::new("python3")
        .arg(script)
        .arg(dir)
        .status()
        .expect("python3 runs gen.py");
    assert!(st.success(), "gen.py failed");
}

#[test]
fn unixfs_cids_match_ipfs() {
    let (dir, home) = common::new_home();
    let files = dir.path().join("vectors");
    generate(&files);
    let v = vectors();
    assert_eq!(v.len(), 6);
    for (name, size, cid) in v {
        let path = files.join(&name);
        assert_eq!(
            std::fs::metadata(&path).expect("generated").len(),
            size,
            "{name}"
        );
        assert_eq!(
            huds::add::cid_of_path(&path).expect("hash").to_string(),
            cid,
            "{name}: library importer"
        );
        let added = common::run_json(&home, &["add", path.to_str().expect("utf-8")]);
        assert_eq!(added["cid"], cid, "{name}: huds add");
        assert_eq!(added["size"], size, "{name}");
        let out = common::run(&home, &["cat", added["cap"].as_str().expect("cap")]);
        assert!(
            out.status.success(),
            "cat {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == std::fs::read(&path).expect("read"),
            "{name}: bytes differ"
        );
    }
}
