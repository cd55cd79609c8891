//! A hand-written SVG plot of the results: latency box plots on a log
//! scale (ours vs baseline per scenario) and bars for throughput and memory
//! (each pair scaled to the larger of the two, absolute values printed).

use std::fmt::Write as _;

use super::report::{Metric, Row, fmt_value};

const WIDTH: f64 = 1000.0;
const LABEL_W: f64 = 250.0;
const PLOT_X0: f64 = LABEL_W + 10.0;
const PLOT_X1: f64 = WIDTH - 90.0;
const LANE: f64 = 14.0;
const GROUP_GAP: f64 = 10.0;
const OURS: &str = "#2b6cb0";
const BASE: &str = "#a0a0a0";

/// Escape text for SVG element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Decade bounds `(lo, hi)` (powers of ten, lo < hi) covering all values > 0.
fn decades(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| *v > 0.0 && v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let mut hi = 10f64.powf(hi.log10().ceil());
    if hi <= lo {
        hi = lo * 10.0;
    }
    (lo, hi)
}

/// Render the plot. Always a complete document, also for no rows.
pub fn render(title: &str, rows: &[Row]) -> String {
    let latency: Vec<&Row> = rows
        .iter()
        .filter(|r| r.metric == Metric::Latency)
        .collect();
    let bars: Vec<&Row> = rows
        .iter()
        .filter(|r| r.metric != Metric::Latency)
        .collect();
    let group_h = 2.0 * LANE + GROUP_GAP;
    let lat_top = 80.0;
    let lat_h = latency.len() as f64 * group_h;
    let bar_top = lat_top + lat_h + 80.0;
    let height = bar_top + bars.len() as f64 * group_h + 40.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    legend(&mut s, 10.0, 42.0);

    // Latency box plots.
    let _ = writeln!(
        s,
        r#"<text x="10" y="{}" font-weight="bold">Latency (log scale): whiskers min..max, box p25..p75, bar p50, diamond p99</text>"#,
        lat_top - 12.0
    );
    let (lo, hi) = decades(
        latency
            .iter()
            .flat_map(|r| [r.ours.min, r.ours.max, r.baseline.min, r.baseline.max]),
    );
    let x = |v: f64| {
        let v = v.max(lo);
        PLOT_X0 + (v.log10() - lo.log10()) / (hi.log10() - lo.log10()) * (PLOT_X1 - PLOT_X0)
    };
    if !latency.is_empty() {
        let mut d = lo;
        while d <= hi * 1.000_001 {
            let gx = x(d);
            let _ = writeln!(
                s,
                r##"<line x1="{gx:.1}" y1="{lat_top}" x2="{gx:.1}" y2="{:.1}" stroke="#e0e0e0"/>"##,
                lat_top + lat_h
            );
            let _ = writeln!(
                s,
                r#"<text x="{gx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                lat_top + lat_h + 14.0,
                escape(&tick(d))
            );
            d *= 10.0;
        }
    }
    for (i, r) in latency.iter().enumerate() {
        let y = lat_top + i as f64 * group_h;
        label(&mut s, y + LANE, &format!("{} {}", r.server, r.scenario));
        for (lane, (sum, color)) in [(&r.ours, OURS), (&r.baseline, BASE)].iter().enumerate() {
            let cy = y + lane as f64 * LANE + LANE / 2.0;
            let (x0, x25, x50, x75, x99, x100) = (
                x(sum.min),
                x(sum.p25),
                x(sum.p50),
                x(sum.p75),
                x(sum.p99),
                x(sum.max),
            );
            let _ = writeln!(
                s,
                r#"<line x1="{x0:.1}" y1="{cy:.1}" x2="{x100:.1}" y2="{cy:.1}" stroke="{color}"/>"#
            );
            let _ = writeln!(
                s,
                r#"<rect x="{x25:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}" fill-opacity="0.35" stroke="{color}"/>"#,
                cy - LANE * 0.35,
                (x75 - x25).max(1.0),
                LANE * 0.7
            );
            let _ = writeln!(
                s,
                r#"<line x1="{x50:.1}" y1="{:.1}" x2="{x50:.1}" y2="{:.1}" stroke="{color}" stroke-width="2.5"/>"#,
                cy - LANE * 0.45,
                cy + LANE * 0.45
            );
            let _ = writeln!(
                s,
                r#"<path d="M{x99:.1} {:.1} l3 3 l-3 3 l-3 -3 z" fill="{color}"/>"#,
                cy - 3.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" fill="{color}">{}</text>"#,
                PLOT_X1 + 6.0,
                cy + 4.0,
                escape(&fmt_value(Metric::Latency, sum.p50))
            );
        }
    }

    // Throughput and memory bars.
    let _ = writeln!(
        s,
        r#"<text x="10" y="{}" font-weight="bold">Throughput (msg/s, higher is better) and memory (bytes, lower is better): medians, each pair scaled to its larger value</text>"#,
        bar_top - 12.0
    );
    for (i, r) in bars.iter().enumerate() {
        let y = bar_top + i as f64 * group_h;
        let what = super::report::unit_label(r);
        label(
            &mut s,
            y + LANE,
            &format!("{} {} ({what})", r.server, r.scenario),
        );
        let top = r.ours.p50.max(r.baseline.p50).max(f64::MIN_POSITIVE);
        for (lane, (v, color)) in [(r.ours.p50, OURS), (r.baseline.p50, BASE)]
            .iter()
            .enumerate()
        {
            let by = y + lane as f64 * LANE + 1.0;
            let w = (v / top).clamp(0.0, 1.0) * (PLOT_X1 - PLOT_X0);
            let _ = writeln!(
                s,
                r#"<rect x="{PLOT_X0}" y="{by:.1}" width="{w:.1}" height="{:.1}" fill="{color}"/>"#,
                LANE - 2.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" fill="{color}">{}</text>"#,
                PLOT_X0 + w + 4.0,
                by + LANE - 4.0,
                escape(&fmt_value(r.metric, *v))
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// A decade tick label: 1us, 10us, ..., 1ms, ..., 1s.
fn tick(us: f64) -> String {
    let (v, unit) = if us < 1e3 {
        (us, "us")
    } else if us < 1e6 {
        (us / 1e3, "ms")
    } else {
        (us / 1e6, "s")
    };
    format!("{}{unit}", (v * 1e6).round() / 1e6)
}

fn label(s: &mut String, y: f64, text: &str) {
    let _ = writeln!(
        s,
        r#"<text x="{LABEL_W}" y="{:.1}" text-anchor="end">{}</text>"#,
        y + 4.0,
        escape(text)
    );
}

fn legend(s: &mut String, x: f64, y: f64) {
    for (i, (name, color)) in [
        ("ours (durable-streams-client)", OURS),
        ("raw hyper baseline", BASE),
    ]
    .iter()
    .enumerate()
    {
        let lx = x + i as f64 * 230.0;
        let _ = writeln!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            y - 10.0,
            lx + 16.0,
            y,
            escape(name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row> {
        let mut v = vec![
            Row::new(
                "rust",
                "append<100B>&co",
                Metric::Latency,
                "us",
                vec![100.0, 120.0, 900.0, 150.0],
                vec![80.0, 90.0, 400.0],
            )
            .unwrap(),
            Row::new(
                "node",
                "producer",
                Metric::Throughput,
                "msg/s",
                vec![1e5, 2e5],
                vec![3e5],
            )
            .unwrap(),
        ];
        v.push(
            Row::new(
                "node",
                "fanout-10",
                Metric::Memory,
                "B",
                vec![5e4],
                vec![2e4],
            )
            .unwrap(),
        );
        v
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(escape(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
    }

    #[test]
    fn renders_a_complete_document() {
        let svg = render("t & t", &rows());
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert!(svg.contains("append&lt;100B&gt;&amp;co"));
        assert!(!svg.contains("append<100B>"));
        assert!(svg.contains("t &amp; t"));
        // Every opened text element is closed.
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        // Two boxes for the latency row, two bars per bar row (+ background, legend).
        assert_eq!(svg.matches("<rect").count(), 1 + 2 + 2 + 2 * 2);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn renders_without_rows() {
        let svg = render("empty", &[]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn tick_labels() {
        assert_eq!(tick(1.0), "1us");
        assert_eq!(tick(100.0), "100us");
        assert_eq!(tick(1_000.0), "1ms");
        assert_eq!(tick(10_000_000.0), "10s");
        assert_eq!(tick(0.1), "0.1us");
    }

    #[test]
    fn decades_cover_values() {
        assert_eq!(decades([150.0, 2_000.0].into_iter()), (100.0, 10_000.0));
        assert_eq!(decades([100.0].into_iter()), (100.0, 1000.0));
        assert_eq!(decades(std::iter::empty()), (1.0, 10.0));
    }
}
