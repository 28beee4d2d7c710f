//! Sets `FEDPEGD_VERSION` (`fedpegd::build_info::VERSION`): the crate
//! version, plus `+` and 12 hex digits of the git commit it is built from: `FEDPEG_GIT_COMMIT` when set (a build without a
//! git checkout, e.g. a container), else `git rev-parse HEAD` when this is a
//! git checkout and git is installed; otherwise none. Uncommitted changes
//! are not shown.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=FEDPEG_GIT_COMMIT");
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let commit = match std::env::var("FEDPEG_GIT_COMMIT") {
        Ok(c) => Some(c),
        Err(_) => {
            // Rebuild when HEAD moves: HEAD itself, the branch it names, and
            // packed refs. Only existing files: cargo reruns the script on
            // every build for a missing one.
            let branch = git(&dir, &["symbolic-ref", "-q", "HEAD"]);
            for name in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
                if let Some(p) = git(&dir, &["rev-parse", "--git-path", name]) {
                    let p = dir.join(p);
                    if p.exists() {
                        println!("cargo:rerun-if-changed={}", p.display());
                    }
                }
            }
            git(&dir, &["rev-parse", "HEAD"])
        }
    };
    // Only a hex commit id gets into the version string.
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let version = match commit
        .filter(|c| (7..=64).contains(&c.len()) && c.chars().all(|ch| ch.is_ascii_hexdigit()))
    {
        Some(c) => format!("{version}+{}", &c[..12.min(c.len())]),
        None => version,
    };
    println!("cargo:rustc-env=FEDPEGD_VERSION={version}");
}
