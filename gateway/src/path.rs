//! Content paths: `/huds/<CID|capability>[/name...]` and `/ipfs/<CID>[/name...]`, taken from the raw
//! (still percent-encoded) request path.
//!
//! Every name is percent-decoded on its own, after the path is split on `/`, so `%2F` can never smuggle a
//! separator in; `.`, `..`, empty-after-decoding names, NUL and control characters are refused rather than
//! normalised, because a content path names links in a DAG, not files on a disk.

/// Longest raw path accepted.
pub const PATH_BYTES_MAX: usize = 4096;
/// Most names after the root.
pub const NAMES_MAX: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Huds,
    Ipfs,
}

/// A parsed content path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentPath {
    pub namespace: Namespace,
    /// The CID or capability text.
    pub root: String,
    /// The decoded names after the root.
    pub names: Vec<String>,
    /// Whether the path ends in `/` (a directory URL).
    pub trailing_slash: bool,
}

impl ContentPath {
    /// The names joined with `/`, as `Reader::resolve` takes them.
    pub fn joined(&self) -> String {
        self.names.join("/")
    }

    /// The last name, used to guess a content type.
    pub fn file_name(&self) -> Option<&str> {
        self.names.last().map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path is longer than {PATH_BYTES_MAX} bytes")]
    TooLong,
    #[error("the path has more than {NAMES_MAX} names")]
    TooDeep,
    #[error("no CID or capability after /huds/ or /ipfs/")]
    NoRoot,
    #[error("malformed percent-encoding or UTF-8 in the path")]
    Encoding,
    #[error(
        "the path name {0:?} is not allowed ('.', '..', '/', NUL and control characters are refused)"
    )]
    BadName(String),
    #[error("/ipfs/ paths take a CID; a capability goes under /huds/")]
    CapabilityUnderIpfs,
    #[error("not a content path: use /huds/<CID or capability>/... or /ipfs/<CID>/...")]
    NotContent,
}

/// Decodes `%XX` escapes; `+` stays `+` (this is a path, not a form).
pub fn percent_decode(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::Encoding)?;
            let hex = std::str::from_utf8(hex).map_err(|_| PathError::Encoding)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| PathError::Encoding)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::Encoding)
}

fn check_name(name: &str) -> Result<(), PathError> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(PathError::BadName(name.chars().take(64).collect()));
    }
    Ok(())
}

/// Parses a raw request path.
pub fn parse(raw: &str) -> Result<ContentPath, PathError> {
    if raw.len() > PATH_BYTES_MAX {
        return Err(PathError::TooLong);
    }
    let (namespace, rest) = if let Some(rest) = raw.strip_prefix("/huds/") {
        (Namespace::Huds, rest)
    } else if let Some(rest) = raw.strip_prefix("/ipfs/") {
        (Namespace::Ipfs, rest)
    } else if raw == "/huds" || raw == "/ipfs" {
        return Err(PathError::NoRoot);
    } else {
        return Err(PathError::NotContent);
    };
    let trailing_slash = rest.ends_with('/');
    let mut parts = rest.split('/');
    let root = percent_decode(parts.next().unwrap_or_default())?;
    if root.is_empty() {
        return Err(PathError::NoRoot);
    }
    check_name(&root)?;
    if namespace == Namespace::Ipfs && root.starts_with("huds:") {
        return Err(PathError::CapabilityUnderIpfs);
    }
    let mut names = Vec::new();
    for part in parts {
        // Empty parts (`a//b`, a trailing `/`) carry no name.
        if part.is_empty() {
            continue;
        }
        if part == "." || part == ".." {
            return Err(PathError::BadName(part.to_string()));
        }
        let name = percent_decode(part)?;
        check_name(&name)?;
        names.push(name);
        if names.len() > NAMES_MAX {
            return Err(PathError::TooDeep);
        }
    }
    Ok(ContentPath {
        namespace,
        root,
        names,
        trailing_slash,
    })
}

/// Percent-encodes one name for use in a link.
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, root: &str, names: &[&str]) {
        let p = parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(p.root, root, "{raw}");
        assert_eq!(p.names, names, "{raw}");
    }

    fn refuse(raw: &str, e: PathError) {
        assert_eq!(parse(raw), Err(e), "{raw}");
    }

    #[test]
    fn content_paths() {
        check("/huds/bafyx", "bafyx", &[]);
        check("/huds/bafyx/", "bafyx", &[]);
        check("/ipfs/bafyx/a/b.txt", "bafyx", &["a", "b.txt"]);
        check("/huds/huds:abc/a%20b/%C3%A9", "huds:abc", &["a b", "é"]);
        check("/huds/bafyx//a///b", "bafyx", &["a", "b"]);
        assert!(parse("/huds/bafyx/dir/").expect("ok").trailing_slash);
        assert!(!parse("/huds/bafyx/dir").expect("ok").trailing_slash);
    }

    #[test]
    fn hostile_paths_are_refused() {
        refuse("/huds/", PathError::NoRoot);
        refuse("/huds", PathError::NoRoot);
        refuse("/etc/passwd", PathError::NotContent);
        refuse("/huds/bafyx/../x", PathError::BadName("..".into()));
        refuse("/huds/bafyx/%2e%2e/x", PathError::BadName("..".into()));
        refuse("/huds/bafyx/./x", PathError::BadName(".".into()));
        refuse("/huds/bafyx/a%2Fb", PathError::BadName("a/b".into()));
        refuse("/huds/bafyx/a%00b", PathError::BadName("a\0b".into()));
        refuse("/huds/bafyx/%zz", PathError::Encoding);
        refuse("/huds/bafyx/%4", PathError::Encoding);
        refuse("/huds/bafyx/%ff%fe", PathError::Encoding);
        refuse("/ipfs/huds:abc", PathError::CapabilityUnderIpfs);
        refuse(&format!("/huds/x/{}", "a".repeat(5000)), PathError::TooLong);
        refuse(&format!("/huds/x{}", "/a".repeat(65)), PathError::TooDeep);
    }

    #[test]
    fn names_encode_and_decode_back() {
        for name in ["a b", "é", "100%", "a?b#c", "x/y"] {
            assert_eq!(percent_decode(&encode_name(name)), Ok(name.to_string()));
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;

    proptest::proptest! {
        /// Whatever a client sends, parsing answers; accepted names are never `.`, `..` or hold a `/`.
        #[test]
        fn any_path_parses_or_is_refused(raw in "/(huds|ipfs|x)?/[ -~%]{0,200}") {
            if let Ok(p) = parse(&raw) {
                for n in &p.names {
                    proptest::prop_assert!(n != "." && n != ".." && !n.contains('/') && !n.is_empty());
                }
            }
        }

        #[test]
        fn any_bytes_decode_or_are_refused(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let text = String::from_utf8_lossy(&raw);
            let _ = percent_decode(&text);
        }
    }
}
