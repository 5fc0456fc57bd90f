//! Pieces of the examples' SVG figures (plotters) shared by `compare` and `mup_transfer`
//! (included with `#[path]`; not every example uses every piece).
#![allow(dead_code)]

use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use std::error::Error;

/// A legend entry: a 20-pixel line in `style` (for `SeriesAnno::legend`).
pub fn legend_line(style: ShapeStyle) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style)
}

/// Draws the legend of `chart`: upper right, on a translucent white box with a black border.
pub fn draw_legend<'a, 'b: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
) -> Result<(), Box<dyn Error>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The chart of a figure: `title` in 20-point sans-serif, a 16-pixel margin and label areas of
/// 44 (x) and 64 (y) pixels; the axes are set by the caller.
pub fn chart_builder<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64);
    builder
}
