//! Chart geometry for the dashboard, computed here and drawn as inline SVG by the template (no
//! script; the page's CSP stays as it is). Every number a chart shows is also in the page's
//! tables and in `GET /v1/stats`.

use serde::Serialize;
use time::{Date, Duration};

use crate::store::Stats;

/// Drawing area of every chart, in SVG user units.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 28.0;
const TOP: f64 = 10.0;

/// The attestation states stacked in the per-day bars, bottom to top, with their CSS class.
pub const STATES: &[(&str, &str)] = &[
    ("attested", "Attested"),
    ("pushing", "Pushing"),
    ("pending", "Pending"),
    ("failed", "Failed"),
    ("skipped", "Build not successful"),
];

#[derive(Debug, Serialize)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub class: String,
    pub title: String,
}

#[derive(Debug, Serialize)]
pub struct Label {
    pub x: f64,
    pub y: f64,
    pub text: String,
}

#[derive(Debug, Serialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub title: String,
}

#[derive(Debug, Serialize)]
pub struct Series {
    pub class: String,
    pub name: String,
    /// `x,y x,y …` for a polyline.
    pub line: String,
    pub points: Vec<Point>,
}

/// A chart over the window's days: stacked bars or lines, with axis labels.
#[derive(Debug, Serialize)]
pub struct DayChart {
    pub width: f64,
    pub height: f64,
    pub bars: Vec<Rect>,
    pub series: Vec<Series>,
    pub x_labels: Vec<Label>,
    pub y_labels: Vec<Label>,
    pub gridlines: Vec<f64>,
    pub baseline: f64,
    pub empty: bool,
}

/// One horizontal bar per row (backlog, failures).
#[derive(Debug, Serialize)]
pub struct RowChart {
    pub width: f64,
    pub height: f64,
    pub bars: Vec<Rect>,
    pub labels: Vec<Label>,
    pub empty: bool,
}

fn days(first: Date, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| (first + Duration::days(i as i64)).to_string())
        .collect()
}

/// A round axis maximum at or above `max` (1, 2, 5 × 10ⁿ) and its tick step.
fn scale(max: f64) -> (f64, f64) {
    if max <= 0.0 {
        return (1.0, 1.0);
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        let top = (max / (magnitude * step)).ceil() * magnitude * step;
        if top / (magnitude * step) <= 5.0 {
            return (top, magnitude * step);
        }
    }
    (max, max)
}

fn axes(
    day_names: &[String],
    top: f64,
    step: f64,
    unit: &str,
) -> (Vec<Label>, Vec<Label>, Vec<f64>) {
    let plot_h = HEIGHT - BOTTOM - TOP;
    let slot = (WIDTH - LEFT) / day_names.len().max(1) as f64;
    // At most ~10 day labels, so they never overlap.
    let every = day_names.len().div_ceil(10).max(1);
    let x_labels = day_names
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0)
        .map(|(i, d)| Label {
            x: LEFT + slot * (i as f64 + 0.5),
            y: HEIGHT - 8.0,
            text: d.get(5..).unwrap_or(d).to_owned(),
        })
        .collect();
    let mut y_labels = Vec::new();
    let mut gridlines = Vec::new();
    let mut v = 0.0;
    while v <= top + f64::EPSILON {
        let y = TOP + plot_h * (1.0 - v / top);
        gridlines.push(y);
        y_labels.push(Label {
            x: LEFT - 6.0,
            y: y + 4.0,
            text: format!("{}{unit}", trim(v)),
        });
        v += step;
    }
    (x_labels, y_labels, gridlines)
}

fn trim(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Executions per day, one stacked bar per day, one segment per attestation state present.
pub fn executions_per_day(stats: &Stats, first: Date, day_count: usize) -> DayChart {
    let names = days(first, day_count);
    let count = |day: &str, state: &str| -> i64 {
        stats
            .daily
            .iter()
            .filter(|d| d.day == day && d.attestation == state)
            .map(|d| d.count)
            .sum()
    };
    let totals: Vec<i64> = names
        .iter()
        .map(|d| STATES.iter().map(|(s, _)| count(d, s)).sum())
        .collect();
    let (top, step) = scale(totals.iter().copied().max().unwrap_or(0) as f64);
    let plot_h = HEIGHT - BOTTOM - TOP;
    let slot = (WIDTH - LEFT) / day_count.max(1) as f64;
    let mut bars = Vec::new();
    for (i, day) in names.iter().enumerate() {
        let mut y = HEIGHT - BOTTOM;
        for (state, label) in STATES {
            let n = count(day, state);
            if n == 0 {
                continue;
            }
            let h = plot_h * n as f64 / top;
            y -= h;
            bars.push(Rect {
                x: LEFT + slot * i as f64 + slot * 0.15,
                y,
                w: slot * 0.7,
                h,
                class: format!("bar state-{state}"),
                title: format!("{day}: {n} {}", label.to_lowercase()),
            });
        }
    }
    let (x_labels, y_labels, gridlines) = axes(&names, top, step, "");
    DayChart {
        width: WIDTH,
        height: HEIGHT,
        empty: bars.is_empty(),
        bars,
        series: Vec::new(),
        x_labels,
        y_labels,
        gridlines,
        baseline: HEIGHT - BOTTOM,
    }
}

/// Time-to-attest p50/p90/p99 per day, one point per day that has attested executions.
pub fn time_to_attest(stats: &Stats, first: Date, day_count: usize) -> DayChart {
    let names = days(first, day_count);
    let max = stats
        .time_to_attest_daily
        .iter()
        .filter_map(|d| d.time_to_attest.p99)
        .fold(0.0, f64::max);
    let (top, step) = scale(max);
    let plot_h = HEIGHT - BOTTOM - TOP;
    let slot = (WIDTH - LEFT) / day_count.max(1) as f64;
    let series = [("p50", "p50"), ("p90", "p90"), ("p99", "p99")]
        .iter()
        .map(|(name, class)| {
            let points: Vec<Point> = names
                .iter()
                .enumerate()
                .filter_map(|(i, day)| {
                    let d = stats.time_to_attest_daily.iter().find(|d| &d.day == day)?;
                    let v = match *name {
                        "p50" => d.time_to_attest.p50,
                        "p90" => d.time_to_attest.p90,
                        _ => d.time_to_attest.p99,
                    }?;
                    Some(Point {
                        x: LEFT + slot * (i as f64 + 0.5),
                        y: TOP + plot_h * (1.0 - v / top),
                        title: format!("{day}: {name} {v:.1} s"),
                    })
                })
                .collect();
            Series {
                class: format!("series-{class}"),
                name: (*name).to_owned(),
                line: points
                    .iter()
                    .map(|p| format!("{:.1},{:.1}", p.x, p.y))
                    .collect::<Vec<_>>()
                    .join(" "),
                points,
            }
        })
        .collect::<Vec<_>>();
    let (x_labels, y_labels, gridlines) = axes(&names, top, step, " s");
    DayChart {
        width: WIDTH,
        height: HEIGHT,
        empty: series.iter().all(|s| s.points.is_empty()),
        bars: Vec::new(),
        series,
        x_labels,
        y_labels,
        gridlines,
        baseline: HEIGHT - BOTTOM,
    }
}

/// One horizontal bar per `(label, count)` row.
pub fn rows(rows: &[(String, i64)], class: &str) -> RowChart {
    const ROW: f64 = 26.0;
    const ROW_WIDTH: f64 = 400.0;
    const LABEL_W: f64 = 140.0;
    let max = rows.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1) as f64;
    let mut bars = Vec::new();
    let mut labels = Vec::new();
    for (i, (label, n)) in rows.iter().enumerate() {
        let y = 6.0 + ROW * i as f64;
        let w = (ROW_WIDTH - LABEL_W - 40.0) * *n as f64 / max;
        bars.push(Rect {
            x: LABEL_W,
            y,
            w,
            h: ROW - 8.0,
            class: format!("bar {class}"),
            title: format!("{label}: {n}"),
        });
        labels.push(Label {
            x: LABEL_W - 8.0,
            y: y + 13.0,
            text: label.clone(),
        });
        labels.push(Label {
            x: LABEL_W + w + 6.0,
            y: y + 13.0,
            text: n.to_string(),
        });
    }
    RowChart {
        width: ROW_WIDTH,
        height: (ROW * rows.len() as f64 + 8.0).max(40.0),
        empty: bars.is_empty(),
        bars,
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DailyCount, DailyTimeToAttest, TimeToAttest};

    fn stats() -> Stats {
        let day = |day: &str, attestation: &str, count| DailyCount {
            day: day.into(),
            status: "succeeded".into(),
            attestation: attestation.into(),
            count,
        };
        Stats {
            daily: vec![
                day("2026-11-01", "attested", 3),
                day("2026-11-01", "failed", 1),
                day("2026-11-03", "attested", 5),
            ],
            time_to_attest: TimeToAttest::default(),
            time_to_attest_daily: vec![DailyTimeToAttest {
                day: "2026-11-03".into(),
                time_to_attest: TimeToAttest {
                    count: 5,
                    p50: Some(2.0),
                    p90: Some(4.0),
                    p99: Some(9.0),
                    max: Some(9.0),
                },
            }],
            failures: Vec::new(),
            backlog: Vec::new(),
        }
    }

    #[test]
    fn one_segment_per_day_and_state_with_heights_in_proportion() {
        let first = time::macros::date!(2026 - 11 - 01);
        let chart = executions_per_day(&stats(), first, 3);
        assert_eq!(chart.bars.len(), 3);
        let attested_day1 = &chart.bars[0];
        let attested_day3 = &chart.bars[2];
        assert!((attested_day3.h / attested_day1.h - 5.0 / 3.0).abs() < 1e-9);
        // Stacked: the failed segment sits on top of the attested one.
        assert!((chart.bars[1].y + chart.bars[1].h - attested_day1.y).abs() < 1e-9);
    }

    #[test]
    fn a_point_per_percentile_for_each_day_with_attestations() {
        let first = time::macros::date!(2026 - 11 - 01);
        let chart = time_to_attest(&stats(), first, 3);
        assert_eq!(chart.series.len(), 3);
        assert!(chart.series.iter().all(|s| s.points.len() == 1));
        assert!(
            chart.series[2].points[0].y < chart.series[0].points[0].y,
            "p99 above p50"
        );
    }

    #[test]
    fn axis_scales_are_round() {
        assert_eq!(scale(7.0), (8.0, 2.0));
        assert_eq!(scale(0.0), (1.0, 1.0));
        assert_eq!(scale(120.0), (200.0, 100.0));
        assert_eq!(scale(3.0), (3.0, 1.0));
    }
}
