//! ssh(1)'s escape sequences on a terminal session: the escape character (`~` by default) is
//! special only right after a newline (or at the very start). Pure state machine, so every rule
//! is unit-tested without a terminal.

/// What the input loop must do for a chunk of keyboard input, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Bytes for the server.
    Send(Vec<u8>),
    /// `~.`: close the connection.
    Disconnect,
    /// `~?`: print the list of escapes.
    Help,
    /// `~#`: print the forwarded connections.
    ListForwards,
    /// `~^Z`: suspend the client.
    Suspend,
    /// `~C`: the command line, which ssh(1) also disables by default (EnableEscapeCommandline).
    CommandLineDisabled,
}

/// Tracks "at the start of a line" and "escape character seen" across reads.
#[derive(Debug)]
pub struct EscapeFilter {
    escape: u8,
    last_was_newline: bool,
    pending: bool,
}

impl EscapeFilter {
    /// A filter for `escape`; the session starts at the beginning of a line.
    pub fn new(escape: u8) -> Self {
        Self {
            escape,
            last_was_newline: true,
            pending: false,
        }
    }

    /// The escape character this filter watches for.
    pub fn escape_char(&self) -> u8 {
        self.escape
    }

    /// Splits `input` into bytes to send and escape commands (clientloop.c process_escapes).
    pub fn feed(&mut self, input: &[u8]) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut out = Vec::with_capacity(input.len());
        for &ch in input {
            if self.pending {
                self.pending = false;
                let command = match ch {
                    b'.' => Some(Action::Disconnect),
                    b'?' => Some(Action::Help),
                    b'#' => Some(Action::ListForwards),
                    0x1a => Some(Action::Suspend),
                    b'C' => Some(Action::CommandLineDisabled),
                    _ => None,
                };
                if let Some(command) = command {
                    flush(&mut out, &mut actions);
                    let stop = command == Action::Disconnect;
                    actions.push(command);
                    if stop {
                        return actions;
                    }
                    continue;
                }
                // `~~` sends one escape character; any other `~x` sends both, as typed.
                if ch != self.escape {
                    out.push(self.escape);
                }
            } else if self.last_was_newline && ch == self.escape {
                self.pending = true;
                continue;
            }
            self.last_was_newline = ch == b'\r' || ch == b'\n';
            out.push(ch);
        }
        flush(&mut out, &mut actions);
        actions
    }

    /// The `~?` text, with the configured escape character, in raw-mode line endings.
    pub fn help(&self) -> String {
        let e = char::from(self.escape);
        format!(
            "Supported escape sequences:\r\n \
             {e}.   - terminate connection\r\n \
             {e}^Z  - suspend ssh\r\n \
             {e}#   - list forwarded connections\r\n \
             {e}?   - this message\r\n \
             {e}{e}   - send the escape character by typing it twice\r\n\
             (Note that escapes are only recognized immediately after newline.)\r\n"
        )
    }
}

fn flush(out: &mut Vec<u8>, actions: &mut Vec<Action>) {
    if !out.is_empty() {
        actions.push(Action::Send(std::mem::take(out)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(s: &str) -> Action {
        Action::Send(s.as_bytes().to_vec())
    }

    #[test]
    fn tilde_dot_at_line_start_disconnects() {
        let mut f = EscapeFilter::new(b'~');
        assert_eq!(f.feed(b"~."), vec![Action::Disconnect]);
        let mut f = EscapeFilter::new(b'~');
        assert_eq!(
            f.feed(b"ls\r~.rest"),
            vec![send("ls\r"), Action::Disconnect]
        );
    }

    #[test]
    fn escapes_only_after_a_newline() {
        let mut f = EscapeFilter::new(b'~');
        assert_eq!(f.feed(b"a~."), vec![send("a~.")]);
        assert_eq!(f.feed(b"\n~?"), vec![send("\n"), Action::Help]);
        // Still at the start of the line after a command: a second escape works at once.
        assert_eq!(f.feed(b"~."), vec![Action::Disconnect]);
    }

    #[test]
    fn double_tilde_sends_one_and_unknown_sends_both() {
        let mut f = EscapeFilter::new(b'~');
        assert_eq!(f.feed(b"~~"), vec![send("~")]);
        assert_eq!(f.feed(b"\r~x"), vec![send("\r~x")]);
    }

    #[test]
    fn escape_split_across_reads() {
        let mut f = EscapeFilter::new(b'~');
        assert_eq!(f.feed(b"\r"), vec![send("\r")]);
        assert_eq!(f.feed(b"~"), vec![]);
        assert_eq!(f.feed(b"#"), vec![Action::ListForwards]);
        assert_eq!(f.feed(b"~\x1a"), vec![Action::Suspend]);
        assert_eq!(f.feed(b"~C"), vec![Action::CommandLineDisabled]);
    }

    #[test]
    fn another_escape_character() {
        let mut f = EscapeFilter::new(0x1d);
        assert_eq!(f.feed(b"~."), vec![send("~.")]);
        assert_eq!(f.feed(b"\r\x1d."), vec![send("\r"), Action::Disconnect]);
    }

    #[test]
    fn help_names_the_escape_character() {
        let help = EscapeFilter::new(b'%').help();
        assert!(help.contains("%.   - terminate connection"), "{help}");
        assert!(help.contains("%%   - send the escape character"), "{help}");
    }
}
