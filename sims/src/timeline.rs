//! A self-contained SVG picture of one run: a lane per pod with its role over
//! simulated time, faults as red lines, new leader terms as black marks.

use cluster_mode_core::Role;
use cluster_mode_madsim::{RecordKind, Trace};
use std::fmt::Write as _;

const LEFT: f64 = 70.0;
const WIDTH: f64 = 1100.0;
const LANE: f64 = 20.0;
const TOP: f64 = 40.0;

fn color(role: Role) -> &'static str {
    match role {
        Role::Primary => "#2e9e44",
        Role::Secondary => "#5b8fd6",
        Role::Candidate => "#f0a030",
        Role::Inactive => "#c8c8c8",
        Role::Leaving => "#9b59b6",
        _ => "#000000",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders `trace` as an SVG document titled `title`.
pub fn svg(trace: &Trace, title: &str) -> String {
    let lanes = trace.names.len().max(1);
    let end = trace.end_ns.max(1) as f64;
    let x = |t: u64| LEFT + WIDTH * (t as f64 / end);
    let faults: Vec<(u64, &str)> = trace
        .records
        .iter()
        .filter_map(|r| match &r.kind {
            RecordKind::Fault(f) => Some((r.at_ns, f.as_str())),
            _ => None,
        })
        .collect();
    let legend_y = TOP + lanes as f64 * LANE + 30.0;
    let fault_list_y = legend_y + 30.0;
    let height = fault_list_y + 16.0 * faults.len() as f64 + 20.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="monospace" font-size="11">"#,
        LEFT + WIDTH + 20.0
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="16" font-size="13">{}</text>"#,
        esc(title)
    );
    // Time axis: a tick per second (or per 10 s for long runs).
    let secs = trace.end_ns / 1_000_000_000;
    let step = if secs > 60 {
        10
    } else if secs > 20 {
        5
    } else {
        1
    };
    for s in (0..=secs).step_by(step as usize) {
        let xs = x(s * 1_000_000_000);
        let _ = writeln!(
            o,
            r##"<line x1="{xs:.1}" y1="{}" x2="{xs:.1}" y2="{}" stroke="#eee"/><text x="{xs:.1}" y="{}" fill="#888">{s}s</text>"##,
            TOP - 4.0,
            TOP + lanes as f64 * LANE,
            TOP - 6.0
        );
    }
    // Lanes.
    let mut cur: Vec<Option<(u64, Role)>> = vec![None; lanes];
    let mut paused_since: Vec<Option<u64>> = vec![None; lanes];
    let mut last_term: Vec<u64> = vec![0; lanes];
    let mut rects = String::new();
    let mut marks = String::new();
    let lane_y = |s: usize| TOP + s as f64 * LANE;
    let close = |rects: &mut String, s: usize, seg: Option<(u64, Role)>, t: u64| {
        if let Some((from, role)) = seg {
            if t > from {
                let _ = writeln!(
                    rects,
                    r#"<rect x="{:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{}"/>"#,
                    x(from),
                    lane_y(s) + 3.0,
                    (x(t) - x(from)).max(0.3),
                    LANE - 6.0,
                    color(role)
                );
            }
        }
    };
    for r in &trace.records {
        let s = r.slot;
        if s >= lanes {
            continue;
        }
        match &r.kind {
            RecordKind::View(v) => {
                if cur[s].map(|c| c.1) != Some(v.role) {
                    close(&mut rects, s, cur[s], r.at_ns);
                    cur[s] = Some((r.at_ns, v.role));
                }
                if v.is_leader && v.term != last_term[s] {
                    last_term[s] = v.term;
                    let xs = x(r.at_ns);
                    let _ = writeln!(
                        marks,
                        r#"<path d="M{xs:.1},{:.1} l-4,-5 h8 z" fill="black"/><text x="{:.1}" y="{:.1}" font-size="9">t{}</text>"#,
                        lane_y(s) + 3.0,
                        xs + 3.0,
                        lane_y(s) + 2.0,
                        v.term
                    );
                }
            }
            RecordKind::Stopped(_) | RecordKind::Started { .. } => {
                close(&mut rects, s, cur[s].take(), r.at_ns);
            }
            RecordKind::Paused => paused_since[s] = Some(r.at_ns),
            RecordKind::Resumed => {
                if let Some(p) = paused_since[s].take() {
                    let _ = writeln!(
                        marks,
                        r##"<rect x="{:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="#222" opacity="0.45"/>"##,
                        x(p),
                        lane_y(s) + 3.0,
                        x(r.at_ns) - x(p),
                        LANE - 6.0
                    );
                }
            }
            RecordKind::Fault(_) => {}
        }
    }
    for (s, seg) in cur.iter().enumerate() {
        close(&mut rects, s, *seg, trace.end_ns);
    }
    for (s, name) in trace.names.iter().enumerate() {
        let _ = writeln!(
            o,
            r#"<text x="4" y="{:.1}">{}</text>"#,
            lane_y(s) + 14.0,
            esc(name)
        );
    }
    o.push_str(&rects);
    o.push_str(&marks);
    for (i, (t, f)) in faults.iter().enumerate() {
        let xs = x(*t);
        let _ = writeln!(
            o,
            r#"<line x1="{xs:.1}" y1="{}" x2="{xs:.1}" y2="{}" stroke="red" stroke-dasharray="3,2"><title>{}</title></line><text x="{xs:.1}" y="{}" fill="red" font-size="9">{}</text>"#,
            TOP - 2.0,
            TOP + lanes as f64 * LANE,
            esc(f),
            TOP + lanes as f64 * LANE + 10.0,
            i + 1
        );
        let _ = writeln!(
            o,
            r#"<text x="{LEFT}" y="{:.1}" fill="red">{}: {:.3}s {}</text>"#,
            fault_list_y + 16.0 * i as f64,
            i + 1,
            *t as f64 / 1e9,
            esc(f)
        );
    }
    let mut lx = LEFT;
    for role in [
        Role::Primary,
        Role::Secondary,
        Role::Candidate,
        Role::Inactive,
        Role::Leaving,
    ] {
        let _ = writeln!(
            o,
            r#"<rect x="{lx}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{}" y="{:.1}">{role:?}</text>"#,
            legend_y,
            color(role),
            lx + 16.0,
            legend_y + 10.0
        );
        lx += 110.0;
    }
    let _ = writeln!(
        o,
        r##"<rect x="{lx}" y="{legend_y:.1}" width="12" height="12" fill="#222" opacity="0.45"/><text x="{}" y="{:.1}">paused</text><path d="M{},{:.1} l-4,-5 h8 z" fill="black"/><text x="{}" y="{:.1}">new leader term</text><text x="{}" y="{:.1}" fill="red">| fault</text>"##,
        lx + 16.0,
        legend_y + 10.0,
        lx + 100.0,
        legend_y + 10.0,
        lx + 108.0,
        legend_y + 10.0,
        lx + 250.0,
        legend_y + 10.0
    );
    o.push_str("</svg>\n");
    o
}
