//! The `burrow` binary: parse, set up logging, dispatch, map errors to exit codes.

mod malloc;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use burrow::cli::{Cli, Command, CompletionsArgs, ServeArgs, SshArgs, StatusArgs, UpArgs};
use burrow::client::{background, EXIT_FAILURE};
use burrow::config::options::{self, ConfigPaths};
use burrow::config::{dump, sharing::MuxCommand};
use burrow::logging::{self, Verbosity};
use burrow::mux;
use burrow::server::{
    self,
    config::{ServeConfig, ServeOverrides},
};

fn main() -> ExitCode {
    malloc::tune();
    let cli = Cli::parse();
    match cli.command {
        Command::Ssh(args) => ExitCode::from(ssh(args)),
        Command::Serve(args) => exit(serve(args)),
        Command::Up(args) => exit(up(args)),
        Command::Status(args) => exit(status(args)),
        Command::Demo => exit(demo()),
        Command::Completions(args) => exit(completions(args)),
    }
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("burrow: {}", logging::error_chain(&e));
            ExitCode::from(1)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Runtime::new()?)
}

/// `burrow ssh` runs on one thread, as ssh(1) does. Its work is one SSH session, whose
/// transport (every packet's crypto) is a single task anyway; worker threads only added
/// cross-thread wake-ups to every forwarded connection. Measured (issue 21): client CPU per
/// forwarded connection and per GiB both fell, and context switches per connection halved.
/// Whatever waits for a person (passwords, passphrases, host keys, ControlMaster=ask) waits
/// on the blocking pool (`client::prompt::in_turn`, the host key check). `burrow serve`'s
/// main thread uses one too: its sessions run on their own threads (`server::workers`).
fn one_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn up(args: UpArgs) -> anyhow::Result<()> {
    logging::init(Verbosity::from_flags(args.verbose, args.quiet), true);
    burrow::rlimit::raise_nofile_limit_logged();
    let opts = burrow::supervisor::UpOptions {
        file: args.file,
        control: args
            .control
            .unwrap_or_else(burrow::supervisor::status::default_control_path),
        metrics: args
            .metrics
            .map(|addr| burrow::observe::ObserveConfig::new(addr, args.metrics_token_file))
            .transpose()?,
    };
    runtime()?.block_on(burrow::supervisor::run(opts))
}

fn status(args: StatusArgs) -> anyhow::Result<()> {
    let path = args
        .control
        .unwrap_or_else(burrow::supervisor::status::default_control_path);
    let tunnels = runtime()?.block_on(burrow::supervisor::status::query(&path))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&tunnels)?);
    } else {
        print!("{}", burrow::supervisor::status::render_table(&tunnels));
    }
    Ok(())
}

fn demo() -> anyhow::Result<()> {
    logging::init(Verbosity::Quiet, false);
    runtime()?.block_on(burrow::demo::run())
}

fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let script = burrow::docs::completions::script(args.shell);
    std::io::Write::write_all(&mut std::io::stdout().lock(), &script)
        .context("writing the completion script to standard output")
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    logging::init(Verbosity::from_flags(args.verbose, args.quiet), true);
    burrow::rlimit::raise_nofile_limit_logged();
    let overrides = ServeOverrides {
        listen: args.listen,
        config: args.config,
        host_key: args.host_key,
        authorized_keys: args.authorized_keys,
        gateway_ports: args.gateway_ports,
        metrics: args.metrics,
        metrics_token_file: args.metrics_token_file,
    };
    let config = ServeConfig::load(&overrides)?;
    // Sessions run on the relay's own session threads (`server::workers`); this thread only
    // accepts, answers signals and serves the metrics endpoint.
    one_thread_runtime()?.block_on(server::run(config))
}

fn ssh(args: SshArgs) -> u8 {
    logging::init(Verbosity::from_flags(args.verbose, args.quiet), false);
    burrow::rlimit::raise_nofile_limit_logged();
    let paths = ConfigPaths::for_args(args.config_file.as_deref());
    if let Some(code) = usage_errors(&args) {
        return code;
    }
    if args.print_config {
        return print_config(&args, &paths);
    }
    let opts = match options::resolve(&args, &paths) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("burrow: {e}");
            return EXIT_FAILURE;
        }
    };
    let opts = match mux::run::control_persist(opts) {
        Ok(opts) => opts,
        Err(code) => return code,
    };
    if opts.background && opts.command.is_empty() && !opts.no_command {
        eprintln!("Cannot fork into background without a command to execute.");
        return EXIT_FAILURE;
    }
    let ready = match background::start(opts.background) {
        background::Role::Exit(code) => return code,
        background::Role::Run(ready) => ready,
    };
    let runtime = match one_thread_runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("burrow: cannot start the async runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    let code = match runtime.block_on(mux::run::run(opts, ready)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            EXIT_FAILURE
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    code
}

/// Flag combinations ssh(1) refuses, with its messages.
fn usage_errors(args: &SshArgs) -> Option<u8> {
    let command = args.control_command.as_deref()?;
    if args.stdio.is_some() {
        eprintln!("Cannot specify multiplexing command with -W");
        return Some(EXIT_FAILURE);
    }
    if MuxCommand::parse(command).is_none() {
        eprintln!("Invalid multiplex command.");
        return Some(EXIT_FAILURE);
    }
    None
}

/// `-G`: print the effective configuration and exit.
fn print_config(args: &SshArgs, paths: &ConfigPaths) -> u8 {
    match options::resolve_with_config(args, paths) {
        Ok((opts, raw)) => {
            print!("{}", dump::render(&opts, &raw, args));
            0
        }
        Err(e) => {
            eprintln!("burrow: {e}");
            EXIT_FAILURE
        }
    }
}
