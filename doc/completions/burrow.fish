# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_burrow_global_optspecs
    string join \n h/help V/version
end

function __fish_burrow_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_burrow_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_burrow_using_subcommand
    set -l cmd (__fish_burrow_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c burrow -n "__fish_burrow_needs_command" -s h -l help -d 'Print help'
complete -c burrow -n "__fish_burrow_needs_command" -s V -l version -d 'Print version'
complete -c burrow -n "__fish_burrow_needs_command" -f -a "ssh" -d 'OpenSSH-compatible forwarding client (-L, -R, -D, -W, -J, ...) for any standard sshd'
complete -c burrow -n "__fish_burrow_needs_command" -f -a "serve" -d 'Forwarding-only SSH relay for the public machine (B); any ssh client can use it'
complete -c burrow -n "__fish_burrow_needs_command" -f -a "up" -d 'Run every tunnel of a tunnels file and keep them up (reconnect, backoff, reload)'
complete -c burrow -n "__fish_burrow_needs_command" -f -a "status" -d 'Show the tunnels of a running `burrow up`'
complete -c burrow -n "__fish_burrow_needs_command" -f -a "demo" -d 'The A/B/C scenario on this machine: relay, reverse tunnel, outside client, all checked'
complete -c burrow -n "__fish_burrow_needs_command" -f -a "completions" -d 'Print a shell completion script for bash, zsh or fish'
complete -c burrow -n "__fish_burrow_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s L -d 'Local forward: `[bind_address:]port:host:hostport`, `[bind_address:]port:remote_socket`, `local_socket:host:hostport` or `local_socket:remote_socket`' -r
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s R -d 'Remote forward: `[bind_address:]port:host:hostport` (port 0 = allocated by the server and reported), or `remote_socket:host:hostport`' -r
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s D -d 'Dynamic forward: a SOCKS4/4a/5 proxy on `[bind_address:]port` whose connections leave from the server' -r
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s W -d 'Connect standard input and output to `host:port` through the server (for ProxyCommand)' -r
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s J -d 'Connect through these jump hosts first: `[user@]host[:port][,...]`' -r
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s p -d 'Port to connect to on the remote host' -r
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s l -d 'User to log in as on the remote machine' -r
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s i -d 'Identity (private key) file; may be given several times' -r -F
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s F -d 'Per-user configuration file (default ~/.ssh/config); `none` reads no file' -r -F
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s o -d 'Options in ssh_config format, e.g. `-o ExitOnForwardFailure=yes`' -r
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s e -d 'Escape character for a terminal session (default `~`); `^X` for a control character, `none` for a fully transparent session' -r
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s S -d 'Control socket for connection sharing (ControlPath); `none` disables sharing' -r
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s O -d 'Control a running master: check, forward, cancel, exit or stop' -r
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s N -d 'Do not run a remote command; just forward ports'
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s f -d 'Go to the background once authenticated and every forward is up'
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s C -d 'Compress the connection (zlib@openssh.com / zlib)'
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s g -d 'Let other hosts connect to local forwarded ports (-L/-D listen on all interfaces by default)'
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s v -d 'Verbose mode; repeat for more detail (-v debug, -vv trace)'
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s q -d 'Quiet mode: only fatal errors are printed'
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s T -d 'Disable pseudo-terminal allocation'
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s t -d 'Force pseudo-terminal allocation'
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s G -d 'Print the effective configuration (like ssh -G) and exit'
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s M -d 'Connection sharing master (ControlMaster=yes); -MM asks before each use (ask)'
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s 4 -d 'Use IPv4 addresses only'
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s 6 -d 'Use IPv6 addresses only'
complete -c burrow -n "__fish_burrow_using_subcommand ssh" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c burrow -n "__fish_burrow_using_subcommand serve" -l listen -d 'Address and port to listen on (default 0.0.0.0:2222)' -r
complete -c burrow -n "__fish_burrow_using_subcommand serve" -l config -d 'TOML configuration file; flags override its settings' -r -F
complete -c burrow -n "__fish_burrow_using_subcommand serve" -l host-key -d 'Host key file (ed25519, generated with mode 0600 on first start when missing); refused when group or others may read it' -r -F
complete -c burrow -n "__fish_burrow_using_subcommand serve" -l authorized-keys -d 'authorized_keys file with OpenSSH options (restrict, permitopen=, permitlisten=, from=, ...); it and its directories must be owned by root or this user and not be writable by group or others (strict_modes in serve.toml)' -r -F
complete -c burrow -n "__fish_burrow_using_subcommand serve" -l gateway-ports -d 'Where -R listeners bind: no (loopback), yes (all interfaces), clientspecified' -r
complete -c burrow -n "__fish_burrow_using_subcommand serve" -l metrics -d 'Serve Prometheus metrics (/metrics), JSON status (/api/status) and a live status page (/) on this address, e.g. 127.0.0.1:9180' -r
complete -c burrow -n "__fish_burrow_using_subcommand serve" -l metrics-token-file -d 'Bearer token file for --metrics; required unless the address is loopback' -r -F
complete -c burrow -n "__fish_burrow_using_subcommand serve" -s v -d 'More logging (-v debug, -vv trace)'
complete -c burrow -n "__fish_burrow_using_subcommand serve" -s q -d 'Errors only'
complete -c burrow -n "__fish_burrow_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c burrow -n "__fish_burrow_using_subcommand serve" -s V -l version -d 'Print version'
complete -c burrow -n "__fish_burrow_using_subcommand up" -l control -d 'Control socket for `burrow status` (default $XDG_RUNTIME_DIR/burrow/up.sock, or /run/burrow/up.sock as root); mode 0600 from the start, answering root and this user only. A file there that is not a socket is refused, never replaced' -r -F
complete -c burrow -n "__fish_burrow_using_subcommand up" -l metrics -d 'Serve Prometheus metrics (/metrics), JSON status (/api/status) and a live status page (/) on this address, e.g. 127.0.0.1:9180' -r
complete -c burrow -n "__fish_burrow_using_subcommand up" -l metrics-token-file -d 'Bearer token file for --metrics; required unless the address is loopback' -r -F
complete -c burrow -n "__fish_burrow_using_subcommand up" -s v -d 'More logging (-v debug, -vv trace)'
complete -c burrow -n "__fish_burrow_using_subcommand up" -s q -d 'Errors only'
complete -c burrow -n "__fish_burrow_using_subcommand up" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c burrow -n "__fish_burrow_using_subcommand up" -s V -l version -d 'Print version'
complete -c burrow -n "__fish_burrow_using_subcommand status" -l control -d 'Control socket of the running `burrow up`' -r -F
complete -c burrow -n "__fish_burrow_using_subcommand status" -l json -d 'Print JSON (for scripts) instead of a table'
complete -c burrow -n "__fish_burrow_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c burrow -n "__fish_burrow_using_subcommand status" -s V -l version -d 'Print version'
complete -c burrow -n "__fish_burrow_using_subcommand demo" -s h -l help -d 'Print help'
complete -c burrow -n "__fish_burrow_using_subcommand demo" -s V -l version -d 'Print version'
complete -c burrow -n "__fish_burrow_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c burrow -n "__fish_burrow_using_subcommand completions" -s V -l version -d 'Print version'
complete -c burrow -n "__fish_burrow_using_subcommand help; and not __fish_seen_subcommand_from ssh serve up status demo completions help" -f -a "ssh" -d 'OpenSSH-compatible forwarding client (-L, -R, -D, -W, -J, ...) for any standard sshd'
complete -c burrow -n "__fish_burrow_using_subcommand help; and not __fish_seen_subcommand_from ssh serve up status demo completions help" -f -a "serve" -d 'Forwarding-only SSH relay for the public machine (B); any ssh client can use it'
complete -c burrow -n "__fish_burrow_using_subcommand help; and not __fish_seen_subcommand_from ssh serve up status demo completions help" -f -a "up" -d 'Run every tunnel of a tunnels file and keep them up (reconnect, backoff, reload)'
complete -c burrow -n "__fish_burrow_using_subcommand help; and not __fish_seen_subcommand_from ssh serve up status demo completions help" -f -a "status" -d 'Show the tunnels of a running `burrow up`'
complete -c burrow -n "__fish_burrow_using_subcommand help; and not __fish_seen_subcommand_from ssh serve up status demo completions help" -f -a "demo" -d 'The A/B/C scenario on this machine: relay, reverse tunnel, outside client, all checked'
complete -c burrow -n "__fish_burrow_using_subcommand help; and not __fish_seen_subcommand_from ssh serve up status demo completions help" -f -a "completions" -d 'Print a shell completion script for bash, zsh or fish'
complete -c burrow -n "__fish_burrow_using_subcommand help; and not __fish_seen_subcommand_from ssh serve up status demo completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
