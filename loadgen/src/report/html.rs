//! One static HTML page: the summary's tables and the SVG plots inlined. No script, no
//! external resource, so it opens from disk or an artifact store as it is.

use std::fmt::Write;

use super::{Percentiles, Summary};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG element alone (plotters writes no XML prolog today; drop one if it ever does).
fn inline_svg(svg: &str) -> &str {
    svg.find("<svg").map(|i| &svg[i..]).unwrap_or(svg)
}

fn pct_cells(p: &Percentiles) -> String {
    [p.p50, p.p90, p.p99, p.p999, p.max, p.mean]
        .iter()
        .map(|v| format!("<td>{v:.2}</td>"))
        .collect()
}

const STYLE: &str =
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}\
table{border-collapse:collapse;margin:0.5em 0 1.5em}\
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}\
th:first-child,td:first-child{text-align:left}\
th{background:#f3f3f3}\
figure{margin:1em 0}\
.kv td{text-align:left}";

pub fn page(s: &Summary, svgs: &[String; 3]) -> String {
    let r = &s.run;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>loadgen: {} over {}</title><style>{STYLE}</style></head><body>\n",
        esc(&r.scenario),
        esc(&r.transport)
    );
    let _ = writeln!(
        h,
        "<h1>loadgen: {} over {}</h1>",
        esc(&r.scenario),
        esc(&r.transport)
    );
    let load = match (r.rate, r.shoppers) {
        (Some(rate), _) => format!("open loop, {rate} shoppers/s"),
        (_, Some(n)) => format!("closed loop, {n} shoppers"),
        _ => r.mode.clone(),
    };
    let rows: Vec<(&str, String)> = vec![
        ("target", r.target.clone()),
        ("load", load),
        (
            "duration",
            format!(
                "{}s (elapsed {:.1}s with the drain)",
                r.duration_s, r.elapsed_s
            ),
        ),
        (
            "catalog",
            format!("{} SKUs, hot: {}", r.skus, r.hot_skus.join(", ")),
        ),
        ("seed", r.seed.to_string()),
        ("started", r.started_at.clone()),
        ("run id", r.run_id.clone()),
        (
            "requests",
            format!(
                "{} ({:.1}/s), {} errors",
                s.totals.requests, s.totals.requests_per_s, s.totals.errors
            ),
        ),
    ];
    h.push_str("<table class=\"kv\">\n");
    for (k, v) in rows {
        let _ = writeln!(h, "<tr><th>{k}</th><td>{}</td></tr>", esc(&v));
    }
    h.push_str("</table>\n");

    h.push_str(
        "<h2>Operations</h2>\n<p>Latency in milliseconds, from each call's start (open loop: a \
         session's first call from when the shopper was due).</p>\n<table>\n<tr><th>operation</th>\
         <th>count</th><th>errors</th><th>per s</th><th>p50</th><th>p90</th><th>p99</th>\
         <th>p99.9</th><th>max</th><th>mean</th></tr>\n",
    );
    for o in &s.operations {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td>{}</tr>",
            esc(&o.op),
            o.count,
            o.errors,
            o.per_s,
            pct_cells(&o.latency_ms)
        );
    }
    h.push_str("</table>\n<h2>Errors</h2>\n");
    if s.errors.is_empty() {
        h.push_str("<p>None.</p>\n");
    } else {
        h.push_str("<table>\n<tr><th>operation</th><th>kind</th><th>count</th></tr>\n");
        for e in &s.errors {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&e.op),
                esc(&e.kind),
                e.count
            );
        }
        h.push_str("</table>\n");
    }

    let o = &s.orders;
    let _ = writeln!(
        h,
        "<h2>Orders</h2>\n<p>{} placed, {} reached a final status ({:.2}/s).</p>",
        o.placed, o.final_count, o.final_per_s
    );
    h.push_str("<table>\n<tr><th>outcome</th><th>orders</th></tr>\n");
    for (k, v) in &o.outcomes {
        let _ = writeln!(h, "<tr><td>{}</td><td>{v}</td></tr>", esc(k));
    }
    h.push_str("</table>\n");
    if let Some(c) = &o.completion_ms {
        h.push_str(
            "<p>Completion: from sending PlaceOrder to seeing the final status, in ms.</p>\n<table>\n\
             <tr><th>orders</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th>\
             <th>mean</th></tr>\n",
        );
        let _ = writeln!(h, "<tr><td>all final</td>{}</tr>", pct_cells(c));
        for (k, p) in &o.completion_by_outcome_ms {
            let _ = writeln!(h, "<tr><td>{}</td>{}</tr>", esc(k), pct_cells(p));
        }
        h.push_str("</table>\n");
    }
    if let Some(ol) = &s.open_loop {
        let _ = writeln!(
            h,
            "<h2>Schedule</h2>\n<p>{} shoppers arrived; {} started more than 10ms after they were \
             due (max lag {:.1}ms). Their latency still counts from when they were due.</p>",
            ol.arrivals, ol.late, ol.max_lag_ms
        );
    }
    if s.unfinished_sessions > 0 {
        let _ = writeln!(
            h,
            "<p>{} sessions were still running when the drain ended and were cut off.</p>",
            s.unfinished_sessions
        );
    }

    h.push_str("<h2>Plots</h2>\n");
    for svg in svgs {
        let _ = writeln!(h, "<figure>{}</figure>", inline_svg(svg));
    }
    h.push_str("</body></html>\n");
    h
}
