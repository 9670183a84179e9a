//! Prometheus text exposition (format 0.0.4), written one way for both programs: `burrow serve`
//! (relay totals, refusals by reason) and `burrow up` (one series per tunnel) only say which
//! families and samples they have.

use std::fmt::Write as _;

/// The exposition text being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a metric family: its `# HELP` and `# TYPE` lines (`kind` is `gauge` or `counter`).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample of the family just started, with its labels (values escaped as the format
    /// asks: backslash, double quote and newline).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The text written.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value as the text format writes it.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_families_and_escaped_labels() {
        let mut e = Exposition::default();
        e.family("x_total", "counter", "things");
        e.sample("x_total", &[], 3);
        e.family("y", "gauge", "per tunnel");
        e.sample("y", &[("tunnel", "a\"b\\c\nd")], 1);
        e.sample("y", &[("a", "1"), ("b", "2")], 0);
        assert_eq!(
            e.finish(),
            "# HELP x_total things\n# TYPE x_total counter\nx_total 3\n\
             # HELP y per tunnel\n# TYPE y gauge\ny{tunnel=\"a\\\"b\\\\c\\nd\"} 1\ny{a=\"1\",b=\"2\"} 0\n"
        );
    }
}
