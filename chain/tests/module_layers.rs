//! The modules of `chain` keep their layers (specs/ARCHITECTURE.md, "Layers of `chain`"): every import points
//! down, never up, so that the chain's types can be used without consensus and the replica without the
//! ledger. The check reads `chain/src` as text: each `crate::` path in production code (unit-test modules
//! are exempt: they may build a whole chain to test one piece) must name a module of the file's own layer or
//! of a layer below it. A new module must be given a layer in [`LAYERS`] before this test passes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, lowest first, and the top-level modules of `chain` in each. A module may import its own
/// layer and every layer listed before it. `tx`, `block` and `registry` are re-exports of `types::…` at the
/// crate root, kept for old paths.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "primitives",
        &[
            "ids", "codec", "crypto", "address", "amount", "smt", "pieces", "store", "pol",
        ],
    ),
    ("types", &["types", "tx", "block", "registry"]),
    ("execution", &["state", "genesis", "atomix"]),
    ("bft", &["bft"]),
    ("ledger", &["ledger"]),
    ("beacon", &["beacon"]),
    ("spv", &["spv"]),
    // The driver of a validator, above everything it drives (being written in parallel; see the spec).
    ("node", &["node"]),
];

/// The modules of the types layer, lowest first: inside the layer too, a module may import only the ones
/// before it (a header is named by votes and inbounds; a block carries inbounds and evidence; a proposal
/// carries a block; the wire encodes proposals; proofs carry headers, certificates and accounts).
const TYPES_ORDER: &[&str] = &[
    "account",
    "deal",
    "storage_proof",
    "volume",
    "tx",
    "registry",
    "header",
    "vote",
    "evidence",
    "inbound",
    "block",
    "message",
    "wire",
    "proof",
];

/// The position of a types module in [`TYPES_ORDER`]: `crate::types::vote::…` or a root alias (`crate::tx`).
fn types_module_of(path: &str) -> Option<&str> {
    let mut segments = path.trim_start_matches("crate::").split("::");
    match segments.next()? {
        "types" => segments.next().filter(|s| !s.is_empty()),
        alias @ ("tx" | "block" | "registry") => Some(alias),
        _ => None,
    }
}

/// An import that points up.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    path: String,
    from: String,
    to: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: `{}`: {} may not import {}, which is above it",
            self.file, self.line, self.path, self.from, self.to
        )
    }
}

fn layer_of_module(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, modules))| modules.contains(&module))
        .map(|(i, (name, _))| (i, *name))
}

/// `text` with comments, string and char literals blanked out (newlines kept, so line numbers hold).
fn code_only(text: &str) -> Vec<char> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = chars.clone();
    let mut i = 0;
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in out.iter_mut().take(to).skip(from) {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    while i < chars.len() {
        match chars[i] {
            '/' if chars.get(i + 1) == Some(&'/') => {
                let end = chars[i..]
                    .iter()
                    .position(|c| *c == '\n')
                    .map_or(chars.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                let end = (i + 2..chars.len().saturating_sub(1))
                    .find(|j| chars[*j] == '*' && chars[*j + 1] == '/')
                    .map_or(chars.len(), |j| j + 2);
                blank(&mut out, i, end);
                i = end;
            }
            '"' => {
                let mut j = i + 1;
                while j < chars.len() && chars[j] != '"' {
                    j += if chars[j] == '\\' { 2 } else { 1 };
                }
                let end = (j + 1).min(chars.len());
                blank(&mut out, i + 1, end.saturating_sub(1));
                i = end;
            }
            // A char literal ('{', '\n'), not a lifetime ('a): the closing quote comes within 3 chars.
            '\'' if chars.get(i + 2) == Some(&'\'')
                || (chars.get(i + 1) == Some(&'\\') && chars.get(i + 3) == Some(&'\'')) =>
            {
                let end = if chars.get(i + 2) == Some(&'\'') {
                    i + 3
                } else {
                    i + 4
                };
                blank(&mut out, i + 1, end - 1);
                i = end;
            }
            _ => i += 1,
        }
    }
    out
}

/// Blanks every item marked `#[cfg(test)]` (a test module, a test-only function) and returns the names
/// of test-only modules declared without a body (`#[cfg(test)] mod tests;`), whose files are test code.
fn strip_test_items(code: &mut [char]) -> Vec<String> {
    const MARK: &str = "#[cfg(test)]";
    let mark: Vec<char> = MARK.chars().collect();
    let mut test_files = Vec::new();
    let mut i = 0;
    while i + mark.len() <= code.len() {
        if code[i..i + mark.len()] != mark[..] {
            i += 1;
            continue;
        }
        // The item runs to its first `;` at depth 0 (a declaration) or to the `}` closing its first `{`.
        let mut j = i + mark.len();
        let mut depth = 0usize;
        let mut opened = false;
        while j < code.len() {
            match code[j] {
                '{' => {
                    depth += 1;
                    opened = true;
                }
                '}' => {
                    depth = depth.saturating_sub(1);
                    if opened && depth == 0 {
                        j += 1;
                        break;
                    }
                }
                ';' if !opened => {
                    let item: String = code[i + mark.len()..j].iter().collect();
                    let words: Vec<&str> = item.split_whitespace().collect();
                    if let Some(pos) = words.iter().position(|w| *w == "mod")
                        && let Some(name) = words.get(pos + 1)
                    {
                        test_files.push((*name).to_owned());
                    }
                    j += 1;
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let end = j.min(code.len());
        for c in code.iter_mut().take(end).skip(i) {
            if *c != '\n' {
                *c = ' ';
            }
        }
        i = j;
    }
    test_files
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every `crate::` path in `code`: (line, the first segment after `crate::`, the path as written).
fn crate_paths(code: &[char]) -> Vec<(usize, String, String)> {
    let needle: Vec<char> = "crate::".chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i + needle.len() <= code.len() {
        let preceded = i > 0 && (is_ident(code[i - 1]) || code[i - 1] == '$');
        if preceded || code[i..i + needle.len()] != needle[..] {
            i += 1;
            continue;
        }
        let line = code[..i].iter().filter(|c| **c == '\n').count() + 1;
        let start = i + needle.len();
        if code.get(start) == Some(&'{') {
            // `crate::{a, b::c}`: each first segment at depth 1 of the group.
            let mut j = start + 1;
            let mut depth = 1;
            let mut at_segment_start = true;
            while j < code.len() && depth > 0 {
                match code[j] {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => at_segment_start = true,
                    c if depth == 1 && at_segment_start && is_ident(c) => {
                        let name: String = code[j..].iter().take_while(|c| is_ident(**c)).collect();
                        j += name.len() - 1;
                        found.push((line, name.clone(), format!("crate::{{{name}…}}")));
                        at_segment_start = false;
                    }
                    _ => {}
                }
                j += 1;
            }
            i = j;
        } else {
            let path: String = code[start..]
                .iter()
                .take_while(|c| is_ident(**c) || **c == ':')
                .collect();
            let first = path.split("::").next().unwrap_or_default().to_owned();
            found.push((line, first, format!("crate::{path}")));
            i = start + path.len().max(1);
        }
    }
    found
}

/// Root-level names re-exported by `lib.rs` (`pub use state::{Account, State}`) and the module each comes
/// from, so that `crate::State` is judged as `crate::state`.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let code: String = code_only(lib).into_iter().collect();
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        let Some(rest) = stmt.strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        let names = names.trim_matches(|c| c == '{' || c == '}' || char::is_whitespace(c));
        for name in names.split(',') {
            let name = name.trim();
            let name = name.rsplit(" as ").next().unwrap_or(name).trim();
            if !name.is_empty() {
                map.insert(name.to_owned(), module.trim().to_owned());
            }
        }
    }
    map
}

/// The violations in one source file of `chain/src`, `relative` to it (`types/block.rs`).
fn check_file(
    relative: &str,
    text: &str,
    reexports: &BTreeMap<String, String>,
    test_files: &mut Vec<String>,
) -> Result<Vec<Violation>, String> {
    let top = relative
        .split('/')
        .next()
        .unwrap_or(relative)
        .trim_end_matches(".rs");
    let (from, from_layer) = layer_of_module(top).ok_or_else(|| {
        format!(
            "chain/src/{relative}: module `{top}` has no layer in LAYERS (tests/module_layers.rs)"
        )
    })?;
    let mut code = code_only(text);
    let dir = Path::new(relative).parent().unwrap_or(Path::new(""));
    let own_dir = if relative.ends_with("/mod.rs") || !relative.contains('/') {
        // `bft/mod.rs` declares `bft/x.rs`; a root file `beacon.rs` declares `beacon/x.rs`.
        if relative.contains('/') {
            dir.to_path_buf()
        } else {
            PathBuf::from(top)
        }
    } else {
        dir.join(Path::new(relative).file_stem().unwrap_or_default())
    };
    for name in strip_test_items(&mut code) {
        let base = own_dir.join(&name);
        test_files.push(format!("{}.rs", base.display()));
        test_files.push(format!("{}/mod.rs", base.display()));
    }
    let mut violations = Vec::new();
    for (line, first, path) in crate_paths(&code) {
        let module = reexports.get(&first).cloned().unwrap_or(first);
        let (to, to_layer) = layer_of_module(&module).ok_or_else(|| {
            format!("chain/src/{relative}:{line}: `{path}` names `{module}`, which has no layer in LAYERS")
        })?;
        if to > from {
            violations.push(Violation {
                file: format!("chain/src/{relative}"),
                line,
                path,
                from: format!("the {from_layer} layer"),
                to: format!("the {to_layer} layer"),
            });
            continue;
        }
        // Inside the types layer, the modules' own order.
        let Some(own) = relative.strip_prefix("types/") else {
            continue;
        };
        let own = own.trim_end_matches(".rs");
        if own == "mod" || to < from {
            continue;
        }
        let Some(target) = types_module_of(&path).map(str::to_owned) else {
            return Err(format!(
                "chain/src/{relative}:{line}: `{path}`: name one types module per path (`crate::types::vote::…`)"
            ));
        };
        let position = |m: &str| TYPES_ORDER.iter().position(|o| *o == m);
        let (Some(own_at), Some(target_at)) = (position(own), position(&target)) else {
            return Err(format!(
                "chain/src/{relative}:{line}: `types::{own}` or `types::{target}` has no place in TYPES_ORDER (tests/module_layers.rs)"
            ));
        };
        if target_at > own_at {
            violations.push(Violation {
                file: format!("chain/src/{relative}"),
                line,
                path,
                from: format!("types::{own}"),
                to: format!("types::{target}"),
            });
        }
    }
    Ok(violations)
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("chain/src is readable")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).expect("under chain/src");
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[test]
fn every_import_of_chain_points_down_its_layers() {
    // Cargo's variable at run time: a binary built from another clone into a shared target directory
    // would otherwise read that clone's files.
    let root = Path::new(
        &std::env::var_os("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("src");
    let lib = std::fs::read_to_string(root.join("lib.rs")).expect("lib.rs");
    let reexports = root_reexports(&lib);

    // Every module lib.rs declares has a layer.
    let lib_code: String = code_only(&lib).into_iter().collect();
    for stmt in lib_code.split(';') {
        let words: Vec<&str> = stmt.split_whitespace().collect();
        if let Some(pos) = words.iter().position(|w| *w == "mod") {
            let name = words[pos + 1];
            assert!(
                layer_of_module(name).is_some(),
                "lib.rs declares module `{name}`, which has no layer in LAYERS (tests/module_layers.rs)"
            );
        }
    }

    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    // Parents come before their children in the sorted order (`bft/mod.rs` before `bft/tests.rs` is not
    // guaranteed by name), so collect test-only files first and judge the rest afterwards.
    let mut test_files = Vec::new();
    let mut results = Vec::new();
    for file in files.iter().filter(|f| f.as_str() != "lib.rs") {
        let text = std::fs::read_to_string(root.join(file)).expect("source file");
        results.push((
            file.clone(),
            check_file(file, &text, &reexports, &mut test_files),
        ));
    }
    let mut violations = Vec::new();
    for (file, result) in results {
        if test_files.contains(&file) {
            continue;
        }
        match result {
            Ok(v) => violations.extend(v),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        violations.is_empty(),
        "imports that point up the layers of chain (specs/ARCHITECTURE.md, \"Layers of `chain`\"):\n{}",
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        files.len() > 20,
        "the walk found chain's sources: {files:?}"
    );
}

#[test]
fn an_upward_import_is_reported_with_its_file_line_and_path() {
    let reexports = root_reexports("pub use state::{Account, State};\npub use types::{block, tx};");
    let text = r#"//! A types module that reaches up.
use crate::codec::Writer; // fine: primitives
use crate::types::vote::Bls; // fine: its own layer
use crate::{crypto::Hash, ledger::App};
fn f() -> crate::State { g() } // "crate::bft::Replica" in a string does not count
#[cfg(test)]
mod tests {
    use crate::beacon::BeaconApp; // test code may reach up
}
"#;
    let mut test_files = Vec::new();
    let found =
        check_file("types/block.rs", text, &reexports, &mut test_files).expect("known modules");
    assert_eq!(
        found,
        vec![
            Violation {
                file: "chain/src/types/block.rs".into(),
                line: 4,
                path: "crate::{ledger…}".into(),
                from: "the types layer".into(),
                to: "the ledger layer".into(),
            },
            Violation {
                file: "chain/src/types/block.rs".into(),
                line: 5,
                path: "crate::State".into(),
                from: "the types layer".into(),
                to: "the execution layer".into(),
            },
        ]
    );
    assert!(
        found[0]
            .to_string()
            .contains("chain/src/types/block.rs:4: `crate::{ledger…}`"),
        "the message names the file, the line and the import: {}",
        found[0]
    );
}

#[test]
fn inside_the_types_layer_a_module_imports_only_the_ones_before_it() {
    let reexports = root_reexports("pub use types::{block, registry, tx};");
    let text = "use crate::types::header::BlockHeader;\nuse crate::tx::Transaction;\n\
                use crate::types::block::Block;\nuse crate::block::CrossLink;\n";
    let mut test_files = Vec::new();
    let found =
        check_file("types/vote.rs", text, &reexports, &mut test_files).expect("known modules");
    let paths: Vec<(usize, &str, &str)> = found
        .iter()
        .map(|v| (v.line, v.path.as_str(), v.to.as_str()))
        .collect();
    assert_eq!(
        paths,
        vec![
            (3, "crate::types::block::Block", "types::block"),
            (4, "crate::block::CrossLink", "types::block"),
        ]
    );
    let err = check_file(
        "types/vote.rs",
        "use crate::types::{header::BlockHeader, block::Block};",
        &reexports,
        &mut test_files,
    )
    .expect_err("one module per path");
    assert!(err.contains("name one types module per path"), "{err}");
}

#[test]
fn test_only_module_files_are_exempt_and_unknown_modules_are_refused() {
    let reexports = BTreeMap::new();
    let mut test_files = Vec::new();
    let found = check_file(
        "bft/mod.rs",
        "use crate::store::Store;\n#[cfg(test)]\nmod tests;\n",
        &reexports,
        &mut test_files,
    )
    .expect("known modules");
    assert!(found.is_empty());
    assert!(
        test_files.contains(&"bft/tests.rs".to_owned()),
        "{test_files:?}"
    );
    let err = check_file("rpc/mod.rs", "", &reexports, &mut test_files).expect_err("no layer");
    assert!(err.contains("`rpc` has no layer"), "{err}");
    let err = check_file(
        "state.rs",
        "use crate::gossip::X;",
        &reexports,
        &mut test_files,
    )
    .expect_err("no layer");
    assert!(err.contains("`gossip`"), "{err}");
}
