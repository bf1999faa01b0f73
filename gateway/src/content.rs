//! Content types: from the file name's extension, else from the first bytes.

const BY_EXTENSION: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("json", "application/json"),
    ("txt", "text/plain; charset=utf-8"),
    ("md", "text/markdown; charset=utf-8"),
    ("csv", "text/csv; charset=utf-8"),
    ("xml", "application/xml"),
    ("svg", "image/svg+xml"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("ico", "image/x-icon"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("wav", "audio/wav"),
    ("pdf", "application/pdf"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("wasm", "application/wasm"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("car", "application/vnd.ipld.car"),
];

const BY_MAGIC: &[(&[u8], &str)] = &[
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"\0asm", "application/wasm"),
    (b"OggS", "audio/ogg"),
];

pub const OCTET_STREAM: &str = "application/octet-stream";
pub const TEXT: &str = "text/plain; charset=utf-8";

/// The content type of a file called `name` that begins with `head`.
pub fn content_type(name: Option<&str>, head: &[u8]) -> &'static str {
    if let Some(ext) = name.and_then(|n| n.rsplit_once('.')).map(|(_, e)| e) {
        let ext = ext.to_ascii_lowercase();
        if let Some((_, t)) = BY_EXTENSION.iter().find(|(e, _)| *e == ext) {
            return t;
        }
    }
    sniff(head)
}

fn sniff(head: &[u8]) -> &'static str {
    if let Some((_, t)) = BY_MAGIC.iter().find(|(m, _)| head.starts_with(m)) {
        return t;
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return "image/webp";
    }
    let text = trim_utf8(head);
    let lower = text.trim_start().to_ascii_lowercase();
    if lower.starts_with("<!doctype html") || lower.starts_with("<html") {
        return "text/html; charset=utf-8";
    }
    if lower.starts_with("<svg") {
        return "image/svg+xml";
    }
    let binary = text.len() + 3 < head.len()
        || text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\x0c'));
    if binary { OCTET_STREAM } else { TEXT }
}

/// The longest valid UTF-8 prefix of `bytes` (a head may end inside a character).
fn trim_utf8(bytes: &[u8]) -> &str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_from_names_then_bytes() {
        let check = |name: Option<&str>, head: &[u8], t: &str| {
            assert_eq!(content_type(name, head), t, "{name:?}");
        };
        check(Some("index.HTML"), b"", "text/html; charset=utf-8");
        check(Some("a.png"), b"text", "image/png");
        check(Some("noext"), b"\x89PNG\r\n\x1a\nxxxx", "image/png");
        check(None, b"  <!DOCTYPE html><p>", "text/html; charset=utf-8");
        check(None, b"hello\nworld \xc3", TEXT);
        check(None, b"", TEXT);
        check(None, b"\x00\x01\x02binary", OCTET_STREAM);
        check(Some("x.unknown"), b"\xff\xfe\xfd\xfc\xfb", OCTET_STREAM);
    }
}
