//! `ffrtmp report efficiency`: the table of configurations, the answers to
//! "cheapest reaching this quality", and the plot of energy against
//! quality (SVG or PNG, drawn with plotters; text in an embedded font, so
//! nothing is needed from the machine's fonts).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use ffrtmp_runtime::report::{EfficiencyReport, EfficiencyRow, FrontierMetric, Stat};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::client::{CliError, CliResult, Client, Exit};
use crate::output::{self, Format, Table};

#[derive(Subcommand, Debug)]
pub(crate) enum ReportCmd {
    /// Configurations (encoder, preset, rate control, size, rate, pixel format, node) ranked by
    /// median joules per output minute, with quality, the Pareto frontier and, with --min-vmaf
    /// or --min-psnr, the cheapest configuration reaching it.
    Efficiency(EfficiencyArgs),
}

#[derive(Args, Debug)]
pub(crate) struct EfficiencyArgs {
    /// Only the jobs of this experiment.
    #[arg(long, value_name = "ID")]
    experiment: Option<String>,
    /// The cheapest configuration (per codec and overall) whose median VMAF reaches X (0-100).
    #[arg(long, value_name = "X", conflicts_with = "min_psnr")]
    min_vmaf: Option<String>,
    /// The cheapest configuration whose median PSNR reaches X dB (0-100).
    #[arg(long, value_name = "X")]
    min_psnr: Option<String>,
    /// Only jobs carrying this label; repeatable, every one must match.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Draw energy per output minute against VMAF (PSNR when no VMAF) to FILE.svg or FILE.png.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// The plot's size in pixels.
    #[arg(long, value_name = "WxH", default_value = "1200x800", value_parser = parse_size)]
    plot_size: (u32, u32),
    /// Print the API's JSON document (the same as `-o json`).
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("expected WIDTHxHEIGHT from 200x150 to 8000x8000, got {s:?}");
    let (w, h) = s.split_once('x').ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if !(200..=8000).contains(&w) || !(150..=8000).contains(&h) {
        return Err(bad());
    }
    Ok((w, h))
}

/// The plot file's kind, from its extension.
#[derive(Clone, Copy, Debug, PartialEq)]
enum PlotKind {
    Svg,
    Png,
}

fn plot_kind(path: &Path) -> CliResult<PlotKind> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("svg") => Ok(PlotKind::Svg),
        Some("png") => Ok(PlotKind::Png),
        _ => Err(CliError::usage(format!(
            "--plot {}: the file must end in .svg or .png",
            path.display()
        ))),
    }
}

pub(crate) fn run(client: &Client, cmd: ReportCmd, format: Format) -> CliResult<Exit> {
    let ReportCmd::Efficiency(args) = cmd;
    let kind = args.plot.as_deref().map(plot_kind).transpose()?;
    let mut query: Vec<(&str, String)> = Vec::new();
    if let Some(x) = &args.experiment {
        query.push(("experiment", x.clone()));
    }
    for l in &args.labels {
        query.push(("label", l.clone()));
    }
    if let Some(x) = &args.min_vmaf {
        query.push(("min_vmaf", x.clone()));
    }
    if let Some(x) = &args.min_psnr {
        query.push(("min_psnr", x.clone()));
    }
    let raw = client.get(&["v1", "reports", "efficiency"], &query)?;
    let report: EfficiencyReport = serde_json::from_value(raw.clone()).map_err(|e| {
        CliError::new(
            Exit::Server,
            format!(
                "unexpected answer for GET /v1/reports/efficiency ({e}); is the master the same version?"
            ),
        )
    })?;
    if args.json || format == Format::Json {
        output::json(&raw);
    } else {
        print_efficiency(&report);
    }
    if let (Some(path), Some(kind)) = (&args.plot, kind) {
        plot(&report, path, kind, args.plot_size)?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(Exit::Ok)
}

/// Print an efficiency report given as JSON (an experiment's, from
/// `GET /v1/experiments/{id}`) as [`print_efficiency`] does.
pub(crate) fn print_efficiency_value(raw: &serde_json::Value) -> CliResult<()> {
    let report: EfficiencyReport = serde_json::from_value(raw.clone()).map_err(|e| {
        CliError::new(
            Exit::Server,
            format!("unexpected efficiency report ({e}); is the master the same version?"),
        )
    })?;
    print_efficiency(&report);
    Ok(())
}

/// `93.4 ±1.2`: a median and its interquartile range.
fn stat(s: &Stat, prec: usize) -> String {
    format!("{:.prec$} ±{:.prec$}", s.median, s.iqr)
}

/// A quality cell: the median, with how many jobs scored it when not all.
fn quality(s: Option<&Stat>, samples: u64, prec: usize) -> String {
    match s {
        None => output::dash(),
        Some(s) if s.n < samples => format!("{:.prec$} ({}/{samples})", s.median, s.n),
        Some(s) => format!("{:.prec$}", s.median),
    }
}

/// The report as people read it: one line per configuration, then the
/// answers to `min_vmaf` / `min_psnr`, then what it was built from (on
/// stderr). `ffrtmp experiment run --wait` prints the same.
pub(crate) fn print_efficiency(report: &EfficiencyReport) {
    if report.rows.is_empty() {
        eprintln!("no configurations with energy figures yet");
    } else {
        let mut t = Table::new(&[
            ">RANK",
            "CONFIGURATION",
            "NODE",
            "SOURCE",
            ">JOBS",
            ">J/OUT MIN ±IQR",
            ">J/FRAME",
            ">WATTS",
            ">FPS",
            ">VMAF",
            ">PSNR",
            ">SSIM",
            "FRONTIER",
        ]);
        for r in &report.rows {
            t.row(vec![
                r.rank.to_string(),
                r.label.clone(),
                r.node.clone(),
                crate::watch::energy_source(&r.energy_source, r.estimate),
                r.samples.to_string(),
                stat(&r.joules_per_output_minute, 1),
                output::num(r.median_joules_per_frame, 3),
                output::num(Some(r.median_mean_power_watts), 1),
                output::num(Some(r.median_fps), 1),
                quality(r.vmaf.as_ref(), r.samples, 1),
                quality(r.psnr.as_ref(), r.samples, 1),
                quality(r.ssim.as_ref(), r.samples, 3),
                if r.frontier { "*" } else { "" }.to_string(),
            ]);
        }
        t.print();
    }
    for line in answer_lines(report) {
        output::line(&line);
    }
    let axis = match report.frontier_metric {
        Some(FrontierMetric::Vmaf) => "; * = on the Pareto frontier of J/min against VMAF",
        Some(FrontierMetric::Psnr) => "; * = on the Pareto frontier of J/min against PSNR",
        None => "",
    };
    eprintln!(
        "{} succeeded job(s) considered, {} without energy figures; medians ± interquartile range per configuration{axis}",
        report.jobs_considered, report.jobs_without_energy
    );
}

/// `cheapest reaching VMAF >= 93 (measured), overall: ...`, one per answer.
fn answer_lines(report: &EfficiencyReport) -> Vec<String> {
    let q = &report.query;
    let mut wanted = Vec::new();
    if let Some(v) = q.min_vmaf {
        wanted.push(format!("VMAF >= {v}"));
    }
    if let Some(p) = q.min_psnr {
        wanted.push(format!("PSNR >= {p} dB"));
    }
    let wanted = wanted.join(" and ");
    report
        .cheapest
        .iter()
        .map(|c| {
            let kind = if c.estimate { "estimated" } else { "measured" };
            let answer = match (&c.label, c.rank, c.median_joules_per_output_minute) {
                (Some(label), Some(rank), Some(j)) => {
                    format!("{label} (rank {rank}, {j:.1} J/out min)")
                }
                _ => "none reaches it".to_string(),
            };
            format!("cheapest reaching {wanted} ({kind}), {}: {answer}", c.scope)
        })
        .collect()
}

/// Draw the report's configurations: energy per output minute (y) against
/// the frontier metric (x), the frontier as a line, estimates hollow and in
/// another colour.
fn plot(report: &EfficiencyReport, path: &Path, kind: PlotKind, size: (u32, u32)) -> CliResult<()> {
    let Some(metric) = report.frontier_metric else {
        return Err(CliError::usage(
            "nothing to plot: no configuration has VMAF or PSNR scores \
             (jobs ask for them with \"quality\": {\"metrics\": [\"vmaf\", \"psnr\"]})",
        ));
    };
    // The one font text is drawn with, from the binary: no system fonts.
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| CliError::new(Exit::JobFailed, "the embedded font does not load"))?;
    let failed = |e: String| {
        CliError::new(
            Exit::JobFailed,
            format!("--plot {}: cannot draw: {e}", path.display()),
        )
    };
    match kind {
        PlotKind::Svg => draw(
            SVGBackend::new(path, size).into_drawing_area(),
            report,
            metric,
        )
        .map_err(failed),
        PlotKind::Png => draw(
            BitMapBackend::new(path, size).into_drawing_area(),
            report,
            metric,
        )
        .map_err(failed),
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    report: &EfficiencyReport,
    metric: FrontierMetric,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (axis, title) = match metric {
        FrontierMetric::Vmaf => ("VMAF (vmaf_v0.6.1, 0-100)", "VMAF"),
        FrontierMetric::Psnr => ("PSNR (dB)", "PSNR"),
    };
    let points: Vec<(&EfficiencyRow, f64, f64)> = report
        .rows
        .iter()
        .filter_map(|r| Some((r, r.metric(metric)?, r.median_joules_per_output_minute)))
        .collect();
    let (mut x0, mut x1) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    // Room on the right for the labels written beside the points.
    let span = (x1 - x0).max(2.0);
    (x0, x1) = (x0 - span * 0.1, x1 + span * 0.45);
    let y1 = points.iter().map(|p| p.2).fold(0.0, f64::max) * 1.15 + 1e-9;

    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Energy per output minute against {title}"),
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, 0.0..y1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(axis)
        .y_desc("energy per output minute (J/min)")
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(e)?;

    let measured = RGBColor(31, 119, 180);
    let estimated = RGBColor(255, 127, 14);
    for (is_estimate, colour) in [(false, measured), (true, estimated)] {
        let kind: Vec<&(&EfficiencyRow, f64, f64)> = points
            .iter()
            .filter(|p| p.0.estimate == is_estimate)
            .collect();
        if kind.is_empty() {
            continue;
        }
        let name = if is_estimate { "estimated" } else { "measured" };
        let mut frontier: Vec<(f64, f64)> = kind
            .iter()
            .filter(|p| p.0.frontier)
            .map(|p| (p.1, p.2))
            .collect();
        frontier.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(frontier, colour.stroke_width(2)))
            .map_err(e)?
            .label(format!("Pareto frontier ({name})"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        // Measured points filled, estimated hollow.
        let style = if is_estimate {
            colour.stroke_width(2)
        } else {
            colour.filled()
        };
        chart
            .draw_series(kind.iter().map(|p| Circle::new((p.1, p.2), 6, style)))
            .map_err(e)?
            .label(format!("{name} configuration"))
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, style));
        chart
            .draw_series(kind.iter().map(|p| {
                // Beside the point, not on it.
                EmptyElement::at((p.1, p.2))
                    + Text::new(
                        p.0.label.clone(),
                        (9, -7),
                        ("sans-serif", 13).into_font().color(&BLACK),
                    )
            }))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn stat(median: f64) -> Value {
        json!({"median": median, "q1": median, "q3": median, "iqr": 0.0, "n": 1})
    }

    /// A report row as the API sends it.
    fn row(rank: u32, label: &str, estimate: bool, jmin: f64, vmaf: Option<f64>) -> Value {
        json!({
            "rank": rank, "label": label,
            "configuration": {"codec": "h264", "encoder": "libx264", "preset": "medium",
                "rate_control": "bitrate", "crf": null, "bitrate_kbps": 800,
                "width": 640, "height": 360, "fps": 30, "pix_fmt": "yuv420p"},
            "scenario": "custom-640x360p30", "encoder": "libx264", "node": "n1",
            "energy_source": if estimate { "estimate" } else { "rapl" }, "estimate": estimate,
            "samples": 1, "median_joules_per_output_minute": jmin,
            "median_joules_per_frame": null, "median_mean_power_watts": 10.0, "median_fps": 30.0,
            "joules_per_output_minute": stat(jmin), "joules_per_frame": null,
            "mean_power_watts": stat(10.0), "fps": stat(30.0),
            "vmaf": vmaf.map(stat), "psnr": null, "ssim": null,
            "frontier": vmaf.is_some(),
        })
    }

    fn report(rows: Vec<Value>) -> EfficiencyReport {
        serde_json::from_value(json!({
            "rows": rows, "jobs_considered": 3, "jobs_without_energy": 0,
            "query": {"experiment": null, "labels": {}, "min_vmaf": 93.0, "min_psnr": null},
            "frontier_metric": "vmaf",
            "cheapest": [{"scope": "overall", "estimate": false, "rank": 2,
                "label": "libx264 slow 800k 640x360p30", "median_joules_per_output_minute": 40.0},
                {"scope": "h265", "estimate": false, "rank": null, "label": null,
                "median_joules_per_output_minute": null}],
        }))
        .expect("a report")
    }

    fn sample() -> EfficiencyReport {
        report(vec![
            row(
                1,
                "libx264 ultrafast 800k 640x360p30",
                false,
                10.0,
                Some(80.0),
            ),
            row(2, "libx264 slow 800k 640x360p30", false, 40.0, Some(95.0)),
            row(3, "libx265 <medium> & 640x360p30", true, 5.0, Some(90.0)),
        ])
    }

    #[test]
    fn the_answers_name_the_configuration_or_say_none_reaches_it() {
        let lines = answer_lines(&sample());
        assert_eq!(
            lines,
            vec![
                "cheapest reaching VMAF >= 93 (measured), overall: libx264 slow 800k 640x360p30 (rank 2, 40.0 J/out min)",
                "cheapest reaching VMAF >= 93 (measured), h265: none reaches it",
            ]
        );
    }

    #[test]
    fn the_svg_plot_is_xml_with_every_configuration_and_the_legend() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("frontier.svg");
        let r = sample();
        plot(&r, &path, plot_kind(&path).expect("svg"), (900, 600)).expect("plot");
        let text = std::fs::read_to_string(&path).expect("read");
        let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_string()))
            .collect();
        for row in &r.rows {
            assert!(texts.contains(&row.label), "{} not in {texts:?}", row.label);
        }
        for needle in [
            "VMAF (vmaf_v0.6.1, 0-100)",
            "energy per output minute (J/min)",
            "measured configuration",
            "estimated configuration",
            "Pareto frontier (measured)",
        ] {
            assert!(texts.iter().any(|t| t == needle), "{needle}: {texts:?}");
        }
        // The measured frontier is a line through its two points.
        assert!(
            doc.descendants().any(|n| n.has_tag_name("polyline")),
            "no frontier line"
        );
        // Estimated points are hollow circles, measured filled.
        let circles: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("circle"))
            .collect();
        assert!(circles.iter().any(|c| c.attribute("fill") == Some("none")));
        assert!(circles
            .iter()
            .any(|c| c.attribute("fill").is_some_and(|f| f != "none")));
    }

    #[test]
    fn the_png_plot_has_the_signature_and_the_requested_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("frontier.PNG");
        plot(&sample(), &path, plot_kind(&path).expect("png"), (640, 480)).expect("plot");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        assert_eq!((be(&bytes[16..20]), be(&bytes[20..24])), (640, 480));
    }

    #[test]
    fn a_plot_needs_a_known_extension_and_scores() {
        assert!(plot_kind(Path::new("a.jpg")).is_err());
        assert!(plot_kind(Path::new("svg")).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("none.svg");
        let mut r = report(vec![row(1, "x", false, 1.0, None)]);
        r.frontier_metric = None;
        let e = plot(&r, &path, PlotKind::Svg, (640, 480)).unwrap_err();
        assert!(
            e.message.contains("no configuration has VMAF"),
            "{}",
            e.message
        );
        assert!(!path.exists());
        assert_eq!(parse_size("640x480"), Ok((640, 480)));
        assert!(parse_size("10x10").is_err() && parse_size("640").is_err());
    }
}
