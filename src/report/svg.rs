//! Inline SVG charts for the HTML report: lines over time with axes, a legend and an
//! optional labelled level line, and horizontal bars. Plain strings, no script, no
//! external resource; every text escaped. Knows nothing of runs or the ledger.

use std::fmt::Write as _;

use super::escape;

/// The chart's size in SVG units; it scales to the page's width.
const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 260.0;
/// Room for the axes' labels.
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 36.0;

/// One line of a chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    /// (x, y) points, x increasing.
    pub points: Vec<(f64, f64)>,
}

/// A line chart of `series` over x from 0 to `x_max`; `level` draws a dashed
/// horizontal line with its label (a rate limit, say).
pub fn line_chart(
    title: &str,
    x_label: &str,
    series: &[Series<'_>],
    x_max: f64,
    level: Option<(f64, &str)>,
) -> String {
    let y_top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(level.map(|l| l.0))
        .fold(0.0_f64, f64::max);
    let plot = Plot {
        x_max: if x_max > 0.0 { x_max } else { 1.0 },
        y_max: nice_ceiling(y_top * 1.1),
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = escape(title)
    );
    plot.axes(&mut out, x_label);
    if let Some((value, label)) = level {
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{x2:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#c0392b" stroke-width="1.5" stroke-dasharray="6 4"/><text x="{x2:.1}" y="{ty:.1}" text-anchor="end" class="level">{l}</text>"##,
            x2 = WIDTH - RIGHT,
            y = plot.sy(value),
            ty = plot.sy(value) - 5.0,
            l = escape(label)
        );
    }
    plot.lines(&mut out, series);
    legend(&mut out, series);
    out.push_str("</svg>");
    out
}

/// The data's range, and where a point of it lands in the chart.
struct Plot {
    x_max: f64,
    y_max: f64,
}

impl Plot {
    fn sx(&self, x: f64) -> f64 {
        LEFT + x / self.x_max * (WIDTH - LEFT - RIGHT)
    }

    fn sy(&self, y: f64) -> f64 {
        let plot_h = HEIGHT - TOP - BOTTOM;
        TOP + plot_h - y / self.y_max * plot_h
    }

    /// Grid lines with the y ticks, the x ticks, and the x axis' label.
    fn axes(&self, out: &mut String, x_label: &str) {
        for i in 0..=4 {
            let y = self.y_max * f64::from(i) / 4.0;
            let _ = write!(
                out,
                r##"<line x1="{LEFT}" x2="{x2:.1}" y1="{py:.1}" y2="{py:.1}" stroke="#e3e6ea"/><text x="{tx:.1}" y="{ty:.1}" text-anchor="end" class="tick">{label}</text>"##,
                x2 = WIDTH - RIGHT,
                py = self.sy(y),
                tx = LEFT - 6.0,
                ty = self.sy(y) + 4.0,
                label = short_number(y)
            );
        }
        let step = nice_ceiling(self.x_max / 6.0);
        for i in 0..=6 {
            let x = step * f64::from(i);
            if x > self.x_max + 1e-9 {
                break;
            }
            let _ = write!(
                out,
                r#"<text x="{px:.1}" y="{py:.1}" text-anchor="middle" class="tick">{label}</text>"#,
                px = self.sx(x),
                py = HEIGHT - BOTTOM + 16.0,
                label = short_duration(x)
            );
        }
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="end" class="tick">{l}</text>"#,
            x = WIDTH - RIGHT,
            y = HEIGHT - 4.0,
            l = escape(x_label)
        );
    }

    /// One polyline a series.
    fn lines(&self, out: &mut String, series: &[Series<'_>]) {
        for s in series {
            let path: Vec<String> = s
                .points
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", self.sx(*x), self.sy(*y)))
                .collect();
            let _ = write!(
                out,
                r#"<polyline fill="none" stroke="{c}" stroke-width="2" stroke-linejoin="round" points="{p}"><title>{n}</title></polyline>"#,
                c = escape(s.color),
                p = path.join(" "),
                n = escape(s.name)
            );
        }
    }
}

/// A swatch and a name a series, left to right above the plot.
fn legend(out: &mut String, series: &[Series<'_>]) {
    let mut lx = LEFT;
    for s in series {
        let _ = write!(
            out,
            r#"<rect x="{lx:.1}" y="8" width="12" height="12" rx="2" fill="{c}"/><text x="{tx:.1}" y="18" class="legend">{n}</text>"#,
            c = escape(s.color),
            tx = lx + 16.0,
            n = escape(s.name)
        );
        lx += 28.0 + 7.5 * s.name.chars().count() as f64;
    }
}

/// A round number at or above `v`: 1, 2 or 5 times a power of ten.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

/// 1200 as "1.2k", 3 as "3", 0.5 as "0.5".
pub fn short_number(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.1}M", v / 1_000_000.0)
    } else if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Seconds as "45s", "12m", "3.5h".
pub fn short_duration(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0}s")
    } else if secs < 7200.0 && (secs / 60.0).fract() < 0.05 {
        format!("{:.0}m", secs / 60.0)
    } else if secs < 7200.0 {
        format!("{:.1}m", secs / 60.0)
    } else {
        format!("{:.1}h", secs / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(110.0), 200.0);
        assert_eq!(nice_ceiling(4.2), 5.0);
    }

    #[test]
    fn titles_and_names_are_escaped() {
        let s = Series {
            name: "<x>",
            color: "#000",
            points: vec![(0.0, 1.0), (1.0, 2.0)],
        };
        let svg = line_chart("a & b", "time", &[s], 1.0, Some((3.0, "limit <3>")));
        assert!(svg.contains("a &amp; b"));
        assert!(svg.contains("&lt;x&gt;"));
        assert!(!svg.contains("<x>"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
