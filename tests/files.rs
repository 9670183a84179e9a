//! Files and sockets checked like sshd's StrictModes: an authorized_keys that others could
//! change and a host key that others could read stop the relay with a message naming the
//! path, its owner and mode; `burrow up`'s control socket answers only its own user and never
//! replaces a file. SECURITY.md names these tests.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::burrow::{Relay, UP_TIMEOUT};
use common::*;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `home/etc/authorized_keys` (0644, one key) below `dir/home` (0755), as a packaged relay
/// has /etc/burrow/authorized_keys; returns (home, authorized_keys).
fn relay_tree(dir: &Path) -> (PathBuf, PathBuf) {
    let key = keygen(dir, "id", KeyKind::Ed25519, None);
    let home = dir.join("home");
    let etc = home.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    chmod(&home, 0o755);
    chmod(&etc, 0o755);
    let ak = etc.join("authorized_keys");
    std::fs::write(&ak, format!("{}\n", key.public_line)).unwrap();
    chmod(&ak, 0o644);
    (home, ak)
}

fn serve(dir: &Path, home: &Path, ak: &Path, config: Option<&Path>) -> Command {
    let mut cmd = Command::new(burrow_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--host-key"])
        .arg(dir.join("host_key"))
        .arg("--authorized-keys")
        .arg(ak)
        .env("HOME", home);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd
}

/// Starts it and waits until it listens (then stops it), or panics with its log.
fn starts(cmd: Command, dir: &Path, name: &str) {
    let mut relay = spawn_logged(cmd, dir, name);
    let up = relay
        .stderr()
        .wait_for_line("listening on 127.0.0.1:", UP_TIMEOUT);
    assert!(up.is_some(), "{name}: {}", relay.stderr_text());
    relay.terminate(Duration::from_secs(10));
}

/// Runs it and expects exit status 1 with every needle in its stderr.
fn refuses(cmd: Command, dir: &Path, name: &str, needles: &[&str]) {
    let (st, _, err) = run_with_timeout(cmd, dir, name, UP_TIMEOUT);
    assert_eq!(st.and_then(|s| s.code()), Some(1), "{name}: {err}");
    for n in needles {
        assert!(err.contains(n), "{name}: {n:?} not in {err}");
    }
}

#[test]
fn authorized_keys_others_could_change_stop_the_relay_unless_strict_modes_is_off() {
    let dir = test_dir();
    let d = dir.path();
    let (home, ak) = relay_tree(d);
    let etc = ak.parent().unwrap().to_owned();
    let me = nix::unistd::geteuid().as_raw();
    starts(serve(d, &home, &ak, None), d, "private-tree");

    // A directory on the way that group members may write: they could swap the file.
    chmod(&etc, 0o775);
    let mode = ", mode 0775; it must be owned by root or ";
    let dir_msg = format!(
        "bad ownership or modes for directory {} (above {})",
        etc.display(),
        ak.display()
    );
    refuses(
        serve(d, &home, &ak, None),
        d,
        "group-writable-dir",
        &[&dir_msg, mode, &format!("uid {me}")],
    );
    chmod(&etc, 0o755);

    // The file itself, writable by others.
    chmod(&ak, 0o646);
    let file_msg = format!("bad ownership or modes for file {}", ak.display());
    refuses(
        serve(d, &home, &ak, None),
        d,
        "other-writable-file",
        &[&file_msg, "mode 0646", "strict_modes = false"],
    );
    chmod(&ak, 0o644);

    // With no home directory above it the walk reaches /tmp (mode 1777), which sshd refuses.
    let tmp = std::fs::canonicalize("/tmp").unwrap();
    if std::fs::metadata(&tmp).unwrap().permissions().mode() & 0o022 != 0 && d.starts_with(&tmp) {
        let elsewhere = Path::new("/nonexistent-burrow-home");
        let tmp_msg = format!(
            "bad ownership or modes for directory {} (above",
            tmp.display()
        );
        refuses(
            serve(d, elsewhere, &ak, None),
            d,
            "under-tmp",
            &[&tmp_msg, "mode 1777"],
        );
        // strict_modes = false: the operator's call for an odd setup.
        let config = d.join("serve.toml");
        std::fs::write(&config, "strict_modes = false\n").unwrap();
        starts(
            serve(d, elsewhere, &ak, Some(&config)),
            d,
            "strict-modes-off",
        );
    }
}

#[test]
fn a_host_key_others_can_read_stops_the_relay() {
    let dir = test_dir();
    let d = dir.path();
    let (home, ak) = relay_tree(d);
    let host_key = d.join("host_key");
    starts(serve(d, &home, &ak, None), d, "first-start");
    assert_eq!(
        std::fs::metadata(&host_key).unwrap().permissions().mode() & 0o777,
        0o600,
        "generated 0600"
    );
    let before = std::fs::read(&host_key).unwrap();
    chmod(&host_key, 0o644);
    let want = format!(
        "UNPROTECTED PRIVATE KEY FILE: permissions 0644 for {} are too open",
        host_key.display()
    );
    refuses(
        serve(d, &home, &ak, None),
        d,
        "readable-host-key",
        &[&want, "chmod 600"],
    );
    assert_eq!(
        std::fs::read(&host_key).unwrap(),
        before,
        "the key is left alone"
    );
    chmod(&host_key, 0o600);
    starts(serve(d, &home, &ak, None), d, "private-again");
}

/// `burrow up`'s socket answers root and its own user only: even a socket someone made
/// reachable (mode 0666, directory 0755) gives another uid nothing. Needs root to run
/// `burrow status` as nobody (65534); skipped otherwise. A file at --control is refused, kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_socket_answers_only_its_user_and_never_replaces_a_file() {
    let dir = test_dir();
    let d = dir.path();
    let file = d.join("tunnels.toml");
    std::fs::write(
        &file,
        "[defaults]\nssh_config = \"none\"\nbackoff_initial = 30\n\n[[tunnel]]\nname = \"t\"\n\
         server = \"root@127.0.0.1:1\"\nremote = [\"0:127.0.0.1:9\"]\n",
    )
    .unwrap();

    let precious = d.join("precious.txt");
    std::fs::write(&precious, "keep me\n").unwrap();
    let mut cmd = Command::new(burrow_bin());
    cmd.arg("up").arg(&file).arg("--control").arg(&precious);
    let (st, _, err) = run_with_timeout(cmd, d, "up-on-a-file", UP_TIMEOUT);
    assert_ne!(st.and_then(|s| s.code()), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "{} exists and is not a socket",
            precious.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");

    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped the uid check: needs root to run burrow status as another user");
        return;
    }
    chmod(d, 0o755);
    let control = d.join("up.sock");
    let mut cmd = Command::new(burrow_bin());
    cmd.arg("up").arg(&file).arg("--control").arg(&control);
    let up = spawn_logged(cmd, d, "burrow-up");
    let ready = up.stderr().wait_for_line("status socket ready", UP_TIMEOUT);
    assert!(ready.is_some(), "{}", up.stderr_text());
    chmod(&control, 0o666);
    let status = |name: &str, uid: Option<u32>| {
        let mut cmd = Command::new(burrow_bin());
        cmd.args(["status", "--json", "--control"]).arg(&control);
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(uid);
        }
        run_with_timeout(cmd, d, name, Duration::from_secs(20))
    };
    let (st, out, err) = status("status-root", None);
    assert!(st.is_some_and(|s| s.success()), "{err}");
    assert!(
        out.contains("\"name\": \"t\"") || out.contains("\"name\":\"t\""),
        "{out}"
    );
    let (st, out, err) = status("status-nobody", Some(65534));
    assert!(st.is_some_and(|s| !s.success()), "nobody got: {out}");
    assert!(!out.contains("\"t\""), "{out}");
    assert!(err.contains("unreadable status reply"), "{err}");
    let refused = up
        .stderr()
        .wait_for_line("refusing a client of another user", Duration::from_secs(10));
    assert!(
        refused.is_some_and(|l| l.contains("65534")),
        "{}",
        up.stderr_text()
    );
}

/// `expiry-time` is read in the relay's time zone (`TZ`), as sshd reads it; `Z` means UTC.
/// The relay runs at UTC+14, and both keys expire at the UTC wall-clock time two hours from
/// now: written without a zone that is 12 hours ago there (refused), with `Z` two hours ahead
/// (admitted). Before, burrow read both as UTC and admitted both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_time_is_read_in_the_relays_time_zone() {
    let dir = test_dir();
    let d = dir.path();
    let (home, ak) = relay_tree(d);
    let local = keygen(d, "local", KeyKind::Ed25519, None);
    let zulu = keygen(d, "zulu", KeyKind::Ed25519, None);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let wall = civil_utc(now + 2 * 3600);
    std::fs::write(
        &ak,
        format!(
            "expiry-time=\"{wall}\" {}\nexpiry-time=\"{wall}Z\" {}\n",
            local.public_line, zulu.public_line
        ),
    )
    .unwrap();
    // The logins below -W to an unpublished echo service: open it (the default reaches only
    // published listeners, which would refuse both keys alike).
    let config = d.join("serve.toml");
    std::fs::write(&config, "permit_open = [\"any\"]\n").unwrap();
    let mut cmd = serve(d, &home, &ak, Some(&config));
    cmd.env("TZ", "<+14>-14");
    let child = spawn_logged(cmd, d, "relay-plus14");
    let port = child
        .stderr()
        .wait_until_async(UP_TIMEOUT, |log| {
            log.lines()
                .find_map(|l| l.split("listening on 127.0.0.1:").nth(1))
                .and_then(|p| p.trim().parse::<u16>().ok())
        })
        .await
        .unwrap_or_else(|| panic!("burrow serve did not start:\n{}", child.stderr_text()));
    let known_hosts = d.join("known_hosts");
    let public = public_key_line(&d.join("host_key"));
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {public}\n")).unwrap();
    let relay = Relay {
        child,
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        known_hosts,
        authorized_keys: ak,
        host_key: d.join("host_key"),
    };
    let echo = common::services::echo_server().await;
    let login = |k: &Keypair, name: &str| {
        let mut cmd = relay.ssh(k);
        cmd.args(["-W", &echo.hostport(), "root@127.0.0.1"]);
        let (st, _, err) = run_with_timeout(cmd, d, name, Duration::from_secs(30));
        (st.is_some_and(|s| s.success()), err)
    };
    let (ok, err) = login(&zulu, "zulu");
    assert!(ok, "the Z key is valid for two more hours: {err}");
    let (ok, _) = login(&local, "local");
    assert!(!ok, "the local-time key expired 12 hours ago at UTC+14");
    let log = relay.child.stderr().wait_for_line(
        "key expired (authorized_keys line 1)",
        Duration::from_secs(10),
    );
    assert!(log.is_some(), "{}", relay.child.stderr_text());
}

/// `YYYYMMDDHHMM` of a Unix time, in UTC (days to civil date: Howard Hinnant's algorithm).
fn civil_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (hour, minute) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}{hour:02}{minute:02}")
}
