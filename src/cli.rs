//! Command-line definitions. `burrow ssh` takes OpenSSH's short flags with the same meaning, so
//! scripts written for ssh(1) keep working when `ssh` becomes `burrow ssh`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};
use clap_complete::Shell;

/// burrow: reach services behind NAT over SSH, and keep the tunnel up.
#[derive(Debug, Parser)]
#[command(
    name = "burrow",
    version = crate::LONG_VERSION,
    about,
    propagate_version = true
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// Parsed once per process; boxing the ssh flags would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// OpenSSH-compatible forwarding client (-L, -R, -D, -W, -J, ...) for any standard sshd.
    #[command(after_long_help = SSH_EXAMPLES)]
    Ssh(SshArgs),
    /// Forwarding-only SSH relay for the public machine (B); any ssh client can use it.
    #[command(after_long_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// Run every tunnel of a tunnels file and keep them up (reconnect, backoff, reload).
    #[command(after_long_help = UP_EXAMPLES)]
    Up(UpArgs),
    /// Show the tunnels of a running `burrow up`.
    #[command(after_long_help = STATUS_EXAMPLES)]
    Status(StatusArgs),
    /// The A/B/C scenario on this machine: relay, reverse tunnel, outside client, all checked.
    Demo,
    /// Print a shell completion script for bash, zsh or fish.
    #[command(after_long_help = COMPLETIONS_EXAMPLES)]
    Completions(CompletionsArgs),
}

/// `burrow completions`.
#[derive(Debug, Args, Clone)]
pub struct CompletionsArgs {
    /// The shell to print completions for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// `burrow up`.
#[derive(Debug, Args, Clone)]
pub struct UpArgs {
    /// The tunnels file (TOML; see examples/tunnels.toml).
    #[arg(value_name = "TUNNELS_FILE")]
    pub file: PathBuf,
    /// Control socket for `burrow status` (default $XDG_RUNTIME_DIR/burrow/up.sock, or
    /// /run/burrow/up.sock as root); mode 0600 from the start, answering root and this user
    /// only. A file there that is not a socket is refused, never replaced.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Serve Prometheus metrics (/metrics), JSON status (/api/status) and a live status page (/)
    /// on this address, e.g. 127.0.0.1:9180.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Bearer token file for --metrics; required unless the address is loopback.
    #[arg(long, value_name = "FILE", requires = "metrics")]
    pub metrics_token_file: Option<PathBuf>,
    /// More logging (-v debug, -vv trace).
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,
    /// Errors only.
    #[arg(short = 'q')]
    pub quiet: bool,
}

/// `burrow status`.
#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// Print JSON (for scripts) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Control socket of the running `burrow up`.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
}

/// `burrow serve`.
#[derive(Debug, Args, Default, Clone)]
pub struct ServeArgs {
    /// Address and port to listen on (default 0.0.0.0:2222).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// TOML configuration file; flags override its settings.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Host key file (ed25519, generated with mode 0600 on first start when missing); refused
    /// when group or others may read it.
    #[arg(long, value_name = "FILE")]
    pub host_key: Option<PathBuf>,
    /// authorized_keys file with OpenSSH options (restrict, permitopen=, permitlisten=, from=, ...);
    /// it and its directories must be owned by root or this user and not be writable by group or
    /// others (strict_modes in serve.toml).
    #[arg(long, value_name = "FILE")]
    pub authorized_keys: Option<PathBuf>,
    /// Where -R listeners bind: no (loopback), yes (all interfaces), clientspecified.
    #[arg(long, value_name = "no|yes|clientspecified")]
    pub gateway_ports: Option<String>,
    /// Serve Prometheus metrics (/metrics), JSON status (/api/status) and a live status page (/)
    /// on this address, e.g. 127.0.0.1:9180.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Bearer token file for --metrics; required unless the address is loopback.
    #[arg(long, value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// More logging (-v debug, -vv trace).
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,
    /// Errors only.
    #[arg(short = 'q')]
    pub quiet: bool,
}

/// `burrow ssh`: flags as in ssh(1).
#[derive(Debug, Args, Default, Clone)]
#[command(disable_version_flag = true)]
pub struct SshArgs {
    /// Local forward: `[bind_address:]port:host:hostport`, `[bind_address:]port:remote_socket`,
    /// `local_socket:host:hostport` or `local_socket:remote_socket`.
    #[arg(short = 'L', value_name = "SPEC")]
    pub local: Vec<String>,
    /// Remote forward: `[bind_address:]port:host:hostport` (port 0 = allocated by the server and
    /// reported), or `remote_socket:host:hostport`.
    #[arg(short = 'R', value_name = "SPEC")]
    pub remote: Vec<String>,
    /// Dynamic forward: a SOCKS4/4a/5 proxy on `[bind_address:]port` whose connections leave
    /// from the server.
    #[arg(short = 'D', value_name = "[bind_address:]port")]
    pub dynamic: Vec<String>,
    /// Connect standard input and output to `host:port` through the server (for ProxyCommand).
    #[arg(short = 'W', value_name = "host:port")]
    pub stdio: Option<String>,
    /// Connect through these jump hosts first: `[user@]host[:port][,...]`.
    #[arg(short = 'J', value_name = "destination")]
    pub jump: Option<String>,
    /// Do not run a remote command; just forward ports.
    #[arg(short = 'N')]
    pub no_command: bool,
    /// Go to the background once authenticated and every forward is up.
    #[arg(short = 'f')]
    pub background: bool,
    /// Compress the connection (zlib@openssh.com / zlib).
    #[arg(short = 'C')]
    pub compression: bool,
    /// Let other hosts connect to local forwarded ports (-L/-D listen on all interfaces by default).
    #[arg(short = 'g')]
    pub gateway_ports: bool,
    /// Port to connect to on the remote host.
    #[arg(short = 'p', value_name = "port")]
    pub port: Option<String>,
    /// User to log in as on the remote machine.
    #[arg(short = 'l', value_name = "login_name")]
    pub login: Option<String>,
    /// Identity (private key) file; may be given several times.
    #[arg(short = 'i', value_name = "identity_file")]
    pub identity: Vec<PathBuf>,
    /// Per-user configuration file (default ~/.ssh/config); `none` reads no file.
    #[arg(short = 'F', value_name = "configfile")]
    pub config_file: Option<PathBuf>,
    /// Options in ssh_config format, e.g. `-o ExitOnForwardFailure=yes`.
    ///
    /// burrow extension (OpenSSH's ssh has no such option): `-o ProxyProtocol=v1` or `v2`
    /// starts every -R connection to its target with a PROXY protocol header carrying the
    /// visitor's address as the server reports it, for a service that reads one (nginx
    /// `listen ... proxy_protocol`, HAProxy `accept-proxy`); `none` (the default) sends none.
    #[arg(short = 'o', value_name = "option")]
    pub options: Vec<String>,
    /// Verbose mode; repeat for more detail (-v debug, -vv trace).
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,
    /// Quiet mode: only fatal errors are printed.
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Escape character for a terminal session (default `~`); `^X` for a control character,
    /// `none` for a fully transparent session.
    #[arg(short = 'e', value_name = "escape_char")]
    pub escape_char: Option<String>,
    /// Disable pseudo-terminal allocation.
    #[arg(short = 'T')]
    pub no_tty: bool,
    /// Force pseudo-terminal allocation.
    #[arg(short = 't', action = ArgAction::Count)]
    pub tty: u8,
    /// Print the effective configuration (like ssh -G) and exit.
    #[arg(short = 'G')]
    pub print_config: bool,
    /// Connection sharing master (ControlMaster=yes); -MM asks before each use (ask).
    #[arg(short = 'M', action = ArgAction::Count)]
    pub master: u8,
    /// Control socket for connection sharing (ControlPath); `none` disables sharing.
    #[arg(short = 'S', value_name = "ctl_path")]
    pub control_path: Option<String>,
    /// Control a running master: check, forward, cancel, exit or stop.
    #[arg(short = 'O', value_name = "ctl_cmd")]
    pub control_command: Option<String>,
    /// Use IPv4 addresses only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,
    /// Use IPv6 addresses only.
    #[arg(short = '6')]
    pub ipv6: bool,
    /// `[user@]hostname` or `ssh://[user@]hostname[:port]`.
    #[arg(value_name = "destination")]
    pub destination: String,
    /// Command to run on the remote host.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "command"
    )]
    pub command: Vec<String>,
}

// Examples shown by `--help` and, as the EXAMPLES section, in the man pages.

const SSH_EXAMPLES: &str = "\
Examples:
  burrow ssh -N -L 8080:intranet:80 user@gw       localhost:8080 -> intranet:80 via gw
  burrow ssh -N -R 8087:localhost:22 user@B       B:8087 -> this machine's sshd
  burrow ssh -N -R 0:localhost:8080 user@B        port chosen by B and printed
  burrow ssh -N -D 1080 user@gw                   SOCKS4/4a/5 proxy leaving from gw
  burrow ssh -W db:5432 user@gw                   stdio, e.g. as a ProxyCommand
  burrow ssh -N -J jump1,user@jump2:2222 -L 5432:db:5432 user@inner
  burrow ssh -f -N -L 8080:intranet:80 user@gw    background once the port accepts
  burrow ssh user@host uname -a                   run a command, exit with its status";

const SERVE_EXAMPLES: &str = "\
Examples:
  burrow serve --config /etc/burrow/serve.toml
  burrow serve --listen 0.0.0.0:2222 --gateway-ports yes --authorized-keys /etc/burrow/authorized_keys

SIGHUP reloads authorized_keys; SIGTERM or SIGINT stops accepting, closes the listeners and gives
open transfers 5 seconds. The configuration file is described in burrow-serve.toml(5).";

const UP_EXAMPLES: &str = "\
Examples:
  burrow up /etc/burrow/tunnels.toml
  burrow up tunnels.toml --control /run/burrow/up.sock --metrics 127.0.0.1:9180

SIGHUP or saving the file reloads it: unchanged tunnels keep their connections. Under systemd
(Type=notify) burrow up reports READY once every tunnel is up and pings the watchdog. The file
is described in burrow-tunnels.toml(5).";

const STATUS_EXAMPLES: &str = "\
Examples:
  burrow status
  burrow status --json
  burrow status --control /run/burrow-up/office/up.sock    an instance of burrow-up@.service";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  burrow completions bash > ~/.local/share/bash-completion/completions/burrow
  burrow completions zsh > ~/.zfunc/_burrow      (with fpath+=(~/.zfunc) in ~/.zshrc)
  burrow completions fish > ~/.config/fish/completions/burrow.fish";
