//! Charts as inline SVG rendered on the server: no script, no library, and
//! the page works offline. One bar chart serves every series (commit
//! latency, blocks per minute, peg volume, coverage).

use super::html::esc;
use crate::telemetry::{BlockSample, CoverageSample};
use std::fmt::Write as _;

const W: f64 = 560.0;
const H: f64 = 140.0;
const PAD: f64 = 24.0;

/// One bar.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Bar {
    /// Tooltip, e.g. `height 42: 120 ms`.
    pub(crate) label: String,
    pub(crate) value: f64,
    /// Drawn in the warning colour.
    pub(crate) warn: bool,
}

/// A bar chart titled `title`, values in `unit`; a dashed line at `mark`
/// (e.g. 100 % coverage) when given.
pub(crate) fn bars(title: &str, unit: &str, data: &[Bar], mark: Option<f64>) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<figure class=\"chart\"><figcaption>{}</figcaption>",
        esc(title)
    );
    if data.is_empty() {
        o.push_str("<p class=\"muted\">No data yet: this node charts what it sees after it starts.</p></figure>");
        return o;
    }
    let max = data
        .iter()
        .map(|b| b.value)
        .chain(mark)
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let slot = (W - PAD) / data.len() as f64;
    let _ = write!(
        o,
        "<svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        esc(title)
    );
    let _ = write!(
        o,
        "<text x=\"0\" y=\"10\" class=\"axis\">{}</text><text x=\"0\" y=\"{}\" class=\"axis\">0</text>",
        esc(&format!("{} {unit}", short(max))),
        H - 2.0
    );
    for (i, b) in data.iter().enumerate() {
        let h = ((b.value.max(0.0) / max) * (H - PAD)).max(if b.value > 0.0 { 1.0 } else { 0.0 });
        let _ = write!(
            o,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" class=\"{}\"><title>{}</title></rect>",
            PAD + i as f64 * slot,
            H - 12.0 - h,
            (slot * 0.8).max(0.5),
            h,
            if b.warn { "bar warn" } else { "bar" },
            esc(&b.label)
        );
    }
    if let Some(m) = mark {
        let y = H - 12.0 - (m / max) * (H - PAD);
        let _ = write!(
            o,
            "<line x1=\"{PAD}\" x2=\"{W}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"mark\"/>"
        );
    }
    o.push_str("</svg></figure>");
    o
}

fn short(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Commit latency (proposal to finalization on this node) of recent blocks.
pub(crate) fn commit_latency(blocks: &[BlockSample]) -> String {
    let data: Vec<Bar> = blocks
        .iter()
        .rev()
        .take(60)
        .rev()
        .map(|b| {
            let ms = b.finalized_ms.saturating_sub(b.time_ms);
            Bar {
                label: format!("height {}: {ms} ms", b.height),
                value: ms as f64,
                warn: ms > 5_000,
            }
        })
        .collect();
    bars("Commit latency of the last blocks", "ms", &data, None)
}

/// Blocks finalized per minute over the last 30 minutes seen.
pub(crate) fn blocks_per_minute(blocks: &[BlockSample], now_ms: u64) -> String {
    let data = per_minute(blocks, now_ms, 30, |_| 1);
    bars(
        "Blocks per minute (last 30 min)",
        "blocks",
        &data
            .into_iter()
            .map(|(ago, n)| Bar {
                label: format!("{ago} min ago: {n} blocks"),
                value: n as f64,
                warn: false,
            })
            .collect::<Vec<_>>(),
        None,
    )
}

/// Sats minted and burned per minute over the last hour seen.
pub(crate) fn peg_volume(blocks: &[BlockSample], now_ms: u64) -> String {
    let data = per_minute(blocks, now_ms, 60, |b| b.minted.saturating_add(b.burned));
    bars(
        "Peg volume per minute, peg-ins + peg-outs (last hour)",
        "sats",
        &data
            .into_iter()
            .map(|(ago, v)| Bar {
                label: format!("{ago} min ago: {v} sats"),
                value: v as f64,
                warn: false,
            })
            .collect::<Vec<_>>(),
        None,
    )
}

/// Coverage (reserves / liabilities) over time, with the 100 % line.
pub(crate) fn coverage(samples: &[CoverageSample]) -> String {
    let data: Vec<Bar> = samples
        .iter()
        .rev()
        .take(120)
        .rev()
        .map(|c| {
            let pct = ratio_percent(c.reserves, c.liabilities);
            Bar {
                label: format!("{}: {pct:.1} %", super::html::utc(c.time_ms)),
                value: pct,
                warn: pct < 100.0,
            }
        })
        .collect();
    bars("Coverage over time", "%", &data, Some(100.0))
}

/// Reserves as a percentage of liabilities (100 when there are none).
pub(crate) fn ratio_percent(reserves: u64, liabilities: u64) -> f64 {
    if liabilities == 0 {
        100.0
    } else {
        reserves as f64 * 100.0 / liabilities as f64
    }
}

/// Sums `value` of blocks per minute for the last `minutes` minutes,
/// oldest first, as (minutes ago, sum).
fn per_minute(
    blocks: &[BlockSample],
    now_ms: u64,
    minutes: u64,
    value: impl Fn(&BlockSample) -> u64,
) -> Vec<(u64, u64)> {
    let mut sums = vec![0u64; minutes as usize];
    for b in blocks {
        let ago = now_ms.saturating_sub(b.finalized_ms) / 60_000;
        if ago < minutes {
            let i = (minutes - 1 - ago) as usize;
            sums[i] = sums[i].saturating_add(value(b));
        }
    }
    sums.into_iter()
        .enumerate()
        .map(|(i, v)| (minutes - 1 - i as u64, v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value_and_escape_labels() {
        let data = [
            Bar {
                label: "<a>".into(),
                value: 50.0,
                warn: false,
            },
            Bar {
                label: "b".into(),
                value: 100.0,
                warn: true,
            },
        ];
        let svg = bars("T", "ms", &data, None);
        assert!(svg.contains("&lt;a&gt;") && !svg.contains("<a>"));
        assert!(svg.contains("height=\"116.0\""), "{svg}");
        assert!(svg.contains("height=\"58.0\""), "{svg}");
        assert!(svg.contains("bar warn"));
        assert!(bars("T", "ms", &[], None).contains("No data yet"));
    }

    #[test]
    fn blocks_are_bucketed_per_minute_and_coverage_warns_under_100() {
        let b = |finalized_ms, minted| BlockSample {
            finalized_ms,
            minted,
            ..Default::default()
        };
        let now = 10 * 60_000;
        let sums = per_minute(
            &[b(now, 5), b(now - 30_000, 1), b(now - 61_000, 2), b(0, 9)],
            now,
            3,
            |b| b.minted,
        );
        assert_eq!(sums, [(2, 0), (1, 2), (0, 6)]);
        assert_eq!(ratio_percent(0, 0), 100.0);
        assert_eq!(ratio_percent(95, 100), 95.0);
        let svg = coverage(&[CoverageSample {
            time_ms: 0,
            reserves: 95,
            liabilities: 100,
        }]);
        assert!(svg.contains("bar warn") && svg.contains("class=\"mark\""));
    }
}
