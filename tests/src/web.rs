//! The web app from the outside: a minimal HTTP/1.1 GET (no client crate)
//! and the headless-Chromium test's prerequisites (Debian's `chromium`,
//! `playwright-core` from the committed `tests/web/package-lock.json`).

use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header lines, lowercase names (`content-type: text/html`).
    pub head: String,
    pub body: String,
}

/// `GET path` on 127.0.0.1:`port` with extra header lines; reads to close.
pub fn http_get(port: u16, path: &str, headers: &[&str]) -> anyhow::Result<HttpResponse> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no HTTP head in the answer")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status")?;
    Ok(HttpResponse {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    })
}

/// `tests/web`: the Node test of the web app.
pub fn web_test_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// Chromium to drive: `$CHROMIUM`, else Debian's `/usr/bin/chromium`.
pub fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Makes sure Chromium and `playwright-core` are there: installs Debian's
/// `chromium` when root, and runs `npm ci` (never a browser download) when
/// `tests/web/node_modules` is missing. Says what to install otherwise.
pub fn prepare_browser_test() -> anyhow::Result<PathBuf> {
    let dir = web_test_dir();
    if !chromium().exists() {
        if !is_root() {
            bail!(
                "{} not found: install Debian's chromium (`sudo apt-get install chromium`) or set CHROMIUM",
                chromium().display()
            );
        }
        let ok = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null",
            ])
            .status()
            .context("apt-get")?
            .success();
        if !ok || !chromium().exists() {
            bail!("apt-get install chromium failed");
        }
    }
    if !dir.join("node_modules/playwright-core").exists() {
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .status()
            .context("npm (Node.js 18+ and npm are needed for the browser test)")?
            .success();
        if !ok {
            bail!("npm ci in {} failed", dir.display());
        }
    }
    Ok(dir)
}

/// Where the browser test saves its screenshots: `$CARGO_TARGET_DIR/web-screenshots`,
/// else next to the binaries' profile folder.
pub fn screenshot_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("web-screenshots");
    }
    crate::bin("fedpegd")
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("web-screenshots"))
        .unwrap_or_else(|| PathBuf::from("web-screenshots"))
}
