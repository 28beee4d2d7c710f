//! `fedpeg recover`: recover the federation's bitcoin with the genesis
//! backup keys once the federation is gone (the emergency branch of every
//! federation address, open `csv_blocks` after each output confirmed).
//!
//! It needs no member and no fedpeg node: the genesis file, a bitcoind
//! (any, pruned is fine: it reads the UTXO set with `scantxoutset`), and the
//! accounts whose deposit addresses to scan (deposit addresses are tweaked
//! per account, so they cannot be found without the account list; change is
//! always scanned). The accounts come from a file (one fedpeg address per
//! line) and/or from any surviving node, member or observer
//! (`--accounts-from-node`, the accounts of the deposits it holds).
//!
//! Steps: scan and report each output with the blocks until it can be
//! swept; with `--to`, build the sweep of the open ones (PSBT), sign it with
//! the `--backup-key` files, and broadcast it, or write it with
//! `--psbt-out` for other holders; `--psbt-in` adds signatures to such a
//! PSBT and broadcasts it once it has enough.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use fedpeg_ledger::account::AccountId;
use fedpeg_ledger::genesis::{ChainSpec, Genesis};
use fedpeg_peg::bitcoin::{address::NetworkUnchecked, psbt::Psbt, Address, ScriptBuf};
use fedpeg_peg::chain::{BitcoinChain, RpcAuth, RpcChain, ScannedOutput};
use fedpeg_peg::deposit::Tweak;
use fedpeg_peg::federation::Federation;
use fedpeg_peg::recovery::{psbt_from_base64, RecoveryInput};
use fedpeg_proto::v1 as pb;
use serde_json::{json, Value};

use super::Context;
use crate::client::status_error;
use crate::report::{Printer, Report};

/// What `fedpeg recover` was asked to do.
pub struct Args<'a> {
    pub genesis: &'a Path,
    pub bitcoind_url: &'a str,
    pub bitcoind_cookie: Option<&'a Path>,
    pub bitcoind_user: Option<&'a str>,
    pub bitcoind_password: Option<&'a str>,
    pub accounts: Option<&'a Path>,
    pub accounts_from_node: bool,
    pub backup_keys: &'a [PathBuf],
    pub to: Option<&'a str>,
    pub fee_rate: u64,
    pub psbt_out: Option<&'a Path>,
    pub psbt_in: Option<&'a Path>,
    pub epochs: Option<&'a Path>,
    pub epoch: Option<u32>,
}

/// Runs `fedpeg recover`.
pub async fn run(ctx: &Context<'_>, out: &mut Printer, a: &Args<'_>) -> anyhow::Result<Report> {
    let spec = load_genesis(a.genesis)?;
    let fed = match a.epochs {
        None => spec
            .peg_federation()
            .context("the genesis federation is invalid")?,
        Some(path) => epoch_federation(&spec, path, a.epoch)?,
    };
    if fed.emergency().is_none() {
        bail!(
            "{} has no emergency branch (no backup keys): the federation's coins can only be spent by its members",
            a.genesis.display()
        );
    }
    let secrets = load_backup_keys(a.backup_keys)?;
    let chain = bitcoind(a)?;
    // Every input is checked before bitcoind is asked anything.
    let to = a.to.map(|to| parse_destination(to, &fed)).transpose()?;
    if let Some(path) = a.psbt_in {
        let Some(to) = to else {
            bail!("--psbt-in needs --to ADDRESS: the address you expect the sweep to pay, so that a PSBT paying anyone else is never signed");
        };
        return sign_psbt_in(&fed, &chain, path, &secrets, (&to, a.fee_rate), a.psbt_out);
    }
    let tweaks = tweaks(ctx, a, &spec).await?;
    let (found, tip) = scan(&fed, &chain, &tweaks)?;
    let report = scan_report(&fed, &found, tip, &spec);
    let Some(to) = to else {
        return Ok(
            report.with_note("pass --to ADDRESS to sweep the outputs whose timelock has passed")
        );
    };
    out.emit(&report)?;
    let open: Vec<RecoveryInput> = found
        .iter()
        .filter(|i| fed.emergency_blocks_remaining(i.confirmed_height, tip) == Some(0))
        .cloned()
        .collect();
    if open.is_empty() {
        let soonest = found
            .iter()
            .filter_map(|i| fed.emergency_blocks_remaining(i.confirmed_height, tip))
            .min();
        match soonest {
            Some(b) => bail!("no output can be swept yet: the first timelock opens in {b} block(s); run this again then"),
            None => bail!("no federation output found to sweep; check --accounts / --accounts-from-node and that bitcoind is synced"),
        }
    }
    // One standard-size sweep per run: the rest after it confirms.
    let most = fed.max_sweep_inputs();
    if open.len() > most {
        eprintln!(
            "{} outputs can be swept; this sweep takes {most} (a standard transaction's most); run this again for the rest once it confirms",
            open.len()
        );
    }
    let open = &open[..open.len().min(most)];
    let mut psbt = fed.emergency_sweep_psbt(open, &to, a.fee_rate, tip)?;
    fed.sign_emergency_psbt(&mut psbt, &secrets)?;
    finish(&fed, &chain, psbt, a.psbt_out)
}

/// The peg federation of an epoch from a `fedpeg federation show --json`
/// file: its members' peg keys (member order), its threshold, and the
/// genesis emergency branch (the same in every epoch).
fn epoch_federation(
    spec: &ChainSpec,
    path: &Path,
    epoch: Option<u32>,
) -> anyhow::Result<Federation> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --epochs {}", path.display()))?;
    let v: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "--epochs {} is not JSON (write it with `fedpeg --json federation show`)",
            path.display()
        )
    })?;
    let number = match epoch {
        Some(n) => u64::from(n),
        None => v["epoch"]
            .as_u64()
            .with_context(|| format!("--epochs {}: no \"epoch\" in force", path.display()))?,
    };
    let e = v["epochs"]
        .as_array()
        .and_then(|list| list.iter().find(|e| e["number"].as_u64() == Some(number)))
        .with_context(|| format!("--epochs {} has no epoch {number}", path.display()))?;
    let keys = e["members"]
        .as_array()
        .context("the epoch lists no members")?
        .iter()
        .map(|m| {
            let hex_key = m["peg_key"].as_str().unwrap_or_default();
            hex::decode(hex_key)
                .ok()
                .and_then(|b| fedpeg_peg::bitcoin::secp256k1::PublicKey::from_slice(&b).ok())
                .with_context(|| format!("epoch {number}: peg key '{hex_key}' is not a compressed secp256k1 public key"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let m = e["peg_threshold"]
        .as_u64()
        .and_then(|m| u32::try_from(m).ok())
        .with_context(|| format!("epoch {number}: no peg_threshold"))?;
    let fed = spec
        .ledger_params()
        .build_federation(&keys, m)
        .with_context(|| format!("epoch {number}: its peg keys form no descriptor"))?;
    eprintln!(
        "epoch {number}: {}-of-{} peg keys with the genesis backup keys",
        m,
        keys.len()
    );
    Ok(fed)
}

fn load_genesis(path: &Path) -> anyhow::Result<ChainSpec> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read genesis file {} (--genesis)", path.display()))?;
    Ok(Genesis::parse(&bytes, &path.display().to_string())?)
}

fn load_backup_keys(
    paths: &[PathBuf],
) -> anyhow::Result<Vec<fedpeg_peg::bitcoin::secp256k1::SecretKey>> {
    paths
        .iter()
        .map(|p| {
            fedpeg_keys::load_backup_key(p).with_context(|| format!("--backup-key {}", p.display()))
        })
        .collect()
}

fn bitcoind(a: &Args<'_>) -> anyhow::Result<RpcChain> {
    let auth = match (a.bitcoind_cookie, a.bitcoind_user, a.bitcoind_password) {
        (Some(c), None, None) => RpcAuth::CookieFile(c.to_path_buf()),
        (None, Some(u), Some(p)) => RpcAuth::UserPass {
            user: u.to_string(),
            password: p.to_string(),
        },
        _ => bail!("give bitcoind's RPC credentials: --bitcoind-cookie FILE, or --bitcoind-user and --bitcoind-password"),
    };
    // scantxoutset reads the whole UTXO set: minutes on mainnet.
    Ok(RpcChain::new(a.bitcoind_url, auth)?.with_timeout(Duration::from_secs(1800)))
}

/// Change, and the deposit address of every account given.
async fn tweaks(ctx: &Context<'_>, a: &Args<'_>, spec: &ChainSpec) -> anyhow::Result<Vec<Tweak>> {
    let mut accounts: Vec<String> = Vec::new();
    if let Some(path) = a.accounts {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --accounts {}", path.display()))?;
        accounts.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    let from_file = accounts.len();
    if a.accounts_from_node {
        let (found, height) = accounts_from_node(ctx).await?;
        eprintln!(
            "{} account(s) registered on the node up to height {height} (deposit addresses are derived per account: an account neither there nor in --accounts is not scanned)",
            found.len()
        );
        accounts.extend(found);
    }
    if from_file > 0 {
        eprintln!("{from_file} account(s) from --accounts");
    }
    let mut tweaks = vec![Tweak::Change];
    for (i, s) in accounts.iter().enumerate() {
        let id = AccountId::from_address(s, spec.hrp()).map_err(|e| {
            anyhow::anyhow!(
                "account #{} '{s}' is not a fedpeg address of this chain: {e}",
                i + 1
            )
        })?;
        let t = Tweak::Deposit(id.0);
        if !tweaks.contains(&t) {
            tweaks.push(t);
        }
    }
    Ok(tweaks)
}

/// Every account a surviving node (member or observer) saw registered for
/// deposits, from its event history (so deposits confirmed but never
/// minted are found too), plus the accounts of the UTXOs it holds; and the
/// height it had.
async fn accounts_from_node(ctx: &Context<'_>) -> anyhow::Result<(Vec<String>, u64)> {
    use pb::chain_event::Event;
    let c = ctx.connect().await?;
    let tip = c
        .node()
        .get_status(pb::GetStatusRequest {})
        .await
        .map_err(|s| status_error("status (for --accounts-from-node)", s))?
        .into_inner()
        .height;
    let r = c
        .wallet()
        .get_reserves(pb::GetReservesRequest {})
        .await
        .map_err(|s| status_error("reserves (for --accounts-from-node)", s))?
        .into_inner();
    let mut accounts: std::collections::BTreeSet<String> = r
        .utxos
        .into_iter()
        .filter(|u| !u.account.is_empty())
        .map(|u| u.account)
        .collect();
    let mut page_token = String::new();
    // Height 0: no block, no registration.
    let mut more = tip > 0;
    while more {
        let page = c
            .explorer()
            .list_blocks(pb::ListBlocksRequest {
                from_height: 1,
                to_height: tip,
                page_size: 100,
                page_token,
                include_raw: false,
            })
            .await
            .map_err(|s| status_error("blocks (for --accounts-from-node)", s))?
            .into_inner();
        for e in page.blocks.iter().flat_map(|b| &b.events) {
            if let Some(Event::DepositAddressRegistered(r)) = &e.event {
                accounts.insert(r.account.clone());
            }
        }
        more = !page.next_page_token.is_empty();
        page_token = page.next_page_token;
    }
    Ok((accounts.into_iter().collect(), tip))
}

/// The federation outputs paying any of `tweaks`, and the tip height.
fn scan(
    fed: &Federation,
    chain: &RpcChain,
    tweaks: &[Tweak],
) -> anyhow::Result<(Vec<RecoveryInput>, u64)> {
    let mut scripts = Vec::new();
    let mut descriptors = Vec::new();
    for t in tweaks {
        scripts.push((fed.script_pubkey(t)?, *t));
        descriptors.push(fed.descriptor(t)?);
    }
    let info = chain.node_info().context("bitcoind (--bitcoind-url)")?;
    let want = network_name(fed.network());
    if info.chain != want {
        bail!(
            "bitcoind is on {} but the genesis pegs {want}; point --bitcoind-url at a {want} node",
            info.chain
        );
    }
    let (found, tip) = chain
        .scan_descriptors(&descriptors)
        .context("scanning bitcoind's UTXO set")?;
    let inputs = found
        .iter()
        .filter_map(|o: &ScannedOutput| {
            let tweak = scripts.iter().find(|(s, _)| *s == o.script_pubkey)?.1;
            Some(RecoveryInput {
                outpoint: o.outpoint,
                amount: o.amount,
                tweak,
                confirmed_height: o.height,
            })
        })
        .collect();
    Ok((inputs, tip))
}

fn network_name(n: fedpeg_peg::bitcoin::Network) -> &'static str {
    use fedpeg_peg::bitcoin::Network;
    match n {
        Network::Bitcoin => "main",
        Network::Testnet => "test",
        Network::Signet => "signet",
        Network::Regtest => "regtest",
        _ => "testnet4",
    }
}

fn scan_report(fed: &Federation, found: &[RecoveryInput], tip: u64, spec: &ChainSpec) -> Report {
    let mut text = vec![format!(
        "{} federation output(s) at bitcoin height {tip}, {} sats",
        found.len(),
        found.iter().map(|i| i.amount.to_sat()).sum::<u64>()
    )];
    let mut rows = Vec::new();
    for i in found {
        let blocks = fed
            .emergency_blocks_remaining(i.confirmed_height, tip)
            .unwrap_or(0);
        let owner = match i.tweak {
            Tweak::Change => "change".to_string(),
            Tweak::Deposit(a) => format!("deposit of {}", AccountId(a).to_address(spec.hrp())),
        };
        let when = if blocks == 0 {
            "can be swept now".to_string()
        } else {
            format!("can be swept in {blocks} block(s)")
        };
        text.push(format!(
            "  {} {} sats {owner}: {when}",
            i.outpoint,
            i.amount.to_sat()
        ));
        rows.push(
            json!({"outpoint": i.outpoint.to_string(), "amount": i.amount.to_sat(),
            "owner": owner, "confirmed_height": i.confirmed_height, "blocks_remaining": blocks}),
        );
    }
    Report::new(text.join("\n"), json!({"tip": tip, "outputs": rows}))
}

fn parse_destination(to: &str, fed: &Federation) -> anyhow::Result<ScriptBuf> {
    let a: Address<NetworkUnchecked> = to
        .parse()
        .with_context(|| format!("--to '{to}' is not a Bitcoin address"))?;
    let a = a.require_network(fed.network()).with_context(|| {
        format!(
            "--to '{to}' is not an address of {}, the network of the genesis",
            fed.network()
        )
    })?;
    Ok(a.script_pubkey())
}

/// `--psbt-in`: add this holder's signatures, then finish like a new sweep.
/// The PSBT must pay only `to`, the address the holder expects, at no more
/// than `max_rate` sat/vB (`--fee-rate`): another holder (or whoever
/// carried the file) could have changed the output or the fee.
fn sign_psbt_in(
    fed: &Federation,
    chain: &RpcChain,
    path: &Path,
    secrets: &[fedpeg_peg::bitcoin::secp256k1::SecretKey],
    (to, max_rate): (&ScriptBuf, u64),
    psbt_out: Option<&Path>,
) -> anyhow::Result<Report> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --psbt-in {}", path.display()))?;
    let mut psbt = psbt_from_base64(&text)
        .with_context(|| format!("--psbt-in {} is not a base64 PSBT", path.display()))?;
    let outputs = &psbt.unsigned_tx.output;
    if outputs.len() != 1 || outputs[0].script_pubkey != *to {
        bail!(
            "--psbt-in {} does not pay only the --to address; refusing to sign it",
            path.display()
        );
    }
    let (fee, vbytes) = fed.check_sweep_fee(&psbt, max_rate)?;
    eprintln!(
        "signing a sweep of {} sats to the --to address, fee {fee} sats (about {vbytes} vB)",
        outputs[0].value.to_sat()
    );
    fed.sign_emergency_psbt(&mut psbt, secrets)?;
    finish(fed, chain, psbt, psbt_out)
}

/// Writes the PSBT (`--psbt-out`) or finalizes and broadcasts it.
fn finish(
    fed: &Federation,
    chain: &RpcChain,
    psbt: Psbt,
    psbt_out: Option<&Path>,
) -> anyhow::Result<Report> {
    if let Some(out) = psbt_out {
        std::fs::write(out, format!("{psbt}\n"))
            .with_context(|| format!("cannot write --psbt-out {}", out.display()))?;
        let sigs: usize = psbt.inputs.iter().map(|i| i.partial_sigs.len()).sum();
        return Ok(Report::new(
            format!(
                "wrote the sweep PSBT ({} input(s), {sigs} signature(s)) to {}; each backup holder adds signatures with `fedpeg recover --psbt-in`",
                psbt.inputs.len(),
                out.display()
            ),
            json!({"psbt_out": out, "inputs": psbt.inputs.len(), "signatures": sigs}),
        ));
    }
    let tx = fed.finalize_emergency_psbt(psbt)?;
    let txid = chain.broadcast(&tx).map_err(|e| {
        anyhow::anyhow!(
            "bitcoind refused the sweep: {e} (non-BIP68-final means a timelock has not passed yet)"
        )
    })?;
    let value: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
    Ok(Report::new(
        format!("broadcast the sweep {txid}: {value} sats to the --to address"),
        json!({"txid": txid.to_string(), "amount": value}) as Value,
    ))
}
