//! Directory listings as HTML, one page of `PAGE_ENTRIES` at a time (only the page's entries are fetched).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use cid::Cid;
use huds::read::{DirEntry, EntryKind};

use crate::Gateway;
use crate::error::GatewayError;
use crate::path::{ContentPath, encode_name};
use crate::serve::{cache_control, not_modified, not_modified_response, set};

pub const PAGE_ENTRIES: usize = 256;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn title(path: &ContentPath) -> String {
    // A capability is a secret: show only its start.
    let root: String = if path.root.starts_with("huds:") {
        format!("{}…", path.root.chars().take(16).collect::<String>())
    } else {
        path.root.clone()
    };
    let mut t = format!("/{root}/");
    for n in &path.names {
        t.push_str(n);
        t.push('/');
    }
    t
}

pub fn render(
    path: &ContentPath,
    cid: &Cid,
    entries: &[DirEntry],
    total: usize,
    page: usize,
) -> String {
    let pages = total.div_ceil(PAGE_ENTRIES).max(1);
    let title = escape(&title(path));
    let mut html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td{{padding:2px 12px}}code{{font-size:90%}}\
         td.size{{text-align:right}}</style></head><body>\n<h1>Index of {title}</h1>\n\
         <p>CID <code>{cid}</code> · {total} entries · page {page} of {pages}</p>\n<table>\n\
         <tr><th>name</th><th>size</th><th>CID</th></tr>\n"
    );
    if !path.names.is_empty() {
        html.push_str("<tr><td><a href=\"../\">..</a></td><td></td><td></td></tr>\n");
    }
    for e in entries {
        let slash = if e.kind == EntryKind::Directory {
            "/"
        } else {
            ""
        };
        let size = if e.kind == EntryKind::Directory {
            String::new()
        } else {
            e.size.to_string()
        };
        html.push_str(&format!(
            "<tr><td><a href=\"{}{slash}\">{}{slash}</a></td><td class=\"size\">{size}</td><td><code>{}</code></td></tr>\n",
            encode_name(&e.name),
            escape(&e.name),
            e.cid
        ));
    }
    html.push_str("</table>\n<p>");
    if page > 1 {
        html.push_str(&format!(
            "<a href=\"?page={}\">previous page</a> ",
            page - 1
        ));
    }
    if page < pages {
        html.push_str(&format!("<a href=\"?page={}\">next page</a>", page + 1));
    }
    html.push_str("</p>\n</body></html>\n");
    html
}

pub async fn respond(
    gw: Gateway,
    path: ContentPath,
    cid: Cid,
    page: Option<&str>,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, GatewayError> {
    let page: usize = match page {
        None => 1,
        Some(p) => p.parse().ok().filter(|&p| p >= 1).ok_or_else(|| {
            GatewayError::BadRequest(format!("page {p:?} is not a number from 1"))
        })?,
    };
    let etag = format!("W/\"{cid}.dir.{page}\"");
    let cache_control = cache_control(&path);
    if not_modified(headers, &etag) {
        return Ok(not_modified_response(&etag, cache_control));
    }
    let (g, p) = (gw.clone(), path.clone());
    let html = gw
        .blocking(move || {
            let reader = g.reader(&p.root)?;
            let skip = (page - 1).saturating_mul(PAGE_ENTRIES);
            let (entries, total) = reader.list_page(&cid, skip, PAGE_ENTRIES)?;
            if page > 1 && entries.is_empty() {
                return Err(GatewayError::NotFound(format!(
                    "the directory has {total} entries: there is no page {page}"
                )));
            }
            Ok(render(&p, &cid, &entries, total, page))
        })
        .await?;
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    set(h, header::ETAG, &etag);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(html.len()));
    if !head {
        gw.metrics().sent(html.len());
        *resp.body_mut() = Body::from(html);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_linked_encoded() {
        let path = crate::path::parse("/huds/bafyx/").expect("path");
        let cid = huds::cids::sha256_cid(huds::cids::RAW, b"x");
        let e = DirEntry {
            name: "<b>&\"x y\".txt".into(),
            cid,
            kind: EntryKind::File,
            size: 3,
        };
        let html = render(&path, &cid, &[e], 1, 1);
        assert!(html.contains("&lt;b&gt;&amp;&quot;x y&quot;.txt"), "{html}");
        assert!(
            html.contains("href=\"%3Cb%3E%26%22x%20y%22.txt\""),
            "{html}"
        );
        assert!(!html.contains("<b>"));
    }
}
