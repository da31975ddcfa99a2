//! The command-line contract's error cases: a one-line `error:` on stderr, the right exit
//! code, never a panic.

use integration_tests::daemon::nat_ctl_bin;
use std::process::{Command, Stdio};

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(nat_ctl_bin()).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_config(name: &str, text: &str) -> String {
    let p = std::env::temp_dir().join(format!("{}-{name}.toml", integration_tests::unique("cfg")));
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn error_table() {
    let bad_toml = temp_config(
        "bad",
        "lan = \"lo\"\nwan = \"lo2\"\n[timeouts]\nudp = \"soon\"\n",
    );
    let reversed = temp_config("rev", "[ports]\nrange = \"30000-20000\"\n");
    let zero = temp_config("zero", "[tables]\nsessions = 0\n");
    let mss = temp_config("mss", "[tcp]\nmss_clamp = 100\n");
    let quota = temp_config("quota", "[limits]\nmappings_per_host = 0\n");
    let inst = integration_tests::unique("none");
    // (arguments, exit code, what stderr's first line must contain)
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["frobnicate"], 2, "unrecognized subcommand"),
        (vec!["run"], 1, "no LAN interface"),
        (
            vec!["run", "--lan", "nosuch0", "--wan", "lo"],
            1,
            "interface 'nosuch0' not found",
        ),
        (
            vec!["run", "--lan", "lo", "--wan", "nosuch1"],
            1,
            "interface 'nosuch1' not found",
        ),
        (vec!["run", "--lan", "lo", "--wan", "lo"], 1, "both 'lo'"),
        (
            vec![
                "run",
                "--lan",
                "lo",
                "--wan",
                "x",
                "--wan-addr",
                "999.1.1.1",
            ],
            2,
            "invalid value",
        ),
        (
            vec!["run", "--config", "/nonexistent/x.toml"],
            1,
            "cannot read config file /nonexistent/x.toml",
        ),
        (vec!["run", "--config", &bad_toml], 1, "line 4"),
        (
            vec!["run", "--lan", "a", "--wan", "b", "--config", &reversed],
            1,
            "reversed",
        ),
        (
            vec!["run", "--lan", "a", "--wan", "b", "--config", &zero],
            1,
            "tables.sessions = 0",
        ),
        (
            vec!["run", "--lan", "a", "--wan", "b", "--sweep-interval", "0"],
            2,
            "invalid value",
        ),
        (
            vec!["run", "--lan", "a", "--wan", "b", "--config", &mss],
            1,
            "tcp.mss_clamp = 100",
        ),
        (
            vec!["run", "--lan", "a", "--wan", "b", "--config", &quota],
            1,
            "limits.mappings_per_host = 0",
        ),
        (
            vec!["run", "--lan", "a", "--wan", "b", "--log-level", "loud"],
            2,
            "invalid value 'loud'",
        ),
        (
            vec!["--instance", &inst, "status"],
            1,
            "no xdp-nat instance",
        ),
        (
            vec!["--instance", &inst, "sessions"],
            1,
            "no xdp-nat instance",
        ),
        (
            vec!["--instance", &inst, "stats", "--json"],
            1,
            "no xdp-nat instance",
        ),
        (
            vec!["--instance", &inst, "detach"],
            1,
            "no xdp-nat instance",
        ),
        (
            vec!["--instance", "../etc", "status"],
            1,
            "invalid instance name",
        ),
        (
            vec!["sessions", "--proto", "sctp"],
            2,
            "invalid value 'sctp'",
        ),
        (
            vec!["passthrough", "enable", "gre"],
            2,
            "unknown passthrough protocol 'gre': valid are pptp, l2tp, ipsec",
        ),
        (vec!["passthrough", "disable"], 2, "required"),
        (
            vec!["passthrough", "toggle", "pptp"],
            2,
            "unrecognized subcommand",
        ),
        (
            vec!["--instance", &inst, "passthrough"],
            1,
            "no xdp-nat instance",
        ),
        (
            vec!["--instance", &inst, "passthrough", "disable", "PPTP"],
            1,
            "no xdp-nat instance",
        ),
        (
            vec!["--instance", &inst, "reload"],
            1,
            "no daemon runs instance",
        ),
        (vec!["--instance", &inst, "flush"], 1, "no xdp-nat instance"),
        (
            vec!["--instance", &inst, "top", "--count", "1"],
            1,
            "no xdp-nat instance",
        ),
        (vec!["flush", "--proto", "ah"], 2, "invalid value 'ah'"),
        // Port forwards: the arguments are checked before the instance is looked at.
        (
            vec![
                "--instance",
                &inst,
                "forward",
                "add",
                "tcp",
                "90-80",
                "192.168.1.2",
            ],
            1,
            "first port is above the last",
        ),
        (
            vec![
                "--instance",
                &inst,
                "forward",
                "add",
                "tcp",
                "0",
                "192.168.1.2",
            ],
            1,
            "ports are 1-65535",
        ),
        (
            vec![
                "--instance",
                &inst,
                "forward",
                "add",
                "sctp",
                "80",
                "192.168.1.2",
            ],
            1,
            "unknown forward protocol 'sctp'",
        ),
        (
            vec![
                "--instance",
                &inst,
                "forward",
                "add",
                "tcp",
                "80-89",
                "192.168.1.2:1-5",
            ],
            1,
            "give ranges of the same length",
        ),
        (
            vec![
                "--instance",
                &inst,
                "forward",
                "add",
                "tcp",
                "80",
                "lan-host",
            ],
            1,
            "bad LAN address 'lan-host'",
        ),
        (
            vec![
                "--instance",
                &inst,
                "forward",
                "add",
                "tcp",
                "80",
                "192.168.1.2",
                "--from",
                "198.51.100.7/24",
            ],
            1,
            "host bits set",
        ),
        (
            vec!["--instance", &inst, "forward", "add", "tcp", "80"],
            1,
            "no LAN address",
        ),
        (
            vec![
                "--instance",
                &inst,
                "forward",
                "add",
                "gre",
                "1723",
                "192.168.1.2",
            ],
            1,
            "gre has no ports",
        ),
        (
            vec!["--instance", &inst, "forward", "del", "esp", "50"],
            1,
            "gre and esp forwards have no ports",
        ),
        (vec!["forward", "add"], 2, "required"),
        (
            vec![
                "--instance",
                &inst,
                "forward",
                "add",
                "tcp",
                "80",
                "192.168.1.2",
            ],
            1,
            "no xdp-nat instance",
        ),
        (
            vec!["--instance", &inst, "forward", "del", "udp", "80"],
            1,
            "no xdp-nat instance",
        ),
        (vec!["top", "--interval", "0"], 2, "invalid value"),
        (vec!["sessions", "--src", "lan-host"], 2, "invalid value"),
        (
            vec!["run", "--lan", "a", "--wan", "b", "--metrics", "localhost"],
            2,
            "invalid value",
        ),
    ];
    for (args, code, want) in cases {
        let (got, _, stderr) = run(&args);
        let first = stderr.lines().next().unwrap_or("");
        assert_eq!(
            got,
            Some(code),
            "nat-ctl {args:?}: exit code; stderr: {stderr}"
        );
        assert!(
            first.starts_with("error:"),
            "nat-ctl {args:?}: first line {first:?}"
        );
        assert!(
            stderr.contains(want),
            "nat-ctl {args:?}: stderr {stderr:?} lacks {want:?}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "nat-ctl {args:?} panicked: {stderr}"
        );
        if code == 1 {
            assert_eq!(
                stderr.lines().count(),
                1,
                "nat-ctl {args:?}: one line expected: {stderr}"
            );
        }
    }
}

#[test]
fn status_json_for_a_missing_instance() {
    let (code, stdout, _) = run(&[
        "--instance",
        &integration_tests::unique("gone"),
        "status",
        "--json",
    ]);
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["state"], "absent");
}

#[test]
fn every_command_ends_quietly_when_its_reader_goes_away() {
    // `nat-ctl status | head -2`: the reader is gone before nat-ctl writes.
    for args in [
        &["--instance", "xn-no-such-instance", "status", "--json"][..],
        &["completions", "bash"][..],
        &["man"][..],
        &["--help"][..],
    ] {
        let mut child = Command::new(nat_ctl_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "nat-ctl {args:?} with its reader gone: {stderr}"
        );
    }
}

#[test]
fn help_lists_every_command() {
    let (code, stdout, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for verb in [
        "run",
        "status",
        "sessions",
        "stats",
        "passthrough",
        "forward",
        "top",
        "flush",
        "reload",
        "detach",
        "completions",
        "man",
    ] {
        assert!(stdout.contains(verb), "--help lacks {verb}");
    }
}

#[test]
fn completions_and_man_page_come_from_the_clap_definitions() {
    let (code, bash, _) = run(&["completions", "bash"]);
    assert_eq!(code, Some(0));
    assert!(
        bash.contains("nat-ctl") && bash.contains("passthrough"),
        "bash completion"
    );
    let (code, man, _) = run(&["man"]);
    assert_eq!(code, Some(0));
    assert!(
        man.starts_with(".ie") || man.contains(".TH nat-ctl"),
        "man page: {}",
        &man[..man.len().min(200)]
    );
    assert!(man.contains("passthrough"));
    let (code, _, err) = run(&["completions", "tcsh"]);
    assert_eq!(code, Some(2), "{err}");
}
