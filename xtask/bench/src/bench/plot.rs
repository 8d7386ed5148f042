//! PNG bar charts with plotters' bitmap backend. Text is drawn with
//! ab_glyph from a font file read at run time (no fontconfig or freetype),
//! which `cargo xtask setup` installs (fonts-dejavu-core).

use std::path::Path;

use anyhow::{Context as _, Result, anyhow};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::Report;

/// The font the plots use; installed by setup.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FAMILY: &str = "sans-serif";

const WIDTH: u32 = 960;
const ROW: i32 = 26;
const TOP: i32 = 48;
const LABEL_WIDTH: i32 = 360;
/// Room right of the longest bar for its value.
const VALUE_WIDTH: i32 = 120;

/// One bar: label, value, whether it is the reference (drawn in orange).
type Bar = (String, f64, bool);

/// One chart: file name, caption, bars, how values are printed.
struct Chart {
    file: &'static str,
    caption: &'static str,
    bars: Vec<Bar>,
    fmt: fn(f64) -> String,
}

fn load_font() -> Result<()> {
    let bytes =
        std::fs::read(FONT).with_context(|| format!("reading {FONT} (run `cargo xtask setup`)"))?;
    // plotters keeps registered fonts for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{FONT} is not a usable font"))
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e:?}")
}

/// A horizontal bar chart of `bars` under `title`, values printed with `fmt`.
fn bar_chart(path: &Path, title: &str, bars: &[Bar], fmt: fn(f64) -> String) -> Result<()> {
    let height = (TOP + ROW * bars.len() as i32 + 16) as u32;
    let root = BitMapBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let title_font = (FAMILY, 18).into_font();
    let font = (FAMILY, 13).into_font();
    root.draw(&Text::new(title.to_owned(), (10, 12), title_font))
        .map_err(draw_err)?;
    let max = bars.iter().map(|b| b.1).fold(f64::MIN_POSITIVE, f64::max);
    let span = f64::from(WIDTH as i32 - LABEL_WIDTH - VALUE_WIDTH);
    for (i, (label, value, reference)) in bars.iter().enumerate() {
        let y = TOP + ROW * i as i32;
        let w = ((value / max) * span).round().max(1.0) as i32;
        let colour = if *reference {
            RGBColor(230, 126, 34)
        } else {
            RGBColor(52, 101, 164)
        };
        root.draw(&Text::new(label.clone(), (10, y + 4), font.clone()))
            .map_err(draw_err)?;
        root.draw(&Rectangle::new(
            [(LABEL_WIDTH, y), (LABEL_WIDTH + w, y + ROW - 6)],
            colour.filled(),
        ))
        .map_err(draw_err)?;
        root.draw(&Text::new(
            fmt(*value),
            (LABEL_WIDTH + w + 6, y + 4),
            font.clone(),
        ))
        .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

/// Writes every plot the report has data for into `dir`; returns
/// (file name, caption) pairs for the markdown.
pub fn write_all(report: &Report, dir: &Path) -> Result<Vec<(String, String)>> {
    load_font()?;
    let ns: fn(f64) -> String = |v| format!("{v:.0} ns");
    let ms: fn(f64) -> String = |v| format!("{v:.1} ms");
    let pct: fn(f64) -> String = |v| format!("{v:.3} %");
    // No digit grouping: at this size a comma is hard to tell from a point.
    let count: fn(f64) -> String = |v| format!("{v:.0}");
    let mut charts = Vec::new();

    charts.push(Chart {
        file: "dataplane.png",
        caption: "Data plane: ns per packet (orange: the floor)",
        bars: report
            .dataplane
            .iter()
            .map(|r| {
                let c = &r.case;
                let label = if c.vips == 0 {
                    c.name.to_owned()
                } else {
                    format!("{} ({}×{})", c.name, c.vips, c.backends)
                };
                (label, r.ns, c.program == super::dataplane::Program::Floor)
            })
            .collect(),
        fmt: ns,
    });
    charts.push(Chart {
        file: "maglev-build.png",
        caption: "Maglev: table build time",
        bars: report
            .maglev
            .iter()
            .map(|r| {
                (
                    format!("N = {}, M = {}", r.backends, r.slots),
                    r.build_ms,
                    false,
                )
            })
            .collect(),
        fmt: ms,
    });
    charts.push(Chart {
        file: "maglev-moved.png",
        caption: "Maglev: flows moved when one backend leaves (orange: ideal)",
        bars: report
            .maglev
            .iter()
            .flat_map(|r| {
                [
                    (
                        format!("N = {}, M = {}: moved", r.backends, r.slots),
                        r.moved * 100.0,
                        false,
                    ),
                    (
                        format!("N = {}: ideal 1/N", r.backends),
                        r.ideal * 100.0,
                        true,
                    ),
                ]
            })
            .collect(),
        fmt: pct,
    });
    charts.push(Chart {
        file: "pps.png",
        caption: "Packets per second delivered through veth, DSR and NAT (orange: xlb)",
        bars: report
            .pps
            .iter()
            .chain(&report.nat_pps)
            .map(|r| (r.setup.to_owned(), r.delivered, r.setup.starts_with("xlb")))
            .collect(),
        fmt: count,
    });
    charts.push(Chart {
        file: "http.png",
        caption: "wrk requests per second (orange: xlb)",
        bars: report
            .http
            .iter()
            .map(|r| {
                (
                    format!("{} / {}", r.setup, r.mode),
                    r.requests_per_s,
                    r.setup.starts_with("xlb"),
                )
            })
            .collect(),
        fmt: count,
    });
    charts.push(Chart {
        file: "http-nat.png",
        caption: "wrk requests per second through two-armed NAT (orange: xlb)",
        bars: report
            .nat_http
            .iter()
            .map(|r| {
                (
                    format!("{} / {}", r.setup, r.mode),
                    r.requests_per_s,
                    r.setup.starts_with("xlb"),
                )
            })
            .collect(),
        fmt: count,
    });
    charts.push(Chart {
        file: "failover.png",
        caption: "Removal and failover times, median (orange: the configured bound)",
        bars: report
            .failover
            .iter()
            .flat_map(|r| {
                [
                    (r.short.to_owned(), r.median_ms, false),
                    (format!("{}: bound", r.short), r.bound_ms, true),
                ]
            })
            .collect(),
        fmt: ms,
    });

    let mut written = Vec::new();
    for chart in charts {
        if chart.bars.is_empty() {
            continue;
        }
        bar_chart(&dir.join(chart.file), chart.caption, &chart.bars, chart.fmt)
            .with_context(|| format!("plotting {}", chart.file))?;
        written.push((chart.file.to_owned(), chart.caption.to_owned()));
    }
    Ok(written)
}
