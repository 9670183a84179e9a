//! `burrow ssh -G` against OpenSSH's `ssh -G` for the same command line and config file: every
//! key burrow prints must be printed by ssh with the same value(s), in ssh's order. This checks
//! ClearAllForwardings (command line and config), ssh:// destinations, `%` tokens and `${ENV}`
//! in forward paths and ControlPath, unix-socket forwards, StreamLocalBind*, PermitRemoteOpen,
//! reverse dynamic forwards and the connection sharing options (-M, -MM, -S, ControlPersist).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::*;

/// Keys whose values burrow chooses itself and so may differ from ssh's defaults: the cipher
/// list (compared only when configured), and the default identity files (burrow tries fewer).
const OWN_DEFAULTS: &[&str] = &["ciphers", "identityfile"];

/// One `-G` dump: (key, value) lines in order.
type Dump = Vec<(String, String)>;

/// The passwd home of the test user: ssh expands `~` and `%d` with it, burrow with $HOME, so
/// both get the same value.
fn home() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir.display().to_string())
        .unwrap_or_else(|| "/root".into())
}

fn run_g(program: &str, args: &[&str], dir: &Path) -> Dump {
    let mut cmd = if program == "burrow" {
        let mut c = Command::new(burrow_bin());
        c.arg("ssh");
        c
    } else {
        Command::new(program)
    };
    cmd.arg("-G")
        .args(args)
        .env("HOME", home())
        .env("BURROW_PARITY_DIR", "/tmp/parity-env")
        .current_dir(dir);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} -G {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn values<'a>(dump: &'a Dump, key: &str) -> Vec<&'a str> {
    dump.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Compares the dumps; `configured` lists OWN_DEFAULTS keys the case sets explicitly.
fn assert_same(burrow: &Dump, ssh: &Dump, configured: &[&str], case: &str) {
    let mut order: Vec<&str> = Vec::new();
    for (k, _) in burrow {
        if !order.contains(&k.as_str()) {
            order.push(k);
        }
    }
    for key in &order {
        if OWN_DEFAULTS.contains(key) && !configured.contains(key) {
            continue;
        }
        let ours = values(burrow, key);
        let theirs = values(ssh, key);
        if *key == "dynamicforward" {
            // ssh 9.x also lists unix-socket -L forwards here (its dump tells them apart by
            // connect host only); every burrow line must still be there.
            for v in &ours {
                assert!(
                    theirs.contains(v),
                    "{case}: dynamicforward {v} not in {theirs:?}"
                );
            }
            continue;
        }
        assert_eq!(ours, theirs, "{case}: values of `{key}`");
    }
    let position: HashMap<&str, usize> = ssh
        .iter()
        .enumerate()
        .rev()
        .map(|(i, (k, _))| (k.as_str(), i))
        .collect();
    let positions: Vec<usize> = order
        .iter()
        .map(|k| {
            *position
                .get(k)
                .unwrap_or_else(|| panic!("{case}: ssh has no `{k}`"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "{case}: keys not in ssh -G order: {order:?}"
    );
}

fn compare(args: &[&str], configured: &[&str], dir: &Path, case: &str) -> Dump {
    let burrow = run_g("burrow", args, dir);
    let ssh = run_g("ssh", args, dir);
    assert_same(&burrow, &ssh, configured, case);
    burrow
}

fn get<'a>(dump: &'a Dump, key: &str) -> Option<&'a str> {
    values(dump, key).first().copied()
}

#[test]
fn flags_forwards_and_jump_match_ssh() {
    let dir = test_dir();
    // ssh drops -i files that do not exist (with a warning), so give it one that does.
    let key = dir.path().join("some-key");
    std::fs::write(&key, "").unwrap();
    let key = key.display().to_string();
    let args = [
        "-F",
        "/dev/null",
        "-p",
        "2222",
        "-l",
        "alice",
        "-C",
        "-g",
        "-N",
        "-o",
        "BatchMode=yes",
        "-o",
        "ExitOnForwardFailure=yes",
        "-o",
        "ServerAliveInterval=15",
        "-o",
        "ServerAliveCountMax=5",
        "-o",
        "ConnectTimeout=7",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        "HashKnownHosts=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "PasswordAuthentication=no",
        "-o",
        "KbdInteractiveAuthentication=no",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "NumberOfPasswordPrompts=2",
        "-o",
        "Ciphers=aes128-ctr,aes256-gcm@openssh.com",
        "-o",
        "AddressFamily=inet",
        "-i",
        key.as_str(),
        "-L",
        "8080:intranet:80",
        "-L",
        "*:8081:[::1]:81",
        "-L",
        ":8082:h:82",
        "-L",
        "127.0.0.1:8083:/run/app.sock",
        "-R",
        "0:localhost:22",
        "-R",
        "1080",
        "-R",
        "localhost:1081",
        "-D",
        "1082",
        "-D",
        "[::1]:1083",
        "-J",
        "jump@192.0.2.1:2200",
        "Host.Example",
    ];
    let dump = compare(&args, &["ciphers", "identityfile"], dir.path(), "flags");
    assert_eq!(get(&dump, "hostname"), Some("host.example"));
    assert_eq!(values(&dump, "remoteforward").len(), 3);
    assert_eq!(get(&dump, "sessiontype"), Some("none"));
}

#[test]
fn ssh_uri_destination_matches_ssh() {
    let dir = test_dir();
    let dump = compare(
        &["-F", "/dev/null", "ssh://bob@Host.Example:2022"],
        &[],
        dir.path(),
        "ssh://",
    );
    assert_eq!(get(&dump, "user"), Some("bob"));
    assert_eq!(get(&dump, "port"), Some("2022"));
}

#[test]
fn clear_all_forwardings_on_command_line_and_in_config() {
    let dir = test_dir();
    let fwd = ["-L", "1:h:2", "-R", "3:h:4", "-D", "5", "-R", "6"];
    let mut args = vec!["-F", "/dev/null", "-o", "ClearAllForwardings=yes"];
    args.extend(fwd);
    args.push("host");
    let dump = compare(&args, &[], dir.path(), "ClearAllForwardings -o");
    assert_eq!(get(&dump, "clearallforwardings"), Some("yes"));
    assert!(values(&dump, "localforward").is_empty());

    let config = dir.path().join("config");
    std::fs::write(
        &config,
        "Host *\n  ClearAllForwardings yes\n  LocalForward 9 h:9\n  RemoteForward 10\n",
    )
    .unwrap();
    let config = config.display().to_string();
    let mut args = vec!["-F", config.as_str()];
    args.extend(fwd);
    args.push("host");
    let dump = compare(&args, &[], dir.path(), "ClearAllForwardings config");
    assert!(values(&dump, "remoteforward").is_empty());

    // Without it, command line forwards come first, then the config's.
    std::fs::write(dir.path().join("config2"), "Host *\n  LocalForward 9 h:9\n").unwrap();
    let config2 = dir.path().join("config2").display().to_string();
    let dump = compare(
        &["-F", &config2, "-L", "1:h:2", "host"],
        &[],
        dir.path(),
        "forward order",
    );
    assert_eq!(values(&dump, "localforward"), ["1 [h]:2", "9 [h]:9"]);
}

#[test]
fn tokens_env_and_sharing_options_from_a_config_match_ssh() {
    let dir = test_dir();
    let config = dir.path().join("config");
    std::fs::write(
        &config,
        r#"Host tok
  HostName Real.Example
  User carol
  Port 2345
  ControlMaster auto
  ControlPath ~/.ssh/cm-%C-%h-%p-%r-%u-%n-%i-%L-%l-%%-${BURROW_PARITY_DIR}
  ControlPersist 10m
  StreamLocalBindUnlink yes
  StreamLocalBindMask 0022
  PermitRemoteOpen db:5432 [::1]:* *:80
  LocalForward /tmp/l-%h-%p-%r-%u-%n-%i-%L-%l-%C-%%.sock ${BURROW_PARITY_DIR}/%d.sock
  LocalForward 7000 ${BURROW_PARITY_DIR}/app-%r.sock
  RemoteForward /tmp/r-%n.sock /tmp/target-%r.sock
  RemoteForward 1090
  DynamicForward /tmp/d-%h.sock
  IdentityFile %d/.ssh/id_%h
  UserKnownHostsFile ~/.ssh/kh-%h ${BURROW_PARITY_DIR}/kh2
  GlobalKnownHostsFile /etc/ssh/gkh
  GatewayPorts yes
  ProxyJump [2001:db8::1]:22
"#,
    )
    .unwrap();
    let config = config.display().to_string();
    let dump = compare(
        &[
            "-F",
            &config,
            "-L",
            "${BURROW_PARITY_DIR}/cli-%h.sock:db:5432",
            "tok",
        ],
        &["identityfile"],
        dir.path(),
        "tokens",
    );
    let path = get(&dump, "controlpath").unwrap();
    assert!(path.contains("-real.example-2345-carol-"), "{path}");
    assert!(path.ends_with("-%-/tmp/parity-env"), "{path}");
    assert_eq!(
        values(&dump, "localforward").first().copied(),
        Some("/tmp/parity-env/cli-real.example.sock [db]:5432")
    );
    assert_eq!(get(&dump, "permitremoteopen"), Some("db:5432 [::1]:* *:80"));
    assert_eq!(get(&dump, "streamlocalbindmask"), Some("022"));
    assert_eq!(get(&dump, "controlpersist"), Some("600"));
}

#[test]
fn sharing_flags_match_ssh() {
    let dir = test_dir();
    let cases: &[(&[&str], &str, Option<&str>)] = &[
        (
            &["-M", "-S", "/tmp/ctl-%r@%h:%p"],
            "true",
            Some("/tmp/ctl-root@host:22"),
        ),
        (&["-MM"], "ask", None),
        (&["-S", "none", "-o", "ControlPath=/tmp/x"], "false", None),
        (
            &["-o", "ControlMaster=autoask", "-o", "ControlPersist=yes"],
            "autoask",
            None,
        ),
        (&["-o", "ControlMaster=no", "-M"], "true", None),
        (&["-o", "ControlPersist=0"], "false", None),
    ];
    for (flags, master, path) in cases {
        let mut args = vec!["-F", "/dev/null", "-l", "root"];
        args.extend(flags.iter());
        args.push("host");
        let case = flags.join(" ");
        let dump = compare(&args, &[], dir.path(), &case);
        assert_eq!(get(&dump, "controlmaster"), Some(*master), "{case}");
        assert_eq!(get(&dump, "controlpath"), *path, "{case}");
    }
}
