//! The two exposition formats every `/metrics` in the fleet serves. `prometheus-client` writes
//! OpenMetrics; Prometheus asks for it (its `Accept` header names
//! `application/openmetrics-text`) and gets it. Anything else — `promtool check metrics`, curl,
//! an older agent — gets Prometheus's classic text format (0.0.4), converted here: counter
//! families named with their `_total` suffix, `info` families as gauges named `…_info`,
//! `unknown` as `untyped`, and no `_created` samples, exemplars, `# UNIT` or `# EOF` lines.

/// The OpenMetrics content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format's content type.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a request's `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// The body and content type to answer with, for a request whose `Accept` is `accept`.
pub fn negotiate(openmetrics: String, accept: Option<&str>) -> (&'static str, String) {
    if wants_openmetrics(accept) {
        (OPENMETRICS, openmetrics)
    } else {
        (TEXT, to_text_format(&openmetrics))
    }
}

/// Converts OpenMetrics text to the classic text format.
pub fn to_text_format(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // The current family: its OpenMetrics type, and its HELP line waiting for the TYPE line
    // (which decides the family's name in the classic format).
    let mut kind = String::new();
    let mut help: Option<(String, String)> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name.to_owned(), text.to_owned()));
            kind.clear();
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            kind = t.to_owned();
            let (renamed, classic) = match t {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_owned(), t),
                _ => (name.to_owned(), "untyped"),
            };
            if let Some((_, text)) = help.take().filter(|(h, _)| h == name) {
                out.push_str(&format!("# HELP {renamed} {text}\n"));
            }
            out.push_str(&format!("# TYPE {renamed} {classic}\n"));
            continue;
        }
        if line.starts_with('#') {
            // `# UNIT`, `# EOF`, comments.
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        if name.ends_with("_created") && matches!(kind.as_str(), "counter" | "histogram" | "summary") {
            continue;
        }
        // Drop an exemplar: ` # {...} value` after the sample's value.
        let after_labels = if line[name_end..].starts_with('{') {
            closing_brace(line, name_end).map_or(line.len(), |i| i + 1)
        } else {
            name_end
        };
        let sample = match line[after_labels..].find(" # ") {
            Some(i) => &line[..after_labels + i],
            None => line,
        };
        out.push_str(sample);
        out.push('\n');
    }
    out
}

/// The index of the `}` closing the label set that opens at `open`, skipping quoted values.
fn closing_brace(line: &str, open: usize) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in line.char_indices().skip_while(|(i, _)| *i <= open) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_the_classic_text_format() {
        let om = "# HELP jobs Jobs done.\n# TYPE jobs counter\njobs_total{kind=\"a # b}\"} 3 # {trace=\"x\"} 1\njobs_created{kind=\"a\"} 1.7e9\n\
# HELP w This worker.\n# TYPE w info\nw_info{id=\"1\"} 1\n\
# HELP d Duration.\n# TYPE d histogram\n# UNIT d seconds\nd_bucket{le=\"+Inf\"} 2\nd_sum 0.5\nd_count 2\nd_created 1.0\n\
# HELP g A gauge.\n# TYPE g gauge\ng 1\n# TYPE u unknown\nu 2\n# EOF\n";
        let want = "# HELP jobs_total Jobs done.\n# TYPE jobs_total counter\njobs_total{kind=\"a # b}\"} 3\n\
# HELP w_info This worker.\n# TYPE w_info gauge\nw_info{id=\"1\"} 1\n\
# HELP d Duration.\n# TYPE d histogram\nd_bucket{le=\"+Inf\"} 2\nd_sum 0.5\nd_count 2\n\
# HELP g A gauge.\n# TYPE g gauge\ng 1\n# TYPE u untyped\nu 2\n";
        assert_eq!(to_text_format(om), want);
    }

    #[test]
    fn only_an_openmetrics_accept_gets_openmetrics() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(None));
    }
}
