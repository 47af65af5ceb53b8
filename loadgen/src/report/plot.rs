//! The report's plots, drawn by plotters' SVG backend into strings: latency over time, the
//! percentile curve of each operation, throughput over time.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::Summary;
use crate::record::Recorded;
use crate::shop::Op;

const SIZE: (u32, u32) = (960, 420);
const FONT: &str = "sans-serif";

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn color(i: usize) -> RGBColor {
    // Distinct on white and for the common colour blindnesses (Okabe-Ito).
    const OKABE_ITO: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(230, 159, 0),
        RGBColor(0, 158, 115),
        RGBColor(213, 94, 0),
        RGBColor(204, 121, 167),
        RGBColor(86, 180, 233),
        RGBColor(0, 0, 0),
        RGBColor(240, 228, 66),
    ];
    OKABE_ITO[i % OKABE_ITO.len()]
}

/// A blank canvas with a caption, drawn into `buf` by `draw`.
fn svg(draw: impl FnOnce(&Area<'_>) -> anyhow::Result<()>) -> anyhow::Result<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(buf)
}

/// A range for a log axis that holds `values` (milliseconds), never empty.
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return 0.1..10.0;
    }
    (lo / 1.5).max(0.01)..(hi * 1.5).max(lo * 2.0)
}

/// Runs of consecutive buckets (`width` apart), so a line is not drawn across a gap; a bucket
/// alone becomes a short flat stroke across its own width, so it still shows.
fn segments(points: Vec<(f64, f64)>, width: f64) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    for p in points {
        match out.last_mut() {
            Some(seg) if seg.last().is_some_and(|q| p.0 - q.0 <= width * 1.5) => seg.push(p),
            _ => out.push(vec![p]),
        }
    }
    for seg in &mut out {
        if let [(x, y)] = seg[..] {
            *seg = vec![(x, y), (x + width * 0.8, y)];
        }
    }
    out
}

fn bucket_width(s: &Summary) -> f64 {
    match s.timeline.as_slice() {
        [a, b, ..] => b.t_s - a.t_s,
        _ => 1.0,
    }
}

/// Milliseconds on a log axis: no decimals from 1ms up.
fn ms_label(v: &f64) -> String {
    if *v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A grey vertical line where new shoppers stopped arriving.
fn mark_load_end<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<impl Ranged<ValueType = f64>, impl Ranged<ValueType = f64>>,
    >,
    s: &Summary,
    y: (f64, f64),
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let x = s.run.duration_s;
    let grey = RGBColor(80, 80, 80);
    chart
        .draw_series(LineSeries::new(
            vec![(x, y.0), (x, y.1)],
            grey.stroke_width(1),
        ))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .label("shoppers stop arriving")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey));
    Ok(())
}

fn end_of_time(s: &Summary) -> f64 {
    s.timeline
        .last()
        .map(|p| p.t_s + 1.0)
        .unwrap_or(1.0)
        .max(1.0)
}

/// p99 of each operation and p50 of all of them, per timeline bucket (log scale).
pub fn latency_over_time(s: &Summary) -> anyhow::Result<String> {
    svg(|root| {
        let ys = s.timeline.iter().flat_map(|p| {
            p.p99_ms_by_op
                .values()
                .copied()
                .chain(p.p50_ms)
                .collect::<Vec<_>>()
        });
        let yr = log_range(ys);
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Latency over time: p99 per operation, p50 of all (from intended start)",
                (FONT, 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..end_of_time(s), yr.clone().log_scale())?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc("ms (log)")
            .y_label_formatter(&ms_label)
            .draw()?;
        let width = bucket_width(s);
        for (i, op) in Op::ALL.iter().enumerate() {
            let points: Vec<(f64, f64)> = s
                .timeline
                .iter()
                .filter_map(|p| Some((p.t_s, *p.p99_ms_by_op.get(op.name())?)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let c = color(i);
            for (k, seg) in segments(points, width).into_iter().enumerate() {
                let drawn = chart.draw_series(LineSeries::new(seg, c.stroke_width(2)))?;
                if k == 0 {
                    drawn
                        .label(format!("{} p99", op.name()))
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                        });
                }
            }
        }
        let p50: Vec<(f64, f64)> = s
            .timeline
            .iter()
            .filter_map(|p| Some((p.t_s, p.p50_ms?)))
            .collect();
        let grey = RGBColor(120, 120, 120);
        for (k, seg) in segments(p50, width).into_iter().enumerate() {
            let drawn = chart.draw_series(LineSeries::new(seg, grey.stroke_width(1)))?;
            if k == 0 {
                drawn
                    .label("all p50")
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey));
            }
        }
        mark_load_end(&mut chart, s, (yr.start, yr.end))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// The percentile (x: 0 to 99.99, log of 1/(1-q)) against latency of every operation and of
/// order completion.
pub fn percentile_curves(rec: &Recorded) -> anyhow::Result<String> {
    // x = 1/(1-q): 1 is p0, 10 p90, 100 p99, 1000 p99.9, 10000 p99.99.
    let xs: Vec<f64> = (0..=80).map(|k| 10f64.powf(f64::from(k) / 20.0)).collect();
    let mut curves: Vec<(String, Vec<(f64, f64)>)> = Op::ALL
        .iter()
        .map(|op| (op.name().to_string(), &rec.ops[op.index()].latency))
        .chain(std::iter::once((
            "order completion".to_string(),
            &rec.orders.completion,
        )))
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| {
            let pts = xs
                .iter()
                .map(|x| (*x, h.value_at_quantile(1.0 - 1.0 / x) as f64 / 1000.0))
                .collect();
            (name, pts)
        })
        .collect();
    curves.sort_by(|a, b| a.0.cmp(&b.0));
    svg(|root| {
        let ys = curves.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y));
        let mut chart = ChartBuilder::on(root)
            .caption("Latency by percentile", (FONT, 18))
            .margin(12)
            .margin_right(36)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d((1f64..10_000f64).log_scale(), log_range(ys).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("ms (log)")
            .y_label_formatter(&ms_label)
            .x_label_formatter(&|x| {
                let pct = 100.0 * (1.0 - 1.0 / x);
                let s = format!("{pct:.2}");
                format!("p{}", s.trim_end_matches('0').trim_end_matches('.'))
            })
            .draw()?;
        for (i, (name, pts)) in curves.iter().enumerate() {
            let c = color(i);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// Requests, errors and final orders per second, per timeline bucket.
pub fn throughput(s: &Summary) -> anyhow::Result<String> {
    svg(|root| {
        let y_max = s
            .timeline
            .iter()
            .map(|p| p.requests_per_s.max(p.orders_final_per_s))
            .fold(1.0f64, f64::max)
            * 1.15;
        let mut chart = ChartBuilder::on(root)
            .caption("Throughput", (FONT, 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..end_of_time(s), 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc("per second")
            .draw()?;
        type Pick = fn(&super::Point) -> f64;
        let series: [(&str, Pick); 3] = [
            ("requests/s", |p| p.requests_per_s),
            ("errors/s", |p| p.errors_per_s),
            ("orders final/s", |p| p.orders_final_per_s),
        ];
        for (i, (name, pick)) in series.into_iter().enumerate() {
            let c = color(i);
            let pts: Vec<(f64, f64)> = s.timeline.iter().map(|p| (p.t_s, pick(p))).collect();
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        mark_load_end(&mut chart, s, (0.0, y_max))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}
