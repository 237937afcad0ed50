//! Writes `report.json`, `report.md` and `latency.svg`.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::harness::stats::{Report, Row};

pub(crate) fn write_all(report: &Report, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let ratios: serde_json::Map<String, Value> = report
        .ratios
        .iter()
        .map(|(k, r)| (k.clone(), r.value.map_or(Value::Null, |v| json!(round(v)))))
        .collect();
    let doc = json!({
        "results": report.rows,
        "ratios": ratios,
        "ratio_details": report.ratios,
        "not_measured": report.not_measured,
        "meta": report.meta,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("report.json"), text)?;
    std::fs::write(dir.join("latency.svg"), svg(&report.rows))?;
    std::fs::write(dir.join("report.md"), markdown(report))?;
    Ok(())
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A short label of a row's configuration: durability and the metric's parameters.
pub(crate) fn config_label(c: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(f) = c.get("fsync").and_then(Value::as_str) {
        parts.push(f.to_string());
    }
    for k in ["waiters", "readers", "incrementers", "ttl_s", "locks"] {
        if let Some(v) = c.get(k).filter(|v| !v.is_null()) {
            parts.push(format!("{k}={v}"));
        }
    }
    parts.join(", ")
}

fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 10_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

fn fmt_extra(e: &Value) -> String {
    let Some(m) = e.as_object() else {
        return String::new();
    };
    m.iter()
        .map(|(k, v)| match v {
            Value::Number(n) => {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 {
                    format!("{k}={f:.0}")
                } else {
                    format!("{k}={f:.2}")
                }
            }
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn markdown(report: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# kv-toolkit benchmark report\n");
    for (k, v) in &report.meta {
        let v = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        let _ = writeln!(s, "- **{k}**: {v}");
    }
    let _ = writeln!(s, "\n## Headline ratios\n");
    let _ = writeln!(s, "| ratio | value | goal | met | pairing |");
    let _ = writeln!(s, "| --- | ---: | --- | --- | --- |");
    for (k, r) in &report.ratios {
        let _ = writeln!(
            s,
            "| `{k}` | {} | {} {} | {} | {} |",
            r.value.map_or("n/a".into(), |v| format!("{v:.3}")),
            r.direction,
            r.goal,
            match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            },
            r.pairing
        );
    }
    let mut metrics: Vec<&str> = Vec::new();
    for r in &report.rows {
        if !metrics.contains(&r.metric.as_str()) {
            metrics.push(&r.metric);
        }
    }
    let _ = writeln!(s, "\n## Results\n");
    let _ = writeln!(
        s,
        "Latencies from HDR histograms after a warm-up; `n` samples. ![latency distributions](latency.svg)\n"
    );
    for m in metrics {
        let _ = writeln!(s, "### {m}\n");
        let _ = writeln!(s, "| system | config | n | p50 | p99 | max | other |");
        let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: | ---: | --- |");
        for r in report.rows.iter().filter(|r| r.metric == m) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.system,
                config_label(&r.config),
                r.n,
                fmt_us(r.p50_us),
                fmt_us(r.p99_us),
                fmt_us(r.max_us),
                fmt_extra(&r.extra)
            );
        }
        let _ = writeln!(s);
    }
    if !report.not_measured.is_empty() {
        let _ = writeln!(s, "## Not measured\n");
        for n in &report.not_measured {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The system family a row's system belongs to, with its one colour in the chart.
fn family(system: &str) -> (&'static str, &'static str) {
    let s = system.to_ascii_lowercase();
    if s.starts_with("toolkit") || s.starts_with("kvtk") {
        ("kv-toolkit", "#1f77b4")
    } else if s.starts_with("raw") || s.starts_with("core nats") {
        ("raw NATS (async-nats)", "#2ca02c")
    } else if s.starts_with("etcd") {
        ("etcd", "#d62728")
    } else if s.starts_with("redis") {
        ("Redis", "#9467bd")
    } else {
        ("other", "#7f7f7f")
    }
}

/// One swatch per system family present, under the title.
fn legend(s: &mut String, rows: &[&Row]) {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for r in rows {
        let f = family(&r.system);
        if !seen.contains(&f) {
            seen.push(f);
        }
    }
    let mut x = 10.0;
    for (name, color) in seen {
        let _ = writeln!(
            s,
            r#"<rect x="{x:.1}" y="26" width="12" height="10" fill="{color}" fill-opacity="0.5" stroke="{color}"/><text x="{:.1}" y="35">{}</text>"#,
            x + 16.0,
            esc(name)
        );
        x += 16.0 + 7.0 * name.chars().count() as f64 + 24.0;
    }
}

/// A log-scale chart: per row a line from min to max, a box from p50 to p99 and a tick at p90.
pub(crate) fn svg(rows: &[Row]) -> String {
    let rows: Vec<&Row> = rows
        .iter()
        .filter(|r| r.hist.is_some() && r.n > 0)
        .collect();
    let label_w = 430.0;
    let plot_w = 620.0;
    let row_h = 16.0;
    let top = 60.0;
    let mut metrics: Vec<&str> = Vec::new();
    for r in &rows {
        if !metrics.contains(&r.metric.as_str()) {
            metrics.push(&r.metric);
        }
    }
    let lines = rows.len() + metrics.len();
    let height = top + lines as f64 * row_h + 40.0;
    let width = label_w + plot_w + 30.0;
    let lo = 10f64.log10();
    let hi = 10_000_000f64.log10(); // 10 µs .. 10 s
    let x = |us: f64| label_w + (us.max(10.0).log10() - lo) / (hi - lo) * plot_w;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="16" font-size="13">Latency distributions (log scale): line min–max, box p50–p99, tick p90</text>"#
    );
    for (i, label) in ["10µs", "100µs", "1ms", "10ms", "100ms", "1s", "10s"]
        .iter()
        .enumerate()
    {
        let xv = x(10f64.powi(i as i32 + 1));
        let _ = writeln!(
            s,
            r##"<line x1="{xv:.1}" y1="{}" x2="{xv:.1}" y2="{}" stroke="#ddd"/><text x="{xv:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            top - 8.0,
            height - 30.0,
            height - 16.0
        );
    }
    legend(&mut s, &rows);
    let mut y = top;
    for m in metrics {
        let _ = writeln!(
            s,
            r#"<text x="4" y="{:.1}" font-weight="bold">{}</text>"#,
            y + 11.0,
            esc(m)
        );
        y += row_h;
        for r in rows.iter().filter(|r| r.metric == m) {
            let color = family(&r.system).1;
            let Some(h) = &r.hist else { continue };
            let label = format!("{} [{}]", r.system, config_label(&r.config));
            let mid = y + row_h / 2.0;
            let _ = writeln!(
                s,
                r#"<text x="14" y="{:.1}">{}</text>"#,
                y + 11.0,
                esc(&label)
            );
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="{color}"/>"#,
                x(h.min()),
                x(h.max())
            );
            let (a, b) = (x(h.q(0.5)), x(h.q(0.99)));
            let _ = writeln!(
                s,
                r#"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}" fill-opacity="0.5" stroke="{color}"/>"#,
                y + 3.0,
                (b - a).max(1.5),
                row_h - 6.0
            );
            let p90 = x(h.q(0.9));
            let _ = writeln!(
                s,
                r#"<line x1="{p90:.1}" y1="{:.1}" x2="{p90:.1}" y2="{:.1}" stroke="black"/>"#,
                y + 2.0,
                y + row_h - 2.0
            );
            y += row_h;
        }
    }
    let _ = writeln!(s, "</svg>");
    s
}
