//! `report.html`: one self-contained page (inline SVG and CSS, no script)
//! with the verdicts, a timeline of the operations (one lane per process,
//! bars colored by outcome, fault windows shaded, operations a checker cites
//! outlined) and a scatter of latencies over time.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::checker::{CheckerResult, Validity};
use crate::faults::{FaultWindow, fault_windows};
use crate::operation::{History, Operation, Outcome, secs};

/// At most this many operations are drawn; the page says when more were left out.
const MAX_DRAWN: usize = 20_000;
const WIDTH: f64 = 1200.0;
const LEFT: f64 = 70.0;
const LANE: f64 = 14.0;
const AXIS: f64 = 24.0;
const SCATTER: f64 = 220.0;

/// Renders the report page.
pub fn report_html(history: &History, checks: &[CheckerResult], summary: &str) -> String {
    let end = history.end_ns().max(1);
    let windows = fault_windows(history);
    let cited: BTreeSet<usize> = checks.iter().flat_map(|c| c.cited_ops.iter().copied()).collect();
    let drawn = &history.ops[..history.ops.len().min(MAX_DRAWN)];
    let scale = Scale { end, width: WIDTH - LEFT - 30.0 };

    let mut html = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>jepsen-lite report</title>\n<style>\n\
         body{font:14px sans-serif;margin:1em 2em;color:#222}pre{background:#f6f6f6;padding:.8em;overflow:auto}\n\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}\n\
         .valid{color:#1f7a3a;font-weight:bold}.invalid{color:#b52a25;font-weight:bold}.unknown{color:#a66d00;font-weight:bold}\n\
         svg text{font:11px sans-serif}\n</style></head><body>\n<h1>jepsen-lite report</h1>\n",
    );
    html.push_str("<table><tr><th>checker</th><th>verdict</th></tr>\n");
    for c in checks {
        let class = match c.validity {
            Validity::Valid => "valid",
            Validity::Invalid => "invalid",
            Validity::Unknown => "unknown",
        };
        let _ =
            writeln!(html, "<tr><td>{}</td><td class=\"{class}\">{}</td></tr>", c.name, c.validity.label());
    }
    html.push_str("</table>\n");
    let _ = writeln!(html, "<h2>Summary</h2>\n<pre>{}</pre>", escape(summary));
    html.push_str(
        "<h2>Timeline</h2>\n<p>One lane per process; bars from invocation to completion: \
         <span class=\"valid\">ok</span>, <span class=\"invalid\">fail</span>, \
         <span class=\"unknown\">info</span> (faded: never completed). Grey bands: faults in effect. \
         Black outline: operations a checker cites. Hover for details.</p>\n",
    );
    if drawn.len() < history.ops.len() {
        let _ = writeln!(
            html,
            "<p>Only the first {} of {} operations are drawn.</p>",
            drawn.len(),
            history.ops.len()
        );
    }
    html.push_str(&timeline(drawn, &windows, &cited, &scale));
    html.push_str("<h2>Latency</h2>\n<p>Completed operations: latency (log scale) by invocation time.</p>\n");
    html.push_str(&latency_scatter(drawn, &windows, &scale));
    html.push_str("</body></html>\n");
    html
}

/// Maps nanoseconds to x coordinates.
struct Scale {
    end: u64,
    width: f64,
}

impl Scale {
    fn x(&self, t: u64) -> f64 {
        LEFT + self.width * (t.min(self.end) as f64 / self.end as f64)
    }
}

fn color(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "#2e9e4f",
        Outcome::Fail => "#d9534f",
        Outcome::Info => "#f0ad4e",
    }
}

fn timeline(ops: &[Operation], windows: &[FaultWindow], cited: &BTreeSet<usize>, scale: &Scale) -> String {
    let lanes: Vec<u32> = ops.iter().map(|o| o.process).collect::<BTreeSet<_>>().into_iter().collect();
    let height = AXIS + LANE * lanes.len() as f64 + 4.0;
    let mut svg =
        format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\">\n");
    bands(&mut svg, windows, scale, AXIS, height - AXIS);
    axis(&mut svg, scale, AXIS - 8.0);
    for (i, p) in lanes.iter().enumerate() {
        let y = AXIS + LANE * i as f64;
        // The lane's label names the process and what it did first.
        let f = ops.iter().find(|o| o.process == *p).map_or("", |o| o.op.name());
        let _ = writeln!(svg, "<text x=\"4\" y=\"{:.1}\">p{p} {f}</text>", y + 10.0);
    }
    for op in ops {
        let lane = lanes.binary_search(&op.process).unwrap_or(0);
        let y = AXIS + LANE * lane as f64 + 2.0;
        let x0 = scale.x(op.invoke_ns);
        let x1 = scale.x(op.complete_ns.unwrap_or(scale.end));
        let opacity = if op.complete_ns.is_none() { 0.4 } else { 0.9 };
        let stroke = if cited.contains(&op.id) { " stroke=\"#000\" stroke-width=\"2\"" } else { "" };
        let mut title = op.describe();
        if let Some(e) = &op.error {
            let _ = write!(title, " ({e})");
        }
        let _ = writeln!(
            svg,
            "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" \
             fill-opacity=\"{opacity}\"{stroke}><title>{}</title></rect>",
            (x1 - x0).max(1.0),
            LANE - 4.0,
            color(op.outcome),
            escape(&title)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn latency_scatter(ops: &[Operation], windows: &[FaultWindow], scale: &Scale) -> String {
    let top = 10.0;
    let bottom = SCATTER - AXIS;
    let points: Vec<(&Operation, f64)> = ops
        .iter()
        .filter_map(|o| o.complete_ns.map(|c| (o, (c.saturating_sub(o.invoke_ns) as f64 / 1e6).max(0.001))))
        .collect();
    let max_ms = points.iter().map(|(_, ms)| *ms).fold(1.0_f64, f64::max);
    let min_ms = points.iter().map(|(_, ms)| *ms).fold(max_ms, f64::min);
    // Whole decades from the fastest to the slowest operation.
    let low = min_ms.log10().floor();
    let decades = (max_ms.log10().ceil() - low).max(1.0);
    let y = |ms: f64| bottom - (bottom - top) * (ms.log10() - low) / decades;
    let mut svg =
        format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{SCATTER}\">\n");
    bands(&mut svg, windows, scale, top, bottom - top);
    axis(&mut svg, scale, SCATTER - 6.0);
    let mut decade = low;
    while decade <= low + decades {
        let ms = 10f64.powf(decade);
        let yy = y(ms);
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{WIDTH}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\
             <text x=\"4\" y=\"{:.1}\">{} ms</text>",
            yy + 4.0,
            ms
        );
        decade += 1.0;
    }
    for (op, ms) in points {
        let _ = writeln!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{}\"><title>{} — {ms:.3} ms</title></circle>",
            scale.x(op.invoke_ns),
            y(ms),
            color(op.outcome),
            escape(&op.describe())
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Shades the fault windows between `y` and `y + height`.
fn bands(svg: &mut String, windows: &[FaultWindow], scale: &Scale, y: f64, height: f64) {
    for w in windows {
        let x0 = scale.x(w.start_ns);
        let x1 = scale.x(w.end_ns.unwrap_or(scale.end));
        let end = w.end_ns.map_or_else(|| "never healed".to_string(), secs);
        let _ = writeln!(
            svg,
            "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"#888\" \
             fill-opacity=\"0.18\"><title>{} [{}..{end}]</title></rect>",
            (x1 - x0).max(1.0),
            escape(&w.description),
            secs(w.start_ns)
        );
    }
}

/// Time ticks along the width, labels at `y`.
fn axis(svg: &mut String, scale: &Scale, y: f64) {
    let seconds = scale.end as f64 / 1e9;
    let step = [0.001, 0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0]
        .into_iter()
        .find(|s| seconds / s <= 12.0)
        .unwrap_or(3600.0);
    let mut t = 0.0;
    while t <= seconds {
        let x = scale.x((t * 1e9) as u64);
        let _ = writeln!(svg, "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\">{t}s</text>");
        t += step;
    }
}

/// Escapes text for HTML and SVG.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{CheckConfig, check_all};
    use crate::history::{Event, Op};
    use crate::operation::PairingError;
    use crate::results::summary;

    fn history() -> Result<History, PairingError> {
        History::from_events(vec![
            Event::invoke(9, "nemesis", Op::Start("partition <n1> & {n2}".into()), 0),
            Event::ok(9, "nemesis", Op::Start("partition <n1> & {n2}".into()), 1_000_000),
            Event::invoke(0, "n1", Op::Write(1), 2_000_000),
            Event::ok(0, "n1", Op::Write(1), 3_000_000),
            Event::invoke(1, "n2", Op::Read(None), 4_000_000),
            Event::ok(1, "n2", Op::Read(Some(5)), 5_000_000),
            Event::invoke(2, "n3", Op::Write(2), 6_000_000),
            Event::invoke(9, "nemesis", Op::Stop("heal".into()), 7_000_000),
            Event::ok(9, "nemesis", Op::Stop("heal".into()), 8_000_000),
        ])
    }

    #[test]
    fn the_report_is_self_contained_with_lanes_bands_and_cited_ops() -> Result<(), PairingError> {
        let h = history()?;
        let checks = check_all(&h, &CheckConfig::default());
        let html = report_html(&h, &checks, &summary(&h, &checks));
        assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("src="));
        for lane in ["p0 write", "p1 read", "p2 write", "p9 start"] {
            assert!(html.contains(&format!(">{lane}</text>")), "lane {lane}");
        }
        assert!(html.contains("partition &lt;n1&gt; &amp; {n2} [0.000s..0.008s]"), "an escaped fault band");
        assert!(html.contains("fill-opacity=\"0.4\""), "the never-completed write is faded");
        assert!(html.contains("stroke=\"#000\""), "the read the linearizability checker cites is outlined");
        assert!(html.contains("<td class=\"invalid\">INVALID</td>"));
        assert!(html.contains("ms</title></circle>"), "latency points");
        Ok(())
    }
}
