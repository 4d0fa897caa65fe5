//! Line charts of a run as SVG, for `--out`: plain files a browser, a slide or a document
//! opens, with no plotting library to build. The same report gives the same bytes.

use std::fmt::Write;

use crate::report::Report;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 450.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its name in the legend.
    pub name: String,
    /// Its points, in order of x.
    pub points: Vec<(f64, f64)>,
}

/// A chart: a title, the axes' names, and its lines.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Above the plot.
    pub title: String,
    /// Under the x axis.
    pub x: String,
    /// Beside the y axis.
    pub y: String,
    /// The lines.
    pub series: Vec<Series>,
}

/// Ticks at 1, 2 or 5 times a power of ten covering `lo..=hi`, about five of them.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * power);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

fn label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Chart {
    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        let points = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, 0.0f64, f64::MIN);
        for &(x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            (x0, x1) = (0.0, 1.0);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if y1 <= y0 {
            y1 = y0 + 1.0;
        }
        // Some room above the highest point.
        y1 += (y1 - y0) * 0.05;
        let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        let py = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;
        let mut out = String::new();
        let _ = write!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"28\" font-size=\"16\" text-anchor=\"middle\">{}</text>\n",
            LEFT + pw / 2.0,
            escape(&self.title)
        );
        for t in ticks(x0, x1) {
            let x = px(t);
            let _ = writeln!(
                out,
                "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
                 <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                TOP + ph,
                TOP + ph + 18.0,
                label(t)
            );
        }
        for t in ticks(y0, y1) {
            let y = py(t);
            let _ = writeln!(
                out,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                label(t)
            );
        }
        let _ = writeln!(
            out,
            "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" \
             stroke=\"#444\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
             <text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
            LEFT + pw / 2.0,
            HEIGHT - 16.0,
            escape(&self.x),
            TOP + ph / 2.0,
            escape(&self.y)
        );
        for (i, s) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let path: Vec<String> = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n\
                 <rect x=\"{:.1}\" y=\"{:.1}\" width=\"14\" height=\"4\" fill=\"{colour}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                path.join(" "),
                LEFT + pw + 14.0,
                TOP + 10.0 + 20.0 * i as f64,
                LEFT + pw + 34.0,
                TOP + 15.0 + 20.0 * i as f64,
                escape(&s.name)
            );
        }
        out.push_str("</svg>\n");
        out
    }
}

/// A chart of one line over the days.
fn one(
    file: &'static str,
    title: String,
    y: String,
    name: &str,
    points: Vec<(f64, f64)>,
) -> (&'static str, Chart) {
    let series = vec![Series {
        name: name.into(),
        points,
    }];
    (
        file,
        Chart {
            title,
            x: "day".into(),
            y,
            series,
        },
    )
}

/// The charts of a run, by file name: durability, repair traffic, nodes answering, and (when
/// nodes were judged) earnings by kind of node.
pub fn charts(r: &Report) -> Vec<(&'static str, Chart)> {
    let days = |f: &dyn Fn(&crate::report::Day) -> f64| -> Vec<(f64, f64)> {
        r.daily.iter().map(|d| (d.day, f(d))).collect()
    };
    let stored = r.stored_bytes.max(1) as f64;
    let mut out = vec![
        (
            "durability.svg",
            Chart {
                title: format!("{}: stripes lost and unreadable", r.scenario),
                x: "day".into(),
                y: "stripes".into(),
                series: vec![
                    Series {
                        name: "lost for good".into(),
                        points: days(&|d| d.stripes_lost as f64),
                    },
                    Series {
                        name: "unreadable now".into(),
                        points: days(&|d| d.unreadable_stripes as f64),
                    },
                ],
            },
        ),
        one(
            "live-shards.svg",
            format!("{}: fewest live shards of any stripe", r.scenario),
            format!("shards of {}", r.k + r.m),
            "fewest live",
            days(&|d| d.fewest_live_shards as f64),
        ),
        one(
            "repair.svg",
            format!("{}: repair traffic", r.scenario),
            "bytes moved per byte stored".into(),
            "read + written",
            days(&|d| d.repair_bytes as f64 / stored),
        ),
        one(
            "nodes.svg",
            format!("{}: nodes answering", r.scenario),
            "nodes".into(),
            "up",
            days(&|d| d.nodes_up as f64),
        ),
    ];
    if !r.kinds.is_empty() {
        let series = r
            .kinds
            .iter()
            .map(|k| Series {
                name: k.name.clone(),
                points: r
                    .daily
                    .iter()
                    .filter_map(|d| Some((d.day, *d.earnings.get(&k.name)?)))
                    .collect(),
            })
            .collect();
        out.push((
            "earnings.svg",
            Chart {
                title: format!("{}: earnings per disk, net of costs", r.scenario),
                x: "day".into(),
                y: "earned so far".into(),
                series,
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(0.0, 365.0), vec![0.0, 100.0, 200.0, 300.0]);
        let t = ticks(-3.0, 0.5);
        assert!(t.first() >= Some(&-3.0) && t.last() <= Some(&0.5), "{t:?}");
        assert!(t.len() >= 3);
    }

    #[test]
    fn a_chart_is_an_svg_with_every_series_and_escaped_names() {
        let c = Chart {
            title: "a <b> & c".into(),
            x: "day".into(),
            y: "n".into(),
            series: vec![
                Series {
                    name: "one".into(),
                    points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, f64::NAN)],
                },
                Series {
                    name: "two".into(),
                    points: vec![],
                },
            ],
        };
        let svg = c.svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(!svg.contains("NaN"));
        assert_eq!(svg, c.svg());
    }
}
