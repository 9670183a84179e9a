//! Section 1 pages: burrow(1) and one page per subcommand, rendered by clap_mangen from the
//! clap definitions, plus the sections clap does not know about (EXAMPLES from each command's
//! `after_long_help`, FILES, EXIT STATUS, SEE ALSO) written with the same `roff` crate.

use std::path::Path;

use clap::ArgAction;
use clap_mangen::roff::{bold, italic, roman, Inline, Roff};
use clap_mangen::Man;

use super::{DocFile, DocsError};

/// burrow(1) and burrow-SUBCOMMAND(1) for each visible subcommand.
pub(super) fn pages(root: clap::Command) -> Result<Vec<DocFile>, DocsError> {
    // `burrow help` is clap's, not a page of its own. Building fills in what the pages show
    // (bin names like `burrow ssh`, display names like `burrow-ssh`, propagated --version).
    let mut root = root.disable_help_subcommand(true);
    root.build();
    let mut files = vec![page(&root, &root_extras())?];
    for sub in root.get_subcommands().filter(|s| !s.is_hide_set()) {
        files.push(page(sub, &subcommand_extras(sub))?);
    }
    Ok(files)
}

/// One page: clap_mangen's sections (our SYNOPSIS), then `extras`, then VERSION where there is
/// one.
fn page(cmd: &clap::Command, extras: &Roff) -> Result<DocFile, DocsError> {
    let source = format!("burrow {}", env!("CARGO_PKG_VERSION"));
    let man = Man::new(cmd.clone()).manual("burrow manual").source(source);
    let name = man.get_filename();
    let mut out = Page::default();
    out.add(|w| man.render_title(w));
    out.add(|w| man.render_name_section(w));
    out.add(|w| synopsis(cmd).to_writer(w));
    out.add(|w| man.render_description_section(w));
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        out.add(|w| man.render_options_section(w));
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        out.add(|w| man.render_subcommands_section(w));
    }
    out.add(|w| extras.to_writer(w));
    // clap_mangen's VERSION section unwraps the version, which a command may not have.
    if cmd.get_version().or(cmd.get_long_version()).is_some() {
        out.add(|w| man.render_version_section(w));
    }
    let text = out.finish().map_err(|source| DocsError::Render {
        page: name.clone(),
        source,
    })?;
    Ok(DocFile {
        path: Path::new("man").join(name),
        contents: text.into_bytes(),
    })
}

/// A page assembled from separately rendered sections. roff starts every rendering with the
/// same two-line preamble; the page keeps the first only.
#[derive(Default)]
struct Page {
    text: String,
    error: Option<std::io::Error>,
}

impl Page {
    fn add(&mut self, render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) {
        let mut buf = Vec::new();
        match render(&mut buf) {
            Ok(()) => {
                let rendered = String::from_utf8_lossy(&buf);
                let preamble = Roff::new().render();
                match self.text.is_empty() {
                    true => self.text.push_str(&rendered),
                    false => self
                        .text
                        .push_str(rendered.strip_prefix(&preamble).unwrap_or(&rendered)),
                }
            }
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    fn finish(self) -> std::io::Result<String> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.text),
        }
    }
}

/// SYNOPSIS in ssh(1)'s style, `burrow ssh [-L SPEC]... [-p port] destination [command]...`
/// (clap_mangen's own leaves out every option's value name).
fn synopsis(cmd: &clap::Command) -> Roff {
    let mut line = vec![bold(cmd.get_bin_name().unwrap_or(cmd.get_name()))];
    // Options, then operands; -h and -V are in OPTIONS and would only add noise here.
    let mut args: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !["help", "version"].contains(&a.get_id().as_str()))
        .collect();
    args.sort_by_key(|a| a.is_positional());
    for arg in args {
        line.push(roman(" "));
        line.extend(synopsis_arg(arg));
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        line.extend([roman(" "), italic("command"), roman(" ...")]);
    }
    let mut r = Roff::new();
    r.control("SH", ["SYNOPSIS"]).text(line);
    r
}

/// `[-L SPEC]...`, `[-N]`, `[-v]...`, `[--json]`, `destination`, `[command]...`.
fn synopsis_arg(arg: &clap::Arg) -> Vec<Inline> {
    let value = arg
        .get_value_names()
        .map(|v| v.join(" "))
        .unwrap_or_else(|| arg.get_id().to_string());
    let repeats = matches!(arg.get_action(), ArgAction::Append | ArgAction::Count)
        || arg.get_num_args().is_some_and(|n| n.max_values() > 1);
    let mut out = Vec::new();
    if arg.is_positional() {
        match arg.is_required_set() {
            true => out.push(italic(value)),
            false => out.extend([roman("["), italic(value), roman("]")]),
        }
    } else {
        let flag = match (arg.get_short(), arg.get_long()) {
            (Some(short), _) => format!("-{short}"),
            (None, Some(long)) => format!("--{long}"),
            (None, None) => return out,
        };
        out.extend([roman("["), bold(flag)]);
        if arg.get_action().takes_values() {
            out.extend([roman(" "), italic(value)]);
        }
        out.push(roman("]"));
    }
    if repeats {
        out.push(roman("..."));
    }
    out
}

/// FILES, EXIT STATUS and SEE ALSO of burrow(1).
fn root_extras() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["FILES"]);
    for (path, what) in FILES {
        r.control("TP", []).text([bold(*path)]).text([roman(*what)]);
    }
    r.control("SH", ["EXIT STATUS"]);
    r.text([roman(
        "burrow ssh exits as ssh(1) does: with the remote command's exit status (128 + n when \
         it was killed by signal n), or 255 when an error occurred. The other subcommands exit \
         0 on success and 1 on an error, printed on standard error with the file, host or port \
         concerned. A command line clap cannot parse exits 2.",
    )]);
    see_also(&mut r, SEE_ALSO_ROOT);
    r
}

/// Sections of prose ([`SECTIONS`]), EXAMPLES (from clap's `after_long_help`, so `--help`
/// shows the same) and SEE ALSO.
fn subcommand_extras(sub: &clap::Command) -> Roff {
    let mut r = Roff::new();
    for (_, heading, paragraphs) in SECTIONS.iter().filter(|(n, ..)| *n == sub.get_name()) {
        r.control("SH", [*heading]);
        for (i, p) in paragraphs.iter().enumerate() {
            if i > 0 {
                r.control("PP", []);
            }
            r.text([roman(*p)]);
        }
    }
    if let Some(text) = sub.get_after_long_help() {
        r.control("SH", ["EXAMPLES"]);
        let text = text.to_string();
        let body = text.strip_prefix("Examples:\n").unwrap_or(&text);
        // Preformatted: the examples line up their comments in columns.
        r.control("nf", []);
        for line in body.lines() {
            r.text([roman(line)]);
        }
        r.control("fi", []);
    }
    let related = SEE_ALSO
        .iter()
        .find(|(name, _)| *name == sub.get_name())
        .map_or("", |(_, refs)| refs);
    see_also(&mut r, &format!("burrow(1){related}"));
    r
}

fn see_also(r: &mut Roff, refs: &str) {
    r.control("SH", ["SEE ALSO"]);
    r.text([roman(refs)]);
}

/// Files burrow and its packaged units use by default.
const FILES: &[(&str, &str)] = &[
    (
        "/etc/burrow/serve.toml",
        "Relay settings for burrow-serve.service; see burrow-serve.toml(5).",
    ),
    (
        "/etc/burrow/authorized_keys",
        "Keys allowed to use the relay, in OpenSSH's format with its options; SIGHUP reloads it.",
    ),
    (
        "/etc/burrow/tunnels.toml",
        "Tunnels of burrow-up.service; burrow-up@NAME.service reads /etc/burrow/NAME.toml. \
         See burrow-tunnels.toml(5).",
    ),
    (
        "/var/lib/burrow/host_ed25519_key",
        "The relay's host key, generated (mode 0600) on first start.",
    ),
    (
        "/run/burrow/up.sock",
        "Control socket of burrow up, read by burrow status: the default as root (and the one \
         burrow-up.service uses) unless $XDG_RUNTIME_DIR is set, which makes it \
         $XDG_RUNTIME_DIR/burrow/up.sock; other users without it get \
         ~/.local/state/burrow/up.sock.",
    ),
    (
        "~/.ssh/config, ~/.ssh/known_hosts, /etc/ssh/ssh_config",
        "Read by burrow ssh and burrow up as by ssh(1).",
    ),
];

const SEE_ALSO_ROOT: &str = "burrow-ssh(1), burrow-serve(1), burrow-up(1), burrow-status(1), \
    burrow-demo(1), burrow-completions(1), burrow-tunnels.toml(5), burrow-serve.toml(5), ssh(1), \
    ssh_config(5), sshd(8), systemd.service(5)";

/// Pages related to each subcommand, after burrow(1).
const SEE_ALSO: &[(&str, &str)] = &[
    ("ssh", ", ssh(1), ssh_config(5)"),
    ("serve", ", burrow-serve.toml(5), sshd(8), sshd_config(5)"),
    (
        "up",
        ", burrow-tunnels.toml(5), burrow-status(1), burrow-ssh(1)",
    ),
    ("status", ", burrow-up(1)"),
];

/// Prose sections of a subcommand's page (subcommand, heading, paragraphs), before EXAMPLES.
const SECTIONS: &[(&str, &str, &[&str])] = &[(
    "ssh",
    "ROAMING",
    &[
        "When the server is a burrow relay (burrow serve), burrow ssh's streams through it are \
         resumable, as burrow up's are: the stream of -W, the last -J jump host's stream to \
         the destination, and with -N each -L, -D and -R connection. burrow asks for resumable \
         streams on connecting; a standard sshd refuses and nothing else changes. When this \
         machine's network changes or the link to the relay dies (the session ends, \
         ServerAliveInterval keepalives or, without them, a probe every 10 s go unanswered, or \
         a network address or route change finds the relay silent), burrow ssh reconnects to \
         the relay with backoff, at once on the next network change, and re-attaches the \
         streams; both ends replay what the other missed. What runs inside (burrow's own \
         session with -J, ssh's with ssh -o ProxyCommand='burrow ssh -W %h:%p user@relay', or \
         the application on a -L port) sees a pause, not a reset, and nothing needs to be \
         installed on the destination. With -N the forwards are set up again on the new \
         session.",
        "If the relay cannot be reached again within 60 s (the relay's default resume grace), \
         burrow ssh ends with an error that names the relay and what was lost, and exits 255. \
         If the relay is back but has expired the stream on its own clock (resume_grace_secs \
         in burrow-serve.toml(5)), -W and -J end at once with \"relay ...: it no longer holds \
         the stream to HOST:PORT\" (with -N only that connection closes); a login refused on \
         reconnect ends it the same way. Nothing hangs: the stream's application end is \
         closed too.",
        "Difference from OpenSSH: ssh(1) ends the session when the link dies; so does burrow \
         ssh with any other server, with ControlMaster, and for a session that runs a command \
         on the relay. A roaming burrow ssh says on standard error when the link is lost and \
         when it is back.",
    ],
)];
