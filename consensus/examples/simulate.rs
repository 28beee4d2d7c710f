//! Run many seeded simulations of the consensus engine and check safety and liveness.
//!
//! ```text
//! cargo run --release -p fedpeg-consensus --example simulate -- \
//!     --members 7 --byzantine 2 --seeds 2000 [--start 0] [--seed S] \
//!     [--mutant none|no-lock|weak-quorum|no-wal] [--no-faults] [--verbose]
//! ```
//!
//! Prints every failing seed with a replay command, then a final line
//! `runs=N safety_violations=X liveness_failures=Y heights_decided=...
//! heights_per_sec=... msgs_per_height=...`, and exits 1 if X + Y > 0.

use std::process::ExitCode;
use std::time::Instant;

use fedpeg_consensus::sim::{run, SimConfig, SimMutant};

const USAGE: &str =
    "usage: simulate [--members N] [--byzantine F] [--seeds K] [--start S] [--seed S] \
[--mutant none|no-lock|weak-quorum|no-wal] [--no-faults] [--verbose]

  --members N     validators per run (default 4)
  --byzantine F   Byzantine validators per run (default (N-1)/3)
  --seeds K       number of seeds to run (default 100)
  --start S       first seed (default 0)
  --seed S        run only seed S (replay a failure)
  --mutant M      compile-time test mutant to enable (default none)
  --no-faults     no message loss, partitions or crashes (measures the clean path)
  --verbose       print one line per run
  --trace         print every signed message, decision and fault of each run";

struct Args {
    members: usize,
    byzantine: Option<usize>,
    seeds: u64,
    start: u64,
    mutant: SimMutant,
    faults: bool,
    verbose: bool,
    trace: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        members: 4,
        byzantine: None,
        seeds: 100,
        start: 0,
        mutant: SimMutant::None,
        faults: true,
        verbose: false,
        trace: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let num = |s: String, name: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{name}: `{s}` is not a number"))
        };
        match flag.as_str() {
            "--members" => a.members = num(value("--members")?, "--members")? as usize,
            "--byzantine" => {
                a.byzantine = Some(num(value("--byzantine")?, "--byzantine")? as usize)
            }
            "--seeds" => a.seeds = num(value("--seeds")?, "--seeds")?,
            "--start" => a.start = num(value("--start")?, "--start")?,
            "--seed" => {
                a.start = num(value("--seed")?, "--seed")?;
                a.seeds = 1;
                a.verbose = true;
            }
            "--trace" => a.trace = true,
            "--mutant" => {
                let m = value("--mutant")?;
                a.mutant = SimMutant::parse(&m).ok_or(format!("unknown mutant `{m}`"))?;
            }
            "--no-faults" => a.faults = false,
            "--verbose" => a.verbose = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown flag `{other}`")),
        }
    }
    if a.members == 0 || a.members > 100 {
        return Err("--members must be between 1 and 100".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let byzantine = args.byzantine.unwrap_or((args.members - 1) / 3);
    let mut cfg = SimConfig::new(args.members, byzantine);
    cfg.mutant = args.mutant;
    cfg.faults = args.faults;
    cfg.trace = args.trace;
    let mutant_flag = match args.mutant {
        SimMutant::None => String::new(),
        SimMutant::NoLock => " --mutant no-lock".into(),
        SimMutant::WeakQuorum => " --mutant weak-quorum".into(),
        SimMutant::NoWal => " --mutant no-wal".into(),
    };
    let started = Instant::now();
    let (mut runs, mut safety, mut liveness, mut heights, mut msgs, mut evidence, mut crashes) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut by_kind = std::collections::BTreeMap::new();
    for seed in args.start..args.start.saturating_add(args.seeds) {
        let r = run(&cfg, seed);
        for line in &r.trace {
            println!("{line}");
        }
        runs += 1;
        heights += r.heights_decided;
        msgs += r.messages;
        evidence += r.evidence;
        crashes += r.crashes;
        if args.verbose {
            println!(
                "seed={seed} ok={} heights={} messages={} evidence={} crashes={} virtual_ms={}",
                r.ok(),
                r.heights_decided,
                r.messages,
                r.evidence,
                r.crashes,
                r.virtual_ms
            );
        }
        if !r.violations.is_empty() {
            safety += 1;
            for v in &r.violations {
                *by_kind.entry(format!("{:?}", v.kind)).or_insert(0u64) += 1;
            }
            println!(
                "FAIL seed={seed} safety: {} ({} violations)",
                r.violations[0].detail,
                r.violations.len()
            );
        }
        if let Some(l) = &r.liveness_failure {
            liveness += 1;
            println!("FAIL seed={seed} liveness: {l}");
        }
        if !r.ok() {
            println!(
                "  replay: cargo run --release -p fedpeg-consensus --example simulate -- --members {} --byzantine {byzantine}{mutant_flag}{} --seed {seed}",
                args.members,
                if args.faults { "" } else { " --no-faults" }
            );
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let kinds: Vec<String> = by_kind.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    println!(
        "runs={runs} safety_violations={safety} liveness_failures={liveness} heights_decided={heights} heights_per_sec={:.0} msgs_per_height={:.1} evidence={evidence} crashes={crashes} wall_secs={secs:.1} violation_kinds=[{}]",
        heights as f64 / secs,
        msgs as f64 / (heights.max(1) as f64),
        kinds.join(",")
    );
    if safety + liveness > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
