//! Every authorized_keys line, serve.toml and tunnels.toml snippet the documentation shows is
//! loaded by the parser the relay and `burrow up` use, so the documentation cannot drift from
//! the parser.
//!
//! The snippets are taken from the documents themselves, never copied here: fenced code blocks
//! and inline option lists of README.md and SECURITY.md, the no-fill blocks (`.nf`/`.fi`) of
//! the man pages in doc/man, the files under examples/ and packaging/etc, with their
//! commented-out settings and example lines switched on. doc/man is what `src/docs` generates
//! (tests/docs.rs checks that), so the page sources there are covered through it; the section
//! 5 pages include examples/*.toml verbatim.
//!
//! One substitution: a key written as the usual placeholder `AAAA...` is replaced by a real
//! public key of the type named before it; everything else on the line is loaded as written.

use std::path::{Path, PathBuf};

use burrow::server::authorized_keys::{AuthorizedKeys, KEY_TYPES};
use burrow::server::config::{parse_file, ServeConfig, ServeOverrides};

/// Real public keys (test keys, no private half anywhere) standing in for `AAAA...`.
const SAMPLE_KEYS: &[(&str, &str)] = &[
    (
        "ssh-ed25519",
        "AAAAC3NzaC1lZDI1NTE5AAAAIFmtULleTLm8Eb6nio0w3CORgH321ApT6Bm4IV5RrAwI",
    ),
    (
        "ecdsa-sha2-nistp256",
        "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBAnAzCqehzZ8HcayQx8sYRkEACd5CHVf4ao4IwP9dSty2MBEnghxdZ6Xziop6kUqr6ZgNJZ7KcdsinWlY95qAtI=",
    ),
    (
        "ssh-rsa",
        "AAAAB3NzaC1yc2EAAAADAQABAAAAgQDHu0lHV1i6xijomDm1fzpybojs2TFoG9WtJ1ajfZnFSkbQCxs2UaTt28HRLcwigajsCb87eokphojMZh8UMii1Aewdady2DqBNyIXxm2Cb9daPBOI1eY+4TAZ4KF1ZovtVT7BMy6igwoKiVuLKzkAqqDH05YdY3SYsFb7lLbzYyQ==",
    ),
];

/// Option names an inline option list in prose may start with.
const OPTION_NAMES: &[&str] = &[
    "restrict",
    "port-forwarding",
    "no-port-forwarding",
    "permitopen",
    "permitlisten",
    "from",
    "expiry-time",
    "burrow-privileged-ports",
    "burrow-max-listeners",
    "burrow-max-channels",
    "burrow-permitremoteopen",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// One snippet and where it was found (`README.md:64`).
#[derive(Debug)]
struct Snippet {
    at: String,
    text: String,
}

/// A block of lines from a document, with the line number of its first line.
struct Block {
    file: String,
    first_line: usize,
    lang: String,
    lines: Vec<String>,
}

/// Fenced code blocks of a Markdown file, with their info string.
fn markdown_blocks(file: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    file: file.to_owned(),
                    first_line: i + 2,
                    lang: info.trim().to_owned(),
                    lines: Vec::new(),
                })
            }
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some(b), None) => b.lines.push(line.to_owned()),
            (None, None) => {}
        }
    }
    blocks
}

/// Inline code spans outside fenced blocks, with their line numbers.
fn markdown_spans(file: &str) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let mut spans = Vec::new();
    let mut fenced = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        for (n, part) in line.split('`').enumerate() {
            if n % 2 == 1 {
                spans.push((i + 1, part.to_owned()));
            }
        }
    }
    spans
}

/// The text of a roff line as a reader sees it (the escapes clap_mangen and src/docs emit).
fn unroff(line: &str) -> String {
    let mut out = line.to_owned();
    for (from, to) in [
        ("\\*(Aq", "'"),
        ("\\(aq", "'"),
        ("\\(dq", "\""),
        ("\\(ga", "`"),
        ("\\(rs", "\\"),
        ("\\fB", ""),
        ("\\fI", ""),
        ("\\fR", ""),
        ("\\fP", ""),
        ("\\&", ""),
        ("\\-", "-"),
        ("\\e", "\\"),
    ] {
        out = out.replace(from, to);
    }
    out
}

/// The no-fill blocks (`.nf` ... `.fi`) of every page under doc/man.
fn man_blocks() -> Vec<Block> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo().join("doc/man"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    let mut blocks = Vec::new();
    for page in pages {
        let name = format!("doc/man/{}", page.file_name().unwrap().to_string_lossy());
        let text = std::fs::read_to_string(&page).unwrap();
        let mut open: Option<Block> = None;
        for (i, line) in text.lines().enumerate() {
            match (&mut open, line) {
                (None, ".nf") => {
                    open = Some(Block {
                        file: name.clone(),
                        first_line: i + 2,
                        lang: String::new(),
                        lines: Vec::new(),
                    })
                }
                (Some(_), ".fi") => blocks.extend(open.take()),
                (Some(b), l) => b.lines.push(unroff(l)),
                (None, _) => {}
            }
        }
    }
    blocks
}

/// A whole file as one block.
fn file_block(file: &str) -> Block {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    Block {
        file: file.to_owned(),
        first_line: 1,
        lang: String::new(),
        lines: text.lines().map(str::to_owned).collect(),
    }
}

/// The line with `#` comment markers removed, if it is a commented-out line.
fn uncommented(line: &str) -> Option<&str> {
    line.trim_start()
        .strip_prefix('#')
        .map(|rest| rest.trim_start())
}

/// The authorized_keys entry in `line`, if it has one: from the options field (or key type)
/// to the end, with `AAAA...` replaced by a real key of the type before it.
fn key_line(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .windows(2)
        .position(|w| KEY_TYPES.contains(&w[0]) && (w[1].starts_with("AAAA") || w[1] == "..."))?;
    // Options come right before the key type, as one field (quoted values may hold blanks,
    // which the documents' examples do not).
    let start = match at.checked_sub(1).map(|i| words[i]) {
        Some(w) if looks_like_options(w) => at - 1,
        _ => at,
    };
    let mut out: Vec<String> = words[start..].iter().map(|w| w.to_string()).collect();
    let key_type = words[at];
    let data = &mut out[at - start + 1];
    if data == "AAAA..." || data == "..." {
        let sample = SAMPLE_KEYS
            .iter()
            .find(|(t, _)| *t == key_type)
            .map(|(_, k)| *k)
            .unwrap_or("no-sample-key-for-this-type");
        *data = sample.to_owned();
    }
    Some(out.join(" "))
}

fn looks_like_options(word: &str) -> bool {
    let name = word.split([',', '=']).next().unwrap_or_default();
    OPTION_NAMES.contains(&name.to_ascii_lowercase().as_str())
        || name.starts_with("no-")
        || matches!(name, "command" | "environment" | "pty" | "tunnel")
}

/// Every authorized_keys entry the documents show, as it would be pasted into the file.
fn authorized_keys_snippets() -> Vec<Snippet> {
    let mut blocks = markdown_blocks("README.md");
    blocks.extend(markdown_blocks("SECURITY.md"));
    blocks.extend(man_blocks());
    blocks.push(file_block("packaging/etc/authorized_keys"));
    let mut out = Vec::new();
    for b in &blocks {
        for (i, line) in b.lines.iter().enumerate() {
            let text = uncommented(line).unwrap_or(line);
            if let Some(entry) = key_line(text) {
                out.push(Snippet {
                    at: format!("{}:{}", b.file, b.first_line + i),
                    text: entry,
                });
            }
        }
    }
    // Option lists recommended in prose, e.g. `restrict,port-forwarding,permitlisten="8086"`.
    for file in ["README.md", "SECURITY.md"] {
        for (line, span) in markdown_spans(file) {
            let is_list = span.contains(',') && !span.contains(char::is_whitespace);
            if is_list && looks_like_options(&span) {
                out.push(Snippet {
                    at: format!("{file}:{line}"),
                    text: format!("{span} ssh-ed25519 {} from-prose", SAMPLE_KEYS[0].1),
                });
            }
        }
    }
    out
}

/// True for a block whose non-blank, non-comment lines are all TOML keys or table headers.
fn is_toml(lines: &[String]) -> bool {
    let mut any = false;
    for line in lines.iter().map(|l| l.trim()) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split_once(" = ").is_some_and(|(k, _)| {
            !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        let table = line.starts_with('[') && line.ends_with(']');
        // Continuation of a multi-line array value.
        let continued = line.starts_with('"') || line.starts_with(']');
        if !(key || table || continued) {
            return false;
        }
        any = true;
    }
    any
}

fn is_tunnels(text: &str) -> bool {
    text.lines()
        .any(|l| matches!(l.trim(), "[[tunnel]]" | "[defaults]"))
}

/// `# key = value` comment lines switched on, so documented alternatives load too.
fn with_settings_uncommented(text: &str) -> Option<String> {
    let mut changed = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| match uncommented(line) {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                }) =>
            {
                changed = true;
                rest.to_owned()
            }
            _ => line.to_owned(),
        })
        .collect();
    changed.then(|| lines.join("\n") + "\n")
}

/// Every TOML snippet: (is a tunnels file, snippet).
fn toml_snippets() -> Vec<(bool, Snippet)> {
    let mut blocks: Vec<Block> = markdown_blocks("README.md")
        .into_iter()
        .chain(markdown_blocks("SECURITY.md"))
        .filter(|b| b.lang == "toml")
        .collect();
    blocks.extend(man_blocks().into_iter().filter(|b| is_toml(&b.lines)));
    blocks.push(file_block("examples/serve.toml"));
    blocks.push(file_block("examples/tunnels.toml"));
    let mut out = Vec::new();
    for b in blocks {
        let text = b.lines.join("\n") + "\n";
        let at = format!("{}:{}", b.file, b.first_line);
        let tunnels = is_tunnels(&text);
        if let Some(variant) = with_settings_uncommented(&text) {
            out.push((
                tunnels,
                Snippet {
                    at: format!("{at} (commented settings on)"),
                    text: variant,
                },
            ));
        }
        out.push((tunnels, Snippet { at, text }));
    }
    out
}

fn count_from(snippets: &[&Snippet], prefix: &str) -> usize {
    snippets.iter().filter(|s| s.at.starts_with(prefix)).count()
}

fn report(kind: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} documented {kind} snippet(s) do not load:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_documented_authorized_keys_line_loads() {
    let snippets = authorized_keys_snippets();
    let all: Vec<&Snippet> = snippets.iter().collect();
    // The examples this test exists for must be found, or it would pass on nothing.
    for source in [
        "README.md:",
        "SECURITY.md:",
        "doc/man/burrow-serve.toml.5:",
        "packaging/etc/authorized_keys:",
    ] {
        assert!(
            count_from(&all, source) >= 1,
            "no authorized_keys line found in {source}\n{snippets:#?}"
        );
    }
    let readme = snippets
        .iter()
        .find(|s| s.at.starts_with("README.md:"))
        .unwrap();
    assert!(
        readme
            .text
            .starts_with("restrict,port-forwarding,permitlisten=")
            && readme.text.ends_with(" tunnel-from-A"),
        "the README's example is the one loaded: {readme:?}"
    );
    let mut failures = Vec::new();
    for s in &snippets {
        if let Err(e) = AuthorizedKeys::parse(&format!("{}\n", s.text), Path::new(&s.at)) {
            failures.push(format!("{}: {}\n    {e}", s.at, s.text));
        }
    }
    // The packaged file as shipped (comments only) loads too.
    let packaged = std::fs::read_to_string(repo().join("packaging/etc/authorized_keys")).unwrap();
    if let Err(e) = AuthorizedKeys::parse(&packaged, Path::new("packaging/etc/authorized_keys")) {
        failures.push(e.to_string());
    }
    report("authorized_keys", failures);
}

#[test]
fn every_documented_serve_toml_loads() {
    let snippets: Vec<Snippet> = toml_snippets()
        .into_iter()
        .filter(|(tunnels, _)| !tunnels)
        .map(|(_, s)| s)
        .collect();
    let all: Vec<&Snippet> = snippets.iter().collect();
    for source in ["examples/serve.toml:", "doc/man/burrow-serve.toml.5:"] {
        assert!(
            count_from(&all, source) >= 1,
            "no serve.toml found in {source}"
        );
    }
    let mut failures = Vec::new();
    for s in &snippets {
        let loaded = parse_file(&s.text, Path::new(&s.at))
            .and_then(|file| ServeConfig::from_parts(file, &ServeOverrides::default(), &s.at));
        if let Err(e) = loaded {
            failures.push(format!("{}: {e}", s.at));
        }
    }
    report("serve.toml", failures);
}

#[test]
fn every_documented_tunnels_toml_loads() {
    let snippets: Vec<Snippet> = toml_snippets()
        .into_iter()
        .filter(|(tunnels, _)| *tunnels)
        .map(|(_, s)| s)
        .collect();
    let all: Vec<&Snippet> = snippets.iter().collect();
    for source in [
        "README.md:",
        "examples/tunnels.toml:",
        "doc/man/burrow-tunnels.toml.5:",
    ] {
        assert!(
            count_from(&all, source) >= 1,
            "no tunnels.toml found in {source}"
        );
    }
    let mut failures = Vec::new();
    for s in &snippets {
        if let Err(e) = burrow::config::tunnels::parse(&s.text, Path::new(&s.at)) {
            failures.push(format!("{}: {e}", s.at));
        }
    }
    report("tunnels.toml", failures);
}

/// The extraction itself: placeholders, comments, prose lists and roff escapes.
#[test]
fn snippets_are_extracted_as_a_reader_would_copy_them() {
    let ed = SAMPLE_KEYS[0].1;
    // A comment marker or a label before the options is not part of the entry.
    for line in [
        "# restrict,permitopen=\"db:5432\" ssh-ed25519 AAAA... me",
        "authorized_keys: restrict,permitopen=\"db:5432\" ssh-ed25519 AAAA... me",
    ] {
        assert_eq!(
            key_line(line),
            Some(format!(
                "restrict,permitopen=\"db:5432\" ssh-ed25519 {ed} me"
            ))
        );
    }
    assert_eq!(
        key_line("ssh-ed25519 AAAA..."),
        Some(format!("ssh-ed25519 {ed}"))
    );
    assert_eq!(key_line("ssh-keygen -t ed25519 -f key"), None);
    assert_eq!(
        unroff("restrict,port\\-forwarding ssh\\-ed25519 A\\*(Aqs \\fBbold\\fR"),
        "restrict,port-forwarding ssh-ed25519 A's bold"
    );
    assert!(is_toml(&["a = 1".into(), "[t]".into(), "# x".into()]));
    assert!(!is_toml(&["burrow up tunnels.toml".into()]));
    assert_eq!(
        with_settings_uncommented("a = 1\n# b = \"x\"   # note\n# just prose\n").as_deref(),
        Some("a = 1\nb = \"x\"   # note\n# just prose\n")
    );
}
