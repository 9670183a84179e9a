//! Unit tests for the ssh_config reader, cross-checked against `ssh -G` where ssh is installed.

use super::include::include_pattern;
use super::parse::split_args;
use super::*;
use crate::pattern::{pattern_list, wildmatch, ListMatch};
use std::collections::HashMap;
use std::process::{Command, Stdio};

/// What OpenSSH's `ssh -G` made of a config, when ssh is installed.
enum Ssh {
    Missing,
    Rejected,
    Accepted(HashMap<String, Vec<String>>),
}

/// Run `ssh -G -F config [extra] host`; options as lower-case key → values in order.
fn ssh_g(config: &Path, host: &str, extra: &[&str]) -> Ssh {
    let output = Command::new("ssh")
        .arg("-G")
        .arg("-F")
        .arg(config)
        .args(extra)
        .arg(host)
        .stdin(Stdio::null())
        .output();
    let Ok(output) = output else {
        println!("note: ssh not found; skipping the `ssh -G` cross-check");
        return Ssh::Missing;
    };
    if !output.status.success() {
        return Ssh::Rejected;
    }
    let mut options: HashMap<String, Vec<String>> = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        options
            .entry(key.to_string())
            .or_default()
            .push(value.to_string());
    }
    Ssh::Accepted(options)
}

/// The local user name as ssh sees it (its default `user`), else `$USER`.
fn local_user() -> String {
    if let Ssh::Accepted(o) = ssh_g(Path::new("/dev/null"), "h", &[]) {
        if let Some(user) = o.get("user").and_then(|v| v.first()) {
            return user.clone();
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "root".to_string())
}

fn ctx(host: &str, user: Option<&str>) -> MatchContext {
    MatchContext {
        host: host.to_string(),
        original_host: host.to_string(),
        user: user.map(str::to_string),
        local_user: local_user(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&path, text).unwrap();
    path
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn split_args_like_argv_split() {
    #[rustfmt::skip]
    let cases: &[(&str, Result<&[&str], ()>)] = &[
        ("a b\tc", Ok(&["a", "b", "c"])),
        ("\"a b\" c", Ok(&["a b", "c"])),
        ("'a b'c", Ok(&["a bc"])),
        ("a\\ b", Ok(&["a b"])),
        ("\"a\\\"b\"", Ok(&["a\"b"])),
        ("a\\x", Ok(&["a\\x"])),
        ("a # comment", Ok(&["a"])),
        ("a#b", Ok(&["a#b"])),
        ("\"#x\" y", Ok(&["#x", "y"])),
        ("\"\"", Ok(&[""])),
        ("\"open", Err(())),
        ("a 'open", Err(())),
    ];
    for (input, want) in cases {
        let got = split_args(input).map_err(|_| ());
        assert_eq!(got, want.map(strings), "{input:?}");
    }
}

#[test]
fn option_lines_like_ssh_o() {
    /// Input, and either the key and arguments or the error's problem text.
    type Case = (
        &'static str,
        Result<(&'static str, &'static [&'static str]), &'static str>,
    );
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("Port=22", Ok(("port", &["22"]))),
        ("Port 22", Ok(("port", &["22"]))),
        ("Port = 22", Ok(("port", &["22"]))),
        ("  PORT\t= \t22  ", Ok(("port", &["22"]))),
        ("Port==22", Err("Port \"=22\" is not a number")),
        ("User \"a b\"", Ok(("user", &["a b"]))),
        ("SetEnv \"A=x y\" B=2", Ok(("setenv", &["A=x y", "B=2"]))),
        ("LocalForward 8080 localhost:80", Ok(("localforward", &["8080", "localhost:80"]))),
        ("ProxyCommand ssh -W %h:%p \"jump host\" # not a comment", Ok(( "proxycommand", &["ssh -W %h:%p \"jump host\" # not a comment"], ))),
        ("SomeFutureOption=whatever 1 2", Ok(("somefutureoption", &["whatever", "1", "2"]))),
        ("Port", Err("no argument after keyword \"Port\"")),
        ("Port abc", Err("Port \"abc\" is not a number")),
        ("Port 1 2", Err("Port has extra arguments at end of line")),
        ("Compression maybe", Err("Compression \"maybe\" is not valid (expected yes, no)")),
        ("User \"open", Err("invalid quotes (unterminated quote)")),
        ("Host x", Err("Host is not supported as a command-line option")),
        ("match all", Err("Match is not supported as a command-line option")),
        ("Include x", Err("Include is not supported as a command-line option")),
        ("", Err("empty option")),
    ];
    for (input, want) in cases {
        let got = parse_option_line(input);
        match (got, want) {
            (Ok((key, args)), Ok((k, a))) => {
                assert_eq!((key.as_str(), args), (*k, strings(a)), "{input:?}")
            }
            (Err(err), Err(problem)) => {
                assert_eq!(err.to_string(), format!("-o \"{input}\": {problem}"))
            }
            (got, _) => panic!("{input:?}: unexpected {got:?}"),
        }
    }
}

#[test]
fn pattern_lists_like_match_c() {
    let cases: &[(&str, &str, bool)] = &[
        ("host", "host", true),
        ("host", "HOST", true),
        ("HOST", "host", true),
        ("host", "h*", true),
        ("host", "h?st", true),
        ("host", "h?t", false),
        ("host", "*", true),
        ("", "*", true),
        ("host", "", false),
        ("a.example.com", "*.example.com", true),
        ("example.com", "*.example.com", false),
        ("b", "a,b,c", true),
        ("b", "a,!b,*", false),
        ("b", "*,!b", false),
        ("c", "*,!b", true),
        ("b", "!b", false),
        ("c", "!b", false),
        ("x", "a,", false),
        ("aXbXc", "a*b*c", true),
        ("abcbd", "a*bd", true),
        ("ab", "a**b", true),
        (
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "*a*a*a*a*a*a*a*a*a*a*b",
            false,
        ),
        ("[h]:22", "[h]:2?", true),
    ];
    for (name, patterns, want) in cases {
        assert_eq!(
            match_pattern_list(name, patterns),
            *want,
            "{name:?} vs {patterns:?}"
        );
    }
    // Case-sensitive lists (Match user/localuser).
    assert!(!pattern_list("Bob", "bob", false).is_hit());
    assert_eq!(pattern_list("bob", "*,!bob", false), ListMatch::Negative);
}

#[test]
fn glob_classes() {
    let cases: &[(&str, &str, bool)] = &[
        ("a1", "a[0-9]", true),
        ("ab", "a[0-9]", false),
        ("ab", "a[!0-9]", true),
        ("a]", "a[]]", true),
        ("a[", "a[", true),
        ("conf.d", "*.[cd]", true),
    ];
    for (name, pattern, want) in cases {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = name.chars().collect();
        assert_eq!(wildmatch(&p, &t, true), *want, "{name:?} vs {pattern:?}");
    }
}

#[test]
fn time_values_like_convtime() {
    let cases: &[(&str, Option<u64>)] = &[
        ("30", Some(30)),
        ("30s", Some(30)),
        ("5m", Some(300)),
        ("1h30m", Some(5400)),
        ("1H30", Some(3630)),
        ("2d", Some(172800)),
        ("1w", Some(604800)),
        ("", None),
        ("m", None),
        ("5x", None),
        ("-5", None),
        ("99999999999", None),
    ];
    for (input, want) in cases {
        assert_eq!(parse_time(input), *want, "{input:?}");
    }
}

/// Each line alone in a config: must burrow accept it, and does ssh agree?
#[test]
fn line_validation_agrees_with_ssh() {
    // (line, burrow accepts, ssh is expected to decide the same way)
    #[rustfmt::skip]
    let cases: &[(&str, bool, bool)] = &[
        ("Port 2222", true, true),
        ("Port=2222", true, true),
        ("Port abc", false, true),
        ("Port 0", false, true),
        ("Port 65536", false, true),
        ("Port 1 2", false, true),
        ("Port", false, true),
        ("Compression yes", true, true),
        ("Compression true", false, true),
        ("BatchMode TRUE", true, true),
        ("BatchMode maybe", false, true),
        ("StrictHostKeyChecking accept-new", true, true),
        ("StrictHostKeyChecking sometimes", false, true),
        ("PubkeyAuthentication host-bound", true, true),
        ("RequestTTY force", true, true),
        ("ControlMaster autoask", true, true),
        ("ServerAliveInterval 1h30m", true, true),
        ("ServerAliveInterval 5x", false, true),
        ("ConnectTimeout none", true, true),
        ("ServerAliveCountMax 3", true, true),
        ("ServerAliveCountMax -1", false, true),
        ("NumberOfPasswordPrompts x", false, true),
        ("ControlPersist 10m", true, true),
        ("ControlPersist yes", true, true),
        ("ControlPersist forever", false, true),
        ("StreamLocalBindMask 0177", true, true),
        ("StreamLocalBindMask 0999", false, false), // ssh keeps the octal prefix "0"
        ("EscapeChar ~", true, true),
        ("EscapeChar ^A", true, true),
        ("EscapeChar none", true, true),
        ("EscapeChar ab", false, true),
        ("LogLevel DEBUG3", true, true),
        ("LogLevel loud", false, true),
        ("SendEnv LANG LC_*", true, true),
        ("SendEnv A=1", false, true),
        ("SetEnv A=1 \"B=two words\"", true, true),
        ("SetEnv A", false, true),
        ("LocalForward 8080 localhost:80", true, true),
        ("LocalForward 8080", false, true),
        ("RemoteForward 8080", true, true),
        ("DynamicForward 1080", true, true),
        ("AddKeysToAgent confirm 5m", true, true),
        ("AddKeysToAgent 1h", true, true),
        ("AddKeysToAgent yes 5m", false, true),
        ("AddKeysToAgent maybe", false, true),
        ("ForwardAgent $SSH_AUTH_SOCK", true, true),
        ("User \"unterminated", false, true),
        ("ProxyCommand nc %h %p \"odd", false, true),
        ("ProxyCommand nc %h %p # kept", true, true),
        ("Host \"\"", false, true),
        ("Match all", true, true),
        ("Match all host x", false, true),
        ("Match host", false, true),
        ("Match", false, true),
        ("Match bogus x", false, true),
        ("Match exec \"echo %Z\"", false, true),
        ("Match !host=x user y", true, false), // ssh 9.2 predates `name=arg`
        ("Match localnetwork 10.0.0.0/8", false, false), // ssh supports it; burrow refuses
        ("SomeFutureOption x", true, false),   // ssh rejects unknown keys; burrow keeps them
    ];
    let dir = tempfile::tempdir().unwrap();
    for (line, accept, ssh_agrees) in cases {
        let path = write(dir.path(), "config", &format!("{line}\n"));
        let ours = SshConfig::load(&path, dir.path());
        assert_eq!(ours.is_ok(), *accept, "{line:?}: {ours:?}");
        if let Err(err) = ours {
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("{} line 1: ", path.display())),
                "{msg}"
            );
        }
        if *ssh_agrees {
            match ssh_g(&path, "h", &[]) {
                Ssh::Missing => {}
                Ssh::Rejected => assert!(!accept, "ssh rejects {line:?}"),
                Ssh::Accepted(_) => assert!(accept, "ssh accepts {line:?}"),
            }
        }
    }
}

#[test]
fn error_names_file_line_and_problem() {
    let text = "# comment\nHost x\n  Port abc\n";
    let err =
        SshConfig::parse_str(text, Path::new("/home/u/.ssh/config"), Path::new("/")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/home/u/.ssh/config line 3: Port \"abc\" is not a number"
    );
    let err = SshConfig::parse_str("Match nope x\n", Path::new("/c"), Path::new("/")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/c line 1: unknown Match criterion \"nope\""
    );
    let err = SshConfig::load(Path::new("/nonexistent/config"), Path::new("/")).unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

/// (config, host, -l user, expected first values; `None` = not set by the config).
type LookupCase = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static [(&'static str, Option<&'static str>)],
);

#[test]
fn lookup_matches_ssh() {
    #[rustfmt::skip]
    let cases: &[LookupCase] = &[
        ("Host foo\n Port 1111\nHost *\n Port 2222\n User u\n", "foo", None, &[("port", Some("1111")), ("user", Some("u"))]),
        ("Host foo\n Port 1111\nHost *\n Port 2222\n", "bar", None, &[("port", Some("2222"))]),
        ("Port 12\nHost foo\n Port 13\n", "foo", None, &[("port", Some("12"))]),
        ("Host FOO\n Port 1111\nHost foo\n Port 2222\n", "foo", None, &[("port", Some("2222"))]),
        ("Host FOO\n Port 1111\nHost foo\n Port 2222\n", "FOO", None, &[("port", Some("1111"))]),
        ("Host * !bar\n Port 1\n", "foo", None, &[("port", Some("1"))]),
        ("Host * !bar\n Port 1\n", "bar", None, &[("port", None)]),
        ("Host !bar *\n Port 1\n", "bar", None, &[("port", None)]),
        ("Host a,b\n Port 5\n", "a", None, &[("port", None)]),
        ("Host a b\n Port 5\n", "b", None, &[("port", Some("5"))]),
        ("Host *.example.com ?x\n User w\n", "h.example.com", None, &[("user", Some("w"))]),
        ("Host *.example.com ?x\n User w\n", "ax", None, &[("user", Some("w"))]),
        ("Host *.example.com ?x\n User w\n", "abx", None, &[("user", None)]),
        ("Host alias\n HostName real.example.com\nMatch host *.example.com\n User bob\n", "alias", None, &[ ("hostname", Some("real.example.com")), ("user", Some("bob")), ]),
        ("Match host *.example.com\n User bob\nHost alias\n HostName real.example.com\n", "alias", None, &[("user", None)]),
        ("Host foo\n HostName %h.example.com\nMatch host foo.example.com\n Port 16\n", "foo", None, &[("port", Some("16"))]),
        ("Match originalhost ali*\n Port 7\n", "alias", None, &[("port", Some("7"))]),
        ("Match host FOO\n Port 15\n", "foo", None, &[("port", Some("15"))]),
        ("Match host \"!bad*,*.ex\"\n Port 10\n", "a.ex", None, &[("port", Some("10"))]),
        ("Match host \"!bad*,*.ex\"\n Port 10\n", "bad.ex", None, &[("port", None)]),
        ("Match !host foo\n Port 3\n", "foo", None, &[("port", None)]),
        ("Match !host foo\n Port 3\n", "bar", None, &[("port", Some("3"))]),
        ("Match all\n Port 4\n", "x", None, &[("port", Some("4"))]),
        ("Match user bob\n Port 9\n", "h", Some("bob"), &[("port", Some("9")), ("user", None)]),
        ("Match user bob\n Port 9\n", "h", Some("Bob"), &[("port", None)]),
        ("Host foo\n User alice\nMatch user alice\n Port 14\n", "foo", None, &[("port", Some("14"))]),
        ("Host foo\n User alice\nMatch user alice\n Port 14\n", "foo", Some("carol"), &[("port", None), ("user", Some("alice"))]),
        ("Match host foo user nobody-here\n Port 17\n", "foo", None, &[("port", None)]),
        ("Match canonical\n Port 5\nMatch !final\n Port 6\n", "x", None, &[("port", Some("6"))]),
        ("Match exec \"test %h = foo\"\n Port 8\n", "foo", None, &[("port", Some("8"))]),
        ("Match exec \"test %h = foo\"\n Port 8\n", "bar", None, &[("port", None)]),
        ("Match !exec false\n Port 18\n", "x", None, &[("port", Some("18"))]),
        ("Host foo\n Port 2200\nMatch exec \"test %p = 2200 && test %n = foo\"\n User e\n", "foo", None, &[("user", Some("e"))]),
        ("Host x\nPort 19\n", "y", None, &[("port", None)]),
    ];
    let local = local_user();
    let dir = tempfile::tempdir().unwrap();
    for (index, (text, host, user, wants)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("config{index}"), text);
        let config = SshConfig::load(&path, dir.path()).unwrap();
        let mut context = ctx(host, *user);
        context.local_user.clone_from(&local);
        let got = config.lookup(&context);
        for (key, want) in *wants {
            assert_eq!(got.first(key), *want, "{text:?} for {host}: {key}");
        }
        let extra: Vec<&str> = user.map(|u| vec!["-l", u]).unwrap_or_default();
        let theirs = match ssh_g(&path, host, &extra) {
            Ssh::Missing => continue,
            Ssh::Rejected => panic!("ssh -G rejected {text:?}"),
            Ssh::Accepted(theirs) => theirs,
        };
        for (key, want) in *wants {
            // ssh -G shows effective values: skip raw %h values and the -l user.
            let from_command_line = *key == "user" && user.is_some();
            let Some(want) = want.filter(|w| !w.contains('%') && !from_command_line) else {
                continue;
            };
            let theirs = theirs
                .get(*key)
                .and_then(|v| v.first())
                .map(|v| v.to_lowercase());
            assert_eq!(
                theirs.as_deref(),
                Some(want.to_lowercase().as_str()),
                "ssh -G: {text:?} for {host}: {key}"
            );
        }
    }
}

#[test]
fn match_lines_also_see_users_across_local_user() {
    let config = SshConfig::parse_str(
        "Match localuser someone-else\n Port 1\nMatch user someone-else\n Port 2\nMatch localuser *\n Port 3\n",
        Path::new("/c"),
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(config.lookup(&ctx("h", None)).first("port"), Some("3"));
}

#[test]
fn exec_is_skipped_after_a_failed_criterion() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let text = format!(
        "Match host nomatch exec \"touch {0}\"\n Port 1\nMatch host h !exec \"touch {0}.2\"\n Port 2\n",
        marker.display()
    );
    let config = SshConfig::parse_str(&text, Path::new("/c"), dir.path()).unwrap();
    let got = config.lookup(&ctx("h", None));
    assert_eq!(got.first("port"), None, "touch succeeded, so !exec fails");
    assert!(!marker.exists(), "exec ran although host did not match");
    assert!(
        dir.path().join("ran.2").exists(),
        "exec should run when earlier criteria hold"
    );
}

#[test]
fn multi_valued_keys_accumulate_like_ssh() {
    let text = "Host *\n IdentityFile /k/a\n IdentityFile /k/b\n LocalForward 1 h:2\n SetEnv A=1\n SendEnv X Y\nHost foo\n LocalForward 3 h:4\n SetEnv B=2\n SendEnv Z\n User first\n User second\n";
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "config", text);
    let got = SshConfig::load(&path, dir.path())
        .unwrap()
        .lookup(&ctx("foo", None));
    let all = |key| -> Vec<Vec<String>> { got.get_all(key).iter().map(|a| a.to_vec()).collect() };
    assert_eq!(
        all("identityfile"),
        vec![strings(&["/k/a"]), strings(&["/k/b"])]
    );
    assert_eq!(
        all("LocalForward"),
        vec![strings(&["1", "h:2"]), strings(&["3", "h:4"])]
    );
    assert_eq!(all("sendenv"), vec![strings(&["X", "Y"]), strings(&["Z"])]);
    assert_eq!(all("setenv"), vec![strings(&["A=1"])]);
    assert_eq!(all("user"), vec![strings(&["first"])]);
    if let Ssh::Accepted(theirs) = ssh_g(&path, "foo", &[]) {
        assert_eq!(theirs["identityfile"], strings(&["/k/a", "/k/b"]));
        assert_eq!(theirs["localforward"].len(), 2);
        assert_eq!(theirs["setenv"], strings(&["A=1"]));
        assert_eq!(theirs["sendenv"], strings(&["X", "Y", "Z"]));
        assert_eq!(theirs["user"], strings(&["first"]));
    }
}

#[test]
fn command_line_options_are_seen_by_match() {
    let config = SshConfig::parse_str(
        "Match host real.example\n User m\nMatch exec \"test %p = 2200\"\n Port 1\n Compression yes\n",
        Path::new("/c"),
        Path::new("/"),
    )
    .unwrap();
    let mut command_line = HostOptions::default();
    for line in ["HostName=real.example", "Port=2200"] {
        let (key, args) = parse_option_line(line).unwrap();
        command_line.set_if_absent(&key, args, false);
    }
    let got = config.lookup_onto(&ctx("alias", None), command_line);
    assert_eq!(got.first("user"), Some("m"));
    assert_eq!(got.first("port"), Some("2200"));
    assert_eq!(got.first("compression"), Some("yes"));
    let plain = config.lookup(&ctx("alias", None));
    assert_eq!((plain.first("user"), plain.first("port")), (None, None));
}

#[test]
fn command_line_options_win_over_config() {
    let config = SshConfig::parse_str(
        "Host *\n Port 2222\n User cfg\n LocalForward 1 h:1\n",
        Path::new("/c"),
        Path::new("/"),
    )
    .unwrap();
    let mut options = HostOptions::default();
    for line in ["port=3333", "LocalForward 9 h:9"] {
        let (key, args) = parse_option_line(line).unwrap();
        options.set_if_absent(&key, args, is_multi(&key));
    }
    options.merge_from(config.lookup(&ctx("h", None)));
    assert_eq!(options.first("Port"), Some("3333"));
    assert_eq!(options.first("user"), Some("cfg"));
    assert_eq!(options.get_all("localforward").len(), 2);
    assert_eq!(
        options.get_all("localforward")[0],
        strings(&["9", "h:9"]).as_slice()
    );
    let keys: Vec<&str> = options.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["port", "localforward", "user", "localforward"]);
}

/// Include semantics from OpenSSH's regress/cfginclude.sh, rebuilt with our own files.
#[test]
fn include_matches_ssh() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    write(
        dir.path(),
        "inc.d/1",
        "Host a\n HostName inc1-a\nHost b\n HostName inc1-b\nMatch host d\n HostName inc1-d\n",
    );
    write(
        dir.path(),
        "inc.d/2",
        "Host c\n HostName inc2-c\nMatch all\n HostName inc2-all\n",
    );
    write(dir.path(), "inc.d/.hidden", "HostName hidden\n");
    write(dir.path(), "leak", "Host nothing-matches-this\n");
    let main = write(
        dir.path(),
        "config",
        &format!(
            "Host a\n HostName main-a\n Include {d}/inc.d/*\nHost b\n Include {d}/inc.d/* # comment\n HostName main-b\nMatch host c\n Include {d}/inc.d/*\nHost d\n Include {d}/inc.d/*\nHost e\n Include {d}/leak {d}/none-*\n Port 99\nHost f\n Include {d}/leak\nHost g\n Include \"{d}/inc.d/[0-1]\"\n"
        ),
    );
    let config = SshConfig::load(&main, dir.path()).unwrap();
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("a", "hostname", Some("main-a")),
        ("b", "hostname", Some("inc1-b")),
        ("c", "hostname", Some("inc2-c")),
        ("d", "hostname", Some("inc1-d")),
        ("e", "port", Some("99")),
        ("f", "hostname", None),
        ("g", "hostname", None),
        ("x", "hostname", None),
    ];
    for (host, key, want) in cases {
        let got = config.lookup(&ctx(host, None));
        assert_eq!(got.first(key), *want, "host {host}");
        match (ssh_g(&main, host, &[]), want) {
            (Ssh::Rejected, _) => panic!("ssh -G rejected the include test config"),
            (Ssh::Accepted(theirs), Some(want)) => {
                assert_eq!(theirs[*key], strings(&[want]), "ssh -G, host {host}")
            }
            _ => {}
        }
    }
}

#[test]
fn include_paths_resolve_against_base_home_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let home = std::env::var("HOME").unwrap_or_default();
    let cases: &[(&str, String)] = &[
        (
            "conf.d/*",
            dir.path().join("conf.d/*").display().to_string(),
        ),
        ("/etc/ssh/x", "/etc/ssh/x".to_string()),
        ("~/x", format!("{home}/x")),
        ("${HOME}/y", format!("{home}/y")),
        ("~root/z", "/root/z".to_string()),
    ];
    for (arg, want) in cases {
        let got = include_pattern(arg, dir.path()).unwrap();
        assert_eq!(got, PathBuf::from(want), "{arg}");
    }
    for bad in [
        "%h.conf",
        "${NO_SUCH_VARIABLE_FOR_BURROW_TESTS}/x",
        "~no-such-user-here/x",
    ] {
        assert!(include_pattern(bad, dir.path()).is_err(), "{bad}");
    }
    write(dir.path(), "conf.d/one", "Port 4444\n");
    let config = SshConfig::parse_str("Include conf.d/*\n", Path::new("/c"), dir.path()).unwrap();
    assert_eq!(config.lookup(&ctx("h", None)).first("port"), Some("4444"));
}

#[test]
fn include_errors() {
    let dir = tempfile::tempdir().unwrap();
    let looping = dir.path().join("loop");
    fs::write(&looping, format!("Include {}\n", looping.display())).unwrap();
    let err = SshConfig::load(&looping, dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("too many nested Include levels"),
        "{err}"
    );
    if let Ssh::Accepted(_) = ssh_g(&looping, "h", &[]) {
        panic!("ssh accepted an Include loop");
    }

    fs::create_dir(dir.path().join("adir")).unwrap();
    let err = SshConfig::parse_str("Include adir\n", Path::new("/c"), dir.path()).unwrap_err();
    assert!(matches!(err, ConfigError::Include { line: 1, .. }), "{err}");

    write(dir.path(), "bad/inc", "HostName x\n Junk\n");
    let err = SshConfig::parse_str(
        "Host nomatch\n Include bad/*\n",
        Path::new("/c"),
        dir.path(),
    )
    .unwrap_err();
    let inc = dir.path().join("bad/inc");
    assert_eq!(
        err.to_string(),
        format!(
            "{} line 2: no argument after keyword \"Junk\"",
            inc.display()
        )
    );

    SshConfig::parse_str(
        "Include missing-* nothing-here\n",
        Path::new("/c"),
        dir.path(),
    )
    .unwrap();
}

#[test]
fn expand_tokens_cases() {
    let mut t = Tokens::new("real.example", "Alias", 2222, "bob", "alice");
    t.home = PathBuf::from("/home/alice");
    t.uid = 1000;
    t.local_hostname = "box.lan".to_string();
    let home = std::env::var("HOME").unwrap_or_default();
    #[rustfmt::skip]
    let cases: &[(&str, Result<String, &str>)] = &[
        ("%h:%p", Ok("real.example:2222".into())),
        ("%r@%n %u %i %d", Ok("bob@Alias alice 1000 /home/alice".into())),
        ("%l %L.", Ok("box.lan box.".into())),
        ("%j", Err("token \"%j\" is not supported by burrow")),
        ("%k", Err("token \"%k\" is not supported by burrow")),
        ("100%%", Ok("100%".into())),
        ("~", Ok("/home/alice".into())),
        ("~/.ssh/id_%h", Ok("/home/alice/.ssh/id_real.example".into())),
        ("a~b", Ok("a~b".into())),
        ("${HOME}/x", Ok(format!("{home}/x"))),
        ("$HOME/x", Ok("$HOME/x".into())),
        ("%x", Err("unknown token \"%x\"")),
        ("50%", Err("a lone \"%\" at the end (write %% for a percent sign)")),
        ("${NO_SUCH_VARIABLE_FOR_BURROW_TESTS}", Err("environment variable \"NO_SUCH_VARIABLE_FOR_BURROW_TESTS\" is not set")),
        ("${HOME", Err("\"${\" without a closing \"}\"")),
    ];
    for (input, want) in cases {
        match (expand_tokens(input, &t), want) {
            (Ok(got), Ok(want)) => assert_eq!(&got, want, "{input:?}"),
            (Err(err), Err(problem)) => {
                assert_eq!(
                    err.to_string(),
                    format!("cannot expand \"{input}\": {problem}")
                )
            }
            (got, _) => panic!("{input:?}: unexpected {got:?}"),
        }
    }
    // %C vector computed independently: sha1("box.lan" "real.example" "2222" "bob").
    assert_eq!(
        t.connection_hash(),
        "ce520e2ebd3ca8efb9cbfd1d3b36975f8024794d"
    );
}

/// %C and the other tokens as `ssh -G` expands them in ControlPath.
#[test]
fn tokens_match_ssh_control_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "config", "");
    let pattern = "%C_%l_%L_%h_%p_%r_%u_%n_%i_%d";
    let extra = [
        "-o",
        &format!("ControlPath={pattern}"),
        "-p",
        "2222",
        "-l",
        "bob",
    ];
    let Ssh::Accepted(theirs) = ssh_g(&config, "Foo.Example", &extra) else {
        return;
    };
    let t = Tokens::new("foo.example", "Foo.Example", 2222, "bob", &local_user());
    assert_eq!(
        expand_tokens(pattern, &t).unwrap(),
        theirs["controlpath"][0]
    );
}
