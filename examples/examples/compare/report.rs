//! Output of the `compare` example: the results table, the CSV files and the plots.

use super::*;

pub(super) fn print_table(results: &[RunResult], target: f64) {
    let mut header = vec![
        "optimizer".to_string(),
        "peak lr".to_string(),
        "train loss".to_string(),
        "test loss".to_string(),
        "test acc".to_string(),
        format!("steps→{target}"),
        "ms/step".to_string(),
        "update ms".to_string(),
        "update %".to_string(),
    ];
    let ema = results.iter().any(|r| r.ema_test.is_some());
    if ema {
        header.push("EMA test acc".to_string());
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let mut row = vec![
                r.name.to_string(),
                format!("{:e}", r.peak_lr),
                format!("{:.4}", r.train.loss),
                format!("{:.4}", r.test.loss),
                format!("{:.2}%", 100.0 * r.test.accuracy),
                r.steps_to_target.map_or("-".to_string(), |s| s.to_string()),
                format!("{:.3}", r.ms_per_step()),
                format!("{:.3}", r.update_ms()),
                format!("{:.1}%", 100.0 * r.update_share()),
            ];
            if ema {
                row.push(
                    r.ema_test
                        .map_or("-".to_string(), |e| format!("{:.2}%", 100.0 * e.accuracy)),
                );
            }
            row
        })
        .collect();
    print_rows(&header, &rows);
}

/// Prints a table: the first column left-aligned, the others right-aligned, a rule under the
/// header.
pub(super) fn print_rows(header: &[String], rows: &[Vec<String>]) {
    let widths = table::column_widths(header, rows);
    let fmt_row = |cells: &[String]| {
        let mut s = String::new();
        for (c, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if c == 0 {
                let _ = write!(s, "{cell:<w$}");
            } else {
                let _ = write!(s, "  {cell:>w$}");
            }
        }
        s
    };
    println!("{}", fmt_row(header));
    println!(
        "{}",
        "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
    );
    for r in rows {
        println!("{}", fmt_row(r));
    }
}

pub(super) fn write_csvs(dir: &Path, results: &[RunResult], target: f64) -> std::io::Result<()> {
    let mut s = String::from(
        "optimizer,type,peak_lr,steps,final_train_loss,test_loss,test_accuracy,ema_test_accuracy,\
         target_loss,steps_to_target,median_ms_per_step,median_update_ms,mean_ms_per_step,\
         mean_update_ms,update_share\n",
    );
    for r in results {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6}",
            r.name,
            r.type_name,
            r.peak_lr,
            r.steps,
            r.train.loss,
            r.test.loss,
            r.test.accuracy,
            r.ema_test.map_or(String::new(), |e| e.accuracy.to_string()),
            target,
            r.steps_to_target.map_or(String::new(), |s| s.to_string()),
            r.ms_per_step(),
            r.update_ms(),
            mean_ms(&r.step_times),
            mean_ms(&r.update_times),
            r.update_share(),
        );
    }
    std::fs::write(dir.join("summary.csv"), s)?;
    let mut c = String::from("optimizer,step,lr,batch_loss,smoothed_loss\n");
    for r in results {
        for p in &r.curve {
            let _ = writeln!(
                c,
                "{},{},{:e},{},{}",
                r.name, p.step, p.lr, p.loss, p.smoothed
            );
        }
    }
    std::fs::write(dir.join("curves.csv"), c)
}

/// Line colours of the plot (the common "tab10" qualitative palette), in optimizer order.
pub(super) const PALETTE: [(u8, u8, u8); 14] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (0, 0, 0),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
];

/// `v` with three significant digits and no trailing zeros (`0.0001`, `0.25`, `2`).
pub(super) fn short_number(v: f64) -> String {
    if !(v.is_finite() && v > 0.0) {
        return format!("{v}");
    }
    let decimals = (2 - v.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The colour of the `i`-th series: [`PALETTE`], repeating.
pub(super) fn series_color(i: usize) -> plotters::style::RGBAColor {
    use plotters::style::{Color, RGBColor};
    let (r8, g8, b8) = PALETTE[i % PALETTE.len()];
    RGBColor(r8, g8, b8).to_rgba()
}

pub(super) fn plot(path: &Path, results: &[RunResult], title: &str) -> Result<(), Box<dyn Error>> {
    use plot_parts::{chart_builder, draw_legend, legend_line};
    use plotters::prelude::*;
    let steps = results.iter().map(|r| r.steps).max().unwrap_or(1).max(1);
    let values = results
        .iter()
        .flat_map(|r| r.curve.iter().map(|p| p.smoothed))
        .filter(|v| v.is_finite() && *v > 0.0);
    let (lo, hi) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    // The axis starts just below a power of ten: plotters labels a log axis from the first
    // power of ten inside it.
    let (lo, hi) = if lo.is_finite() {
        (10f64.powf(lo.log10().floor()) * 0.999, hi * 1.25)
    } else {
        (1e-3, 10.0)
    };

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart =
        chart_builder(&root, title).build_cartesian_2d(0..steps, (lo..hi).log_scale())?;
    // A label at every 1, 2, …, 9 × 10^k when the curves span at most two decades, else at the
    // powers of ten only.
    let decades = (hi / lo).log10();
    chart
        .configure_mesh()
        .y_labels(if decades <= 2.0 {
            10 * decades.ceil().max(1.0) as usize
        } else {
            10
        })
        .light_line_style(TRANSPARENT)
        .x_desc("step")
        .y_desc("training loss (EMA of mini-batch loss)")
        .y_label_formatter(&|v| short_number(*v))
        .draw()?;
    for (i, r) in results.iter().enumerate() {
        let color = series_color(i);
        chart
            .draw_series(LineSeries::new(
                r.curve.iter().map(|p| (p.step, p.smoothed)),
                color.stroke_width(2),
            ))?
            .label(r.name)
            .legend(legend_line(color.stroke_width(2)));
    }
    draw_legend(&mut chart)?;
    root.present()?;
    Ok(())
}

/// One named line of a plot, with optional markers (drawn as circles in the line's colour).
pub(super) struct Series {
    pub(super) name: String,
    pub(super) points: Vec<(f64, f64)>,
    pub(super) marks: Vec<(f64, f64)>,
}

/// Plots `series` as lines on linear axes, `x` from 0 to the largest x, `y` over `y_range`
/// (points outside it are left out), with a legend, into an SVG file.
pub(super) fn plot_series(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    y_range: (f64, f64),
) -> Result<(), Box<dyn Error>> {
    use plot_parts::{chart_builder, draw_legend, legend_line};
    use plotters::prelude::*;
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let (y_lo, y_hi) = y_range;
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = chart_builder(&root, title).build_cartesian_2d(0.0..x_max, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| short_number(*v))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = series_color(i);
        chart
            .draw_series(LineSeries::new(
                s.points
                    .iter()
                    .copied()
                    .filter(|&(_, y)| y.is_finite() && y >= y_lo && y <= y_hi),
                color.stroke_width(2),
            ))?
            .label(s.name.clone())
            .legend(legend_line(color.stroke_width(2)));
        chart.draw_series(
            s.marks
                .iter()
                .filter(|&&(_, y)| y.is_finite() && y >= y_lo && y <= y_hi)
                .map(|&p| Circle::new(p, 4, color.stroke_width(2))),
        )?;
    }
    draw_legend(&mut chart)?;
    root.present()?;
    Ok(())
}
