//! Writing a status snapshot as metric families: a [`Column`] names one number of a row type
//! (a rule, a trigger file, a service) and how to read it, and [`Families::table`] writes each
//! column as one family with a sample per row. Label values are escaped here, because the
//! text encoder writes them verbatim and a rule or file name may hold `"`, `\` or a newline.

use std::fmt::Write;

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelValue, LabelValueEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;

/// Whether a number only grows (a counter, exposed as `NAME_total`) or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One number of a row: metric name (without prefix), help text, kind, and how to read it.
pub type Column<R> = (&'static str, &'static str, Kind, fn(&R) -> u64);

/// A label value, escaped as the exposition format requires.
#[derive(Debug, Clone, Copy)]
pub struct Label<'a>(pub &'a str);

impl EncodeLabelValue for Label<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Writes families into a scrape's encoder.
pub struct Families<'e, 'a> {
    encoder: &'e mut DescriptorEncoder<'a>,
}

impl<'e, 'a> Families<'e, 'a> {
    pub fn new(encoder: &'e mut DescriptorEncoder<'a>) -> Self {
        Self { encoder }
    }

    /// One number without labels.
    pub fn single(&mut self, name: &str, help: &str, kind: Kind, value: u64) -> std::fmt::Result {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, kind.into())?;
        encode_value(&mut metric, kind, value)
    }

    /// Each column as one family, with one sample per row labelled `keys` = `labels(row)`
    /// (no keys: the first row's value alone, when there is a row).
    pub fn table<R>(
        &mut self,
        keys: &[&'static str],
        rows: &[R],
        labels: impl Fn(&R) -> Vec<&str>,
        columns: &[Column<R>],
    ) -> std::fmt::Result {
        for (name, help, kind, value) in columns {
            let mut metric = self
                .encoder
                .encode_descriptor(name, help, None, (*kind).into())?;
            if keys.is_empty() {
                if let Some(row) = rows.first() {
                    encode_value(&mut metric, *kind, value(row))?;
                }
                continue;
            }
            for row in rows {
                let set: Vec<(&str, Label<'_>)> = keys
                    .iter()
                    .copied()
                    .zip(labels(row).into_iter().map(Label))
                    .collect();
                let mut sample = metric.encode_family(&set)?;
                encode_value(&mut sample, *kind, value(row))?;
            }
        }
        Ok(())
    }
}

impl From<Kind> for MetricType {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
        }
    }
}

fn encode_value(
    metric: &mut prometheus_client::encoding::MetricEncoder<'_>,
    kind: Kind,
    value: u64,
) -> std::fmt::Result {
    match kind {
        Kind::Counter => metric.encode_counter::<NoLabelSet, _, u64>(&value, None),
        // Gauges are i64 in the exposition; a status value past that is clamped.
        Kind::Gauge => metric.encode_gauge(&i64::try_from(value).unwrap_or(i64::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[derive(Debug)]
    struct Rows(Vec<(String, u64)>);

    impl prometheus_client::collector::Collector for Rows {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
            let mut f = Families::new(&mut encoder);
            f.single("up", "Whether it runs.", Kind::Gauge, 1)?;
            f.table(
                &["rule"],
                &self.0,
                |r| vec![r.0.as_str()],
                &[("fired", "Runs started.", Kind::Counter, |r| r.1)],
            )
        }
    }

    fn render(rows: Vec<(String, u64)>) -> String {
        let mut registry = Registry::with_prefix("t");
        registry.register_collector(Box::new(Rows(rows)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text
    }

    #[test]
    fn a_table_writes_one_family_per_column_and_a_sample_per_row() {
        let text = render(vec![("a".into(), 3), ("b".into(), 5)]);
        assert!(text.contains("# TYPE t_fired counter"), "{text}");
        assert!(text.contains("t_fired_total{rule=\"a\"} 3\n"), "{text}");
        assert!(text.contains("t_fired_total{rule=\"b\"} 5\n"), "{text}");
        assert!(text.contains("t_up 1\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(vec![("x\"} 9\nevil{a=\"\\".into(), 1)]);
        assert!(
            text.contains(r#"t_fired_total{rule="x\"} 9\nevil{a=\"\\"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains("\nevil"),
            "a name cannot start a line: {text}"
        );
    }
}
