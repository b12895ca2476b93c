//! The exposition formats every `/metrics` in the fleet serves, chosen by the scraper's
//! `Accept` header:
//! - **Prometheus's protobuf** (`io.prometheus.client.MetricFamily`, length-delimited), for a
//!   Prometheus that asks for it (it does with `--enable-feature=native-histograms`): the only
//!   format that carries native histograms, so every histogram ([`histogram`]) goes out with
//!   its classic buckets *and* its native (sparse exponential) ones.
//! - **OpenMetrics**, which `prometheus-client` writes, for a Prometheus that asks for it (its
//!   default `Accept` names `application/openmetrics-text`): classic buckets.
//! - **The classic text format** (0.0.4) for anything else — `promtool check metrics`, curl, an
//!   older agent — converted here: counter families named with their `_total` suffix, `info`
//!   families as gauges named `…_info`, `unknown` as `untyped`, and no `_created` samples,
//!   exemplars, `# UNIT` or `# EOF` lines.

use prometheus_client::metrics::histogram::{Histogram, NativeHistogramConfig};
use prometheus_client::registry::Registry;

/// The OpenMetrics content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format's content type.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Prometheus's protobuf format's content type.
pub const PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// A histogram with `buckets` as its classic buckets, and native buckets beside them: a growth
/// factor of at most 1.1 per bucket (schema 3, as Prometheus's Go client), at most 160 of
/// them. Past that the resolution halves; the histogram is never reset to regain it, so its
/// classic counters never drop.
pub fn histogram(buckets: impl IntoIterator<Item = f64>) -> Histogram {
    Histogram::new_classic_and_native(buckets, NativeHistogramConfig::new(1.1).max_buckets(160))
}

/// A format `/metrics` answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus's protobuf, with native histograms.
    Protobuf,
    /// OpenMetrics text.
    OpenMetrics,
    /// The classic text format.
    Text,
}

/// The quality a media range in `accept` that starts with `media` (and names `param`, when
/// given) is asked for: `None` when no range names it.
fn quality(accept: &str, media: &str, param: Option<&str>) -> Option<f32> {
    accept
        .split(',')
        .filter(|r| r.trim_start().starts_with(media) && param.is_none_or(|p| r.contains(p)))
        .map(|r| {
            r.split(';')
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0)
        })
        .reduce(f32::max)
}

/// The format to answer a request whose `Accept` is `accept` with: the protobuf format or
/// OpenMetrics, whichever it asks for more (the protobuf on a tie), else the classic text.
pub fn format_for(accept: Option<&str>) -> Format {
    let Some(accept) = accept else { return Format::Text };
    let pb = quality(
        accept,
        "application/vnd.google.protobuf",
        Some("io.prometheus.client.MetricFamily"),
    )
    .filter(|q| *q > 0.0);
    let om = quality(accept, "application/openmetrics-text", None).filter(|q| *q > 0.0);
    match (pb, om) {
        (Some(p), Some(o)) if p >= o => Format::Protobuf,
        (Some(_), None) => Format::Protobuf,
        (_, Some(_)) => Format::OpenMetrics,
        (None, None) => Format::Text,
    }
}

/// Whether a request's `Accept` header asks for OpenMetrics (over the classic text).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    format_for(accept) == Format::OpenMetrics
}

/// `registry` encoded as a request whose `Accept` is `accept` asks: the content type and the
/// body. A registry that fails to encode answers empty (in the format asked for).
pub fn render(registry: &Registry, accept: Option<&str>) -> (&'static str, Vec<u8>) {
    match format_for(accept) {
        Format::Protobuf => (
            PROTOBUF,
            prometheus_client::encoding::prometheus_protobuf::encode_to_vec(registry).unwrap_or_default(),
        ),
        f => {
            let mut om = String::new();
            if prometheus_client::encoding::text::encode(&mut om, registry).is_err() {
                om.clear();
            }
            if f == Format::OpenMetrics {
                (OPENMETRICS, om.into_bytes())
            } else {
                (TEXT, to_text_format(&om).into_bytes())
            }
        }
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
    fn the_format_is_what_the_scraper_asks_for_most() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(None));
        // Prometheus 2.42 with native histograms on, and with them off.
        let native = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,\
application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,\
text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(format_for(Some(native)), Format::Protobuf);
        let classic = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(format_for(Some(classic)), Format::OpenMetrics);
        // Another protobuf (OpenMetrics's) is not ours; q=0 refuses.
        assert_eq!(
            format_for(Some("application/vnd.google.protobuf;proto=openmetrics.MetricSet")),
            Format::Text
        );
        assert_eq!(
            format_for(Some(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;q=0,text/plain"
            )),
            Format::Text
        );
        assert_eq!(
            format_for(Some(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;q=0.2,application/openmetrics-text"
            )),
            Format::OpenMetrics
        );
    }

    #[test]
    fn histograms_go_out_native_in_the_protobuf_and_classic_in_text() {
        use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::MetricFamily;
        use prost::Message as _;
        let mut registry = Registry::default();
        let h = histogram([0.1, 1.0, 10.0]);
        registry.register("wait_seconds", "Waits", h.clone());
        for v in [0.05, 0.5, 0.5, 5.0, 50.0] {
            h.observe(v);
        }
        let (ct, body) = render(
            &registry,
            Some("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"),
        );
        assert_eq!(ct, PROTOBUF);
        let mf = MetricFamily::decode_length_delimited(body.as_slice()).expect("one family");
        assert_eq!(mf.name, "wait_seconds");
        let got = mf.metric[0].histogram.clone().expect("a histogram");
        assert_eq!(got.sample_count, 5);
        // Native: schema 3, and the bucket counts (deltas) add up to every observation.
        assert_eq!(got.schema, 3);
        let mut count = 0i64;
        let total: i64 = got
            .positive_delta
            .iter()
            .map(|d| {
                count += d;
                count
            })
            .sum();
        assert_eq!(total, 5);
        // Classic buckets beside them.
        assert!(got.bucket.len() >= 3, "{got:?}");
        let (_, text) = render(&registry, None);
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("wait_seconds_bucket{le=\"1.0\"} 3"), "{text}");
    }
}
