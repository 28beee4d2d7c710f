//! HTML building blocks: escaping (every piece of data goes through
//! [`esc`] or a helper that calls it), the page frame, links, amounts and
//! times. No template engine: pages are `format!` over escaped values.

use std::fmt::Write as _;

/// `s` escaped for HTML text and double-quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
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

/// `s` as one URL path segment or query value (percent-encoded).
pub(crate) fn url(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `<a href="href">text</a>`, both escaped.
pub(crate) fn link(href: &str, text: &str) -> String {
    format!("<a href=\"{}\">{}</a>", esc(href), esc(text))
}

/// A long id shortened for tables (`8f0c1b5e…2b1a`), linked to `href`, full id in the title.
pub(crate) fn short_link(href: &str, id: &str) -> String {
    let short = if id.chars().count() > 16 {
        let head: String = id.chars().take(10).collect();
        let tail: String = id
            .chars()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{head}…{tail}")
    } else {
        id.to_string()
    };
    format!(
        "<a href=\"{}\" title=\"{}\" class=\"mono\">{}</a>",
        esc(href),
        esc(id),
        esc(&short)
    )
}

pub(crate) fn block_href(height: u64) -> String {
    format!("/block/{height}")
}
pub(crate) fn tx_href(txid: &str) -> String {
    format!("/tx/{}", url(txid))
}
pub(crate) fn account_href(address: &str) -> String {
    format!("/account/{}", url(address))
}
pub(crate) fn track_href(q: &str) -> String {
    format!("/track?q={}", url(q))
}

/// Sats as BTC with 8 decimals (`0.00150000 BTC`).
pub(crate) fn btc(sats: u64) -> String {
    format!("{}.{:08} BTC", sats / 100_000_000, sats % 100_000_000)
}

/// How long ago `ms` (since the epoch) was, from `now_ms`: `5 s ago`, `3 min ago`.
pub(crate) fn ago(ms: u64, now_ms: u64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let s = now_ms.saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// A UTC timestamp `2026-12-02 11:45:03 UTC` from ms since the epoch.
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), valid for any u64 day count here.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// An ETA in seconds as `~20 min`.
pub(crate) fn eta(seconds: u64) -> String {
    match seconds {
        0 => "now".into(),
        1..=3599 => format!("~{} min", seconds.div_ceil(60)),
        _ => format!("~{:.1} h", seconds as f64 / 3600.0),
    }
}

/// A two-column table of (label, already-escaped HTML value).
pub(crate) fn facts(rows: &[(&str, String)]) -> String {
    let mut o = String::from("<table class=\"facts\">");
    for (k, v) in rows {
        let _ = write!(o, "<tr><th>{}</th><td>{v}</td></tr>", esc(k));
    }
    o.push_str("</table>");
    o
}

/// The page frame: head, navigation with the search box, `body`.
pub(crate) fn page(title: &str, chain: &str, search: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · fedpeg</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"/static/app.css\">\
<script src=\"/static/app.js\" defer></script></head><body>\
<header><a class=\"brand\" href=\"/\">fedpeg</a> <span class=\"chain\">{chain}</span>\
<nav><a href=\"/\">Blocks</a><a href=\"/track\">Peg tracker</a><a href=\"/audit\">Federation audit</a></nav>\
<form action=\"/search\" method=\"get\" role=\"search\"><input name=\"q\" id=\"search\" value=\"{search}\" \
maxlength=\"{max}\" placeholder=\"height, hash, txid, address, outpoint\" aria-label=\"Search\">\
<button type=\"submit\">Search</button></form></header>\
<main>{body}</main><footer>Served by this node; read-only. JSON API: <a href=\"/api/v1/openapi.yaml\">/api/v1</a></footer></body></html>\n",
        title = esc(title),
        chain = esc(chain),
        search = esc(search),
        max = super::MAX_QUERY_CHARS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_data_is_escaped() {
        assert_eq!(
            esc("<img src=x onerror='a()'>&\""),
            "&lt;img src=x onerror=&#39;a()&#39;&gt;&amp;&quot;"
        );
        assert_eq!(
            link("/x?a=\"1\"", "<b>"),
            "<a href=\"/x?a=&quot;1&quot;\">&lt;b&gt;</a>"
        );
        assert_eq!(url("a b/c:d"), "a%20b%2Fc%3Ad");
        assert!(page("<t>", "c", "\"><script>", "").contains("value=\"&quot;&gt;&lt;script&gt;\""));
    }

    #[test]
    fn amounts_and_times_read_well() {
        assert_eq!(btc(150_000), "0.00150000 BTC");
        assert_eq!(btc(2_100_000_000_000_000), "21000000.00000000 BTC");
        assert_eq!(ago(1_000, 6_000), "5 s ago");
        assert_eq!(ago(0, 6_000), "never");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_211_903_000), "2026-12-02 11:45:03 UTC");
        assert_eq!(eta(1200), "~20 min");
        assert_eq!(
            short_link("/tx/x", "0123456789abcdef0123"),
            "<a href=\"/tx/x\" title=\"0123456789abcdef0123\" class=\"mono\">0123456789…ef0123</a>"
        );
    }
}
