//! Section 5 pages for burrow's two configuration files: a small model of "tables of keys"
//! filled in by [`super::tunnels_page`] and [`super::serve_page`], rendered with the `roff`
//! crate clap_mangen uses, so all pages come from one generator.

use std::path::Path;

use clap_mangen::roff::{bold, italic, roman, Inline, Roff};

use super::{DocFile, DocsError};

/// A configuration file format.
pub(super) struct FormatPage {
    /// Page name without the section, e.g. `burrow-tunnels.toml`.
    pub name: &'static str,
    /// The NAME line after the dash.
    pub summary: &'static str,
    /// Where the file lives and what reads it.
    pub synopsis: &'static str,
    /// DESCRIPTION paragraphs.
    pub description: Vec<String>,
    /// The keys, one section per table of the file.
    pub tables: Vec<KeyTable>,
    /// Further sections: heading and paragraphs (an example line starts with two spaces).
    pub sections: Vec<(&'static str, Vec<String>)>,
    /// Where the example came from (for the sentence before it).
    pub example_source: &'static str,
    /// A complete example file; the repository's tests parse it.
    pub example: &'static str,
    /// SEE ALSO references.
    pub see_also: &'static str,
}

#[cfg(test)]
impl FormatPage {
    /// The keys the table under `heading` documents, sorted (none if there is no such table):
    /// what the pages' tests compare with the parser's [`super::fields::sorted`] keys.
    pub fn documented_keys(&self, heading: &str) -> Vec<&'static str> {
        let keys = self
            .tables
            .iter()
            .find(|t| t.heading == heading)
            .map(|t| t.keys.iter().map(|k| k.name).collect::<Vec<_>>())
            .unwrap_or_default();
        super::fields::sorted(&keys)
    }
}

/// The keys of one TOML table.
pub(super) struct KeyTable {
    /// Section heading, e.g. `[LIMITS]`.
    pub heading: &'static str,
    /// What the table is for.
    pub intro: String,
    /// Its keys, in the order a reader needs them.
    pub keys: Vec<Key>,
}

/// One key.
pub(super) struct Key {
    /// The TOML key.
    pub name: &'static str,
    /// How a value is written, e.g. `"yes" | "accept-new"`.
    pub value: &'static str,
    /// What it does and what is refused.
    pub help: String,
    /// The value when the key is absent, if there is a simple one.
    pub default: Option<String>,
}

impl Key {
    /// A key with a default.
    pub fn new(name: &'static str, value: &'static str, default: impl Into<String>) -> Self {
        Key {
            name,
            value,
            help: String::new(),
            default: Some(default.into()),
        }
    }

    /// A key without a simple default (the help says what happens when it is absent).
    pub fn bare(name: &'static str, value: &'static str) -> Self {
        Key {
            name,
            value,
            help: String::new(),
            default: None,
        }
    }

    /// Sets the help text.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = help.into();
        self
    }
}

/// The page as `man/NAME.5`.
pub(super) fn render(page: &FormatPage) -> Result<DocFile, DocsError> {
    let mut r = Roff::new();
    let source = format!("burrow {}", env!("CARGO_PKG_VERSION"));
    r.control("TH", [page.name, "5", "", &source, "burrow manual"]);
    r.control("SH", ["NAME"]);
    r.text([roman(format!("{} - {}", page.name, page.summary))]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([roman(page.synopsis)]);
    section(&mut r, "DESCRIPTION", &page.description);
    for table in &page.tables {
        r.control("SH", [table.heading]);
        r.text([roman(&table.intro)]);
        for key in &table.keys {
            render_key(&mut r, key);
        }
    }
    for (heading, paragraphs) in &page.sections {
        section(&mut r, heading, paragraphs);
    }
    r.control("SH", ["EXAMPLE"]);
    r.text([roman(page.example_source)]);
    r.control("PP", []).control("RS", ["4"]).control("nf", []);
    for line in page.example.lines() {
        r.text([roman(line)]);
    }
    r.control("fi", []).control("RE", []);
    r.control("SH", ["SEE ALSO"]);
    r.text([roman(page.see_also)]);
    Ok(DocFile {
        path: Path::new("man").join(format!("{}.5", page.name)),
        contents: r.render().into_bytes(),
    })
}

/// A section of paragraphs; one that starts with two spaces is an example, set indented and
/// unfilled (a long key line would otherwise not fit the paragraph's justification).
fn section(r: &mut Roff, heading: &str, paragraphs: &[String]) {
    r.control("SH", [heading]);
    for (i, p) in paragraphs.iter().enumerate() {
        if i > 0 {
            r.control("PP", []);
        }
        match p.strip_prefix("  ") {
            Some(example) => {
                r.control("RS", ["4"]).control("nf", []);
                r.text([roman(example)]);
                r.control("fi", []).control("RE", []);
            }
            None => {
                r.text([roman(p)]);
            }
        }
    }
}

fn render_key(r: &mut Roff, key: &Key) {
    r.control("TP", []);
    let head: Vec<Inline> = vec![bold(key.name), roman(" = "), italic(key.value)];
    r.text(head);
    r.text([roman(&key.help)]);
    if let Some(default) = &key.default {
        r.text([roman("Default: "), bold(default), roman(".")]);
    }
}
