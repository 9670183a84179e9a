//! The local terminal during an interactive session: raw mode entered and always restored, the
//! window size, and the terminal's modes encoded for the server's PTY (RFC 4254 section 8), so
//! that erase, interrupt and friends behave remotely the way they did locally.

use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use nix::sys::termios::{
    self, BaudRate, ControlFlags, InputFlags, LocalFlags, OutputFlags, SetArg,
    SpecialCharacterIndices as Cc, Termios,
};
use russh::Pty;

/// True when standard input is a terminal (ssh(1) only allocates a PTY then, unless forced).
pub fn stdin_is_tty() -> bool {
    io::stdin().is_terminal()
}

/// The terminal size as (columns, rows, width px, height px); 80x24 when it cannot be read
/// (a forced PTY with stdin redirected), as ssh(1) falls back.
pub fn window_size() -> (u32, u32, u32, u32) {
    match rustix::termios::tcgetwinsize(io::stdin()) {
        Ok(w) if w.ws_col > 0 && w.ws_row > 0 => (
            u32::from(w.ws_col),
            u32::from(w.ws_row),
            u32::from(w.ws_xpixel),
            u32::from(w.ws_ypixel),
        ),
        _ => (80, 24, 0, 0),
    }
}

/// The local terminal in raw mode; the saved modes come back on [`RawMode::restore`] or drop,
/// whichever comes first, on every exit path.
pub struct RawMode {
    saved: Mutex<Termios>,
    active: AtomicBool,
}

impl RawMode {
    /// Saves the terminal's modes and switches to raw mode with ssh(1)'s flags
    /// (sshtty.c enter_raw_mode): no echo, no line editing, no signals, no output processing.
    pub fn enter() -> io::Result<RawMode> {
        let saved = termios::tcgetattr(io::stdin())?;
        let raw_mode = RawMode {
            saved: Mutex::new(saved),
            active: AtomicBool::new(false),
        };
        raw_mode.apply_raw()?;
        Ok(raw_mode)
    }

    /// The modes the terminal had before, for the PTY request.
    pub fn saved(&self) -> Termios {
        self.saved.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn apply_raw(&self) -> io::Result<()> {
        let mut raw = self.saved();
        raw.input_flags.insert(InputFlags::IGNPAR);
        raw.input_flags.remove(
            InputFlags::ISTRIP
                | InputFlags::INLCR
                | InputFlags::IGNCR
                | InputFlags::ICRNL
                | InputFlags::IXON
                | InputFlags::IXANY
                | InputFlags::IXOFF,
        );
        raw.local_flags.remove(
            LocalFlags::ISIG
                | LocalFlags::ICANON
                | LocalFlags::ECHO
                | LocalFlags::ECHOE
                | LocalFlags::ECHOK
                | LocalFlags::ECHONL
                | LocalFlags::IEXTEN,
        );
        raw.output_flags.remove(OutputFlags::OPOST);
        raw.control_chars[Cc::VMIN as usize] = 1;
        raw.control_chars[Cc::VTIME as usize] = 0;
        termios::tcsetattr(io::stdin(), SetArg::TCSADRAIN, &raw)?;
        self.active.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Puts the saved modes back (idempotent).
    pub fn restore(&self) {
        if self.active.swap(false, Ordering::SeqCst) {
            if let Err(e) = termios::tcsetattr(io::stdin(), SetArg::TCSADRAIN, &self.saved()) {
                tracing::debug!("cannot restore the terminal: {e}");
            }
        }
    }

    /// `~^Z`: restores the terminal, stops this process as the shell's job control expects,
    /// and goes back to raw mode once continued.
    pub fn suspend(&self) -> io::Result<()> {
        self.restore();
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGTSTP).map_err(io::Error::from)?;
        self.apply_raw()
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        self.restore();
    }
}

/// The modes of `t` as RFC 4254 opcodes, as ssh(1) sends them (ttymodes.c): control
/// characters (disabled ones as 255), input/local/output flags, character size and speeds.
pub fn encode_modes(t: &Termios) -> Vec<(Pty, u32)> {
    let mut modes = Vec::new();
    let chars = [
        (Pty::VINTR, Cc::VINTR),
        (Pty::VQUIT, Cc::VQUIT),
        (Pty::VERASE, Cc::VERASE),
        (Pty::VKILL, Cc::VKILL),
        (Pty::VEOF, Cc::VEOF),
        (Pty::VEOL, Cc::VEOL),
        (Pty::VEOL2, Cc::VEOL2),
        (Pty::VSTART, Cc::VSTART),
        (Pty::VSTOP, Cc::VSTOP),
        (Pty::VSUSP, Cc::VSUSP),
        (Pty::VREPRINT, Cc::VREPRINT),
        (Pty::VWERASE, Cc::VWERASE),
        (Pty::VLNEXT, Cc::VLNEXT),
        (Pty::VDISCARD, Cc::VDISCARD),
    ];
    for (op, index) in chars {
        let c = t.control_chars[index as usize];
        modes.push((op, if c == 0 { 255 } else { u32::from(c) }));
    }
    let input = [
        (Pty::IGNPAR, InputFlags::IGNPAR),
        (Pty::PARMRK, InputFlags::PARMRK),
        (Pty::INPCK, InputFlags::INPCK),
        (Pty::ISTRIP, InputFlags::ISTRIP),
        (Pty::INLCR, InputFlags::INLCR),
        (Pty::IGNCR, InputFlags::IGNCR),
        (Pty::ICRNL, InputFlags::ICRNL),
        (Pty::IXON, InputFlags::IXON),
        (Pty::IXANY, InputFlags::IXANY),
        (Pty::IXOFF, InputFlags::IXOFF),
        (Pty::IMAXBEL, InputFlags::IMAXBEL),
        (Pty::IUTF8, InputFlags::IUTF8),
    ];
    modes.extend(input.map(|(op, f)| (op, u32::from(t.input_flags.contains(f)))));
    let local = [
        (Pty::ISIG, LocalFlags::ISIG),
        (Pty::ICANON, LocalFlags::ICANON),
        (Pty::ECHO, LocalFlags::ECHO),
        (Pty::ECHOE, LocalFlags::ECHOE),
        (Pty::ECHOK, LocalFlags::ECHOK),
        (Pty::ECHONL, LocalFlags::ECHONL),
        (Pty::NOFLSH, LocalFlags::NOFLSH),
        (Pty::TOSTOP, LocalFlags::TOSTOP),
        (Pty::IEXTEN, LocalFlags::IEXTEN),
        (Pty::ECHOCTL, LocalFlags::ECHOCTL),
        (Pty::ECHOKE, LocalFlags::ECHOKE),
        (Pty::PENDIN, LocalFlags::PENDIN),
    ];
    modes.extend(local.map(|(op, f)| (op, u32::from(t.local_flags.contains(f)))));
    let output = [
        (Pty::OPOST, OutputFlags::OPOST),
        (Pty::OLCUC, OutputFlags::OLCUC),
        (Pty::ONLCR, OutputFlags::ONLCR),
        (Pty::OCRNL, OutputFlags::OCRNL),
        (Pty::ONOCR, OutputFlags::ONOCR),
        (Pty::ONLRET, OutputFlags::ONLRET),
    ];
    modes.extend(output.map(|(op, f)| (op, u32::from(t.output_flags.contains(f)))));
    let size = t.control_flags & ControlFlags::CSIZE;
    modes.push((Pty::CS7, u32::from(size == ControlFlags::CS7)));
    modes.push((Pty::CS8, u32::from(size == ControlFlags::CS8)));
    modes.push((
        Pty::PARENB,
        u32::from(t.control_flags.contains(ControlFlags::PARENB)),
    ));
    modes.push((
        Pty::PARODD,
        u32::from(t.control_flags.contains(ControlFlags::PARODD)),
    ));
    modes.push((Pty::TTY_OP_ISPEED, baud(termios::cfgetispeed(t))));
    modes.push((Pty::TTY_OP_OSPEED, baud(termios::cfgetospeed(t))));
    modes
}

/// The speed in bits per second that RFC 4254 wants (not the termios constant).
fn baud(b: BaudRate) -> u32 {
    match b {
        BaudRate::B9600 => 9600,
        BaudRate::B19200 => 19200,
        BaudRate::B57600 => 57600,
        BaudRate::B115200 => 115_200,
        BaudRate::B230400 => 230_400,
        _ => 38400,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_of_a_real_pty_encode_erase_and_echo() {
        let Ok(pty) = nix::pty::openpty(None, None) else {
            return; // no /dev/ptmx in this sandbox: nothing to encode
        };
        let mut t = termios::tcgetattr(&pty.slave).expect("termios of a fresh pty");
        t.control_chars[Cc::VERASE as usize] = 0x7f;
        t.control_chars[Cc::VDISCARD as usize] = 0;
        t.local_flags.insert(LocalFlags::ECHO);
        let modes = encode_modes(&t);
        assert!(modes.contains(&(Pty::VERASE, 0x7f)));
        assert!(
            modes.contains(&(Pty::VDISCARD, 255)),
            "disabled char as 255"
        );
        assert!(modes.contains(&(Pty::ECHO, 1)));
        assert!(!modes.iter().any(|(op, _)| *op == Pty::TTY_OP_END));
    }
}
