//! The group page's usage charts: every coordinate computed here, so the template only draws.

use labhub_service::model::UsageSample;
use labhub_service::usage::UsageRange;
use time::OffsetDateTime;

/// A usage chart, with every coordinate computed here: the template only draws.
pub(super) struct Chart {
    pub(super) title: String,
    pub(super) class: &'static str,
    pub(super) used: String,
    pub(super) reserved: String,
    pub(super) budget_y: Option<String>,
    pub(super) y_labels: Vec<(String, String)>,
    /// (x, text, text-anchor): the ends are anchored inwards so they stay inside the chart.
    pub(super) x_labels: Vec<(String, String, &'static str)>,
    pub(super) empty: bool,
}

const W: f64 = 720.0;
const H: f64 = 200.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 24.0;

/// What one chart draws: a resource's use and reservation, against a budget.
pub(super) struct ChartSpec {
    pub(super) title: &'static str,
    /// The CSS class of its lines (`cpu` or `mem`).
    pub(super) class: &'static str,
    /// (in use, reserved) of a sample.
    pub(super) pick: fn(&UsageSample) -> (i64, i64),
    pub(super) budget: Option<u64>,
    /// The smallest top of the scale, so an idle group's chart is not all noise.
    pub(super) floor: u64,
    /// Writes an amount for the axis.
    pub(super) label: fn(u64) -> String,
}

/// Draws one resource of a group's samples over the range.
pub(super) fn chart(spec: ChartSpec, samples: &[UsageSample], range: UsageRange, now: OffsetDateTime) -> Chart {
    let span = range.span().as_secs_f64();
    let start = now - time::Duration::seconds_f64(span);
    let pick = spec.pick;
    let peak = samples.iter().map(|s| pick(s).0.max(pick(s).1)).max().unwrap_or(0).max(0) as u64;
    let top = (peak.max(spec.budget.unwrap_or(0)).max(spec.floor) as f64 * 1.1).max(1.0);
    let x = |t: OffsetDateTime| LEFT + ((t - start).as_seconds_f64() / span).clamp(0.0, 1.0) * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (1.0 - (v / top).clamp(0.0, 1.0)) * (H - TOP - BOTTOM);
    let line = |which: fn((i64, i64)) -> i64| {
        samples.iter().map(|s| format!("{:.1},{:.1}", x(s.at), y(which(pick(s)) as f64))).collect::<Vec<_>>().join(" ")
    };
    let y_labels = [0.0, 0.5, 1.0]
        .iter()
        .map(|f| (format!("{:.1}", y(top * f) + 4.0), (spec.label)((top * f).round() as u64)))
        .collect();
    let fmt = time::macros::format_description!("[month]-[day] [hour]:[minute]");
    let x_labels = (0..=4)
        .map(|i| {
            let t = start + time::Duration::seconds_f64(span * f64::from(i) / 4.0);
            let anchor = match i {
                0 => "start",
                4 => "end",
                _ => "middle",
            };
            (format!("{:.1}", x(t)), t.format(&fmt).unwrap_or_default(), anchor)
        })
        .collect();
    Chart {
        title: spec.title.to_string(),
        class: spec.class,
        used: line(|p| p.0),
        reserved: line(|p| p.1),
        budget_y: spec.budget.map(|b| format!("{:.1}", y(b as f64))),
        y_labels,
        x_labels,
        empty: samples.is_empty(),
    }
}
