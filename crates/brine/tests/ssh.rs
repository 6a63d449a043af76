//! The `ssh` client on a real roster (issue 21): the test starts its own sshd on a free port of
//! 127.0.0.1 as the current user (a generated host key and client key, a private
//! `sshd_config`), writes the master's roster (`<config dir>/roster`, one entry `localhost`,
//! as in salt-pepper's own fixture) and runs salt-ssh through Brine and through the Python
//! rest_cherrypy on the same master: `test.ping` and `cmd.run` by `/` with a session token and
//! by `/run` with eauth credentials, and salt-pepper's integration test `test_ssh_client`
//! (its CLI, `--client=ssh '*' test.ping`, over `/login` and `/run`).
//!
//! The master lists `ssh` in `netapi_enable_clients` and the `brine:` block leaves
//! `enable_ssh` unset: that alone enables the client, as for salt-api. A second Brine on the
//! same master with `enable_ssh: false` refuses it.
//!
//! salt-ssh needs Debian's `openssh-server` (`scripts/ssh-deps` installs it; `scripts/test`
//! runs it first). The thin tarball goes to a `thin_dir` under the stack's root, and ssh checks
//! the test's sshd against a known_hosts file of its own (the roster's `ssh_options`), so the
//! test leaves nothing in the user's `~/.ssh` or `/var/tmp`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // for its helpers; see clippy.toml

pub mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Map, Value};

/// The stack's clients plus `ssh`; `brine:` is left to the stack (no `enable_ssh`).
const EXTRA: &str = "netapi_enable_clients: [local, local_async, local_batch, local_subset, \
                     runner, runner_async, wheel, wheel_async, ssh]";

/// The sshd binary: Debian's openssh-server, or `$SSHD` (as for scripts/ssh-deps).
fn sshd_bin() -> PathBuf {
    std::env::var_os("SSHD").map_or_else(|| PathBuf::from("/usr/sbin/sshd"), PathBuf::from)
}

/// The roster's only entry.
const TARGET: &str = "localhost";

fn st() -> &'static Stack {
    stack_with(StackOpts {
        minions: 1,
        extra_config: EXTRA,
        ..StackOpts::default()
    })
}

/// The test's sshd, killed when the last test holding it drops it.
struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
    pidfile: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pidfile);
    }
}

impl Sshd {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

/// The sshd the running tests share: started by the first, stopped when the last one that
/// holds it ends (a later test starts it again, on a new port, and rewrites the roster).
fn sshd() -> Arc<Sshd> {
    static SHARED: Mutex<Weak<Sshd>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = shared.upgrade() {
        return s;
    }
    let s = Arc::new(start_sshd(st()));
    *shared = Arc::downgrade(&s);
    s
}

/// One salt-ssh call at a time: the first one deploys the thin tarball to the target, and two
/// deploying at once would race on the same `thin_dir`.
static SSH_CALLS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn output(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn keygen(path: &Path, comment: &str) {
    output(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn start_sshd(st: &Stack) -> Sshd {
    let bin = sshd_bin();
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/ssh-deps (Debian's openssh-server)",
        bin.display()
    );
    let dir = st.root.join("sshd");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let (host_key, client_key) = (dir.join("host_key"), dir.join("client_key"));
    if !host_key.exists() {
        keygen(&host_key, "brine-test-host");
        keygen(&client_key, "brine-test-client");
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))
            .expect("authorized_keys");
    }
    let user = output(Command::new("id").arg("-un"));
    // sshd started by root needs its privilege separation directory (Debian's unit creates
    // it at boot, a container has none).
    if output(Command::new("id").arg("-u")) == "0" && !Path::new("/run/sshd").is_dir() {
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
    }
    let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap_or_default();
    let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    let d = dir.display();
    // The port is free when asked and taken by sshd a moment later: another process may
    // take it in between, so a refused start is tried again on another port.
    for _ in 0..3 {
        let port = free_port();
        write(
            &dir.join("sshd_config"),
            &format!(
                "ListenAddress 127.0.0.1:{port}\n\
                 HostKey {d}/host_key\n\
                 PidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 X11Forwarding no\n\
                 PrintMotd no\n\
                 Subsystem sftp internal-sftp\n\
                 LogLevel VERBOSE\n"
            ),
        );
        write(
            &dir.join("known_hosts"),
            &format!("[127.0.0.1]:{port} {}\n", host_pub.join(" ")),
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("sshd.log"))
            .expect("sshd.log");
        let child = Command::new(&bin)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        // Registered with the stack too: its watchdog stops sshd if this binary dies
        // without unwinding.
        let pidfile = st.root.join("pids/sshd.pid");
        write(&pidfile, &child.id().to_string());
        let mut sshd = Sshd {
            child,
            port,
            dir: dir.clone(),
            pidfile,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut exited = false;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                write_roster(st, &sshd, &user);
                return sshd;
            }
            if matches!(sshd.child.try_wait(), Ok(Some(_))) {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(exited, "sshd does not listen on {port}:\n{}", sshd.log());
        eprintln!("sshd exited at start (port {port} taken?):\n{}", sshd.log());
    }
    panic!(
        "sshd did not start:\n{}",
        std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
    );
}

/// The master's roster: the one entry, reached with the test's key, checked against the
/// test's known_hosts, never asking anything (`BatchMode`). `set_path` puts the system's
/// python3 first: salt-ssh's shell shim fails on a `python3` that is a shell script (a pyenv
/// shim: it exports `LD_LIBRARY_PATH` under `set -u`, a `KeyError` when that is unset).
fn write_roster(st: &Stack, sshd: &Sshd, user: &str) {
    let d = sshd.dir.display();
    write(
        &st.config_dir().join("roster"),
        &format!(
            "{TARGET}:\n  host: 127.0.0.1\n  port: {}\n  user: {user}\n  priv: {d}/client_key\n  \
             set_path: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n  \
             thin_dir: {d}/thin\n  ssh_options:\n    - UserKnownHostsFile={d}/known_hosts\n    \
             - StrictHostKeyChecking=yes\n    - BatchMode=yes\n",
            sshd.port
        ),
    );
}

/// An `ssh` chunk.
fn chunk(fun: &str, arg: Value) -> Map<String, Value> {
    let v = json!({"client": "ssh", "tgt": TARGET, "fun": fun, "arg": arg, "timeout": 60});
    v.as_object().cloned().unwrap_or_default()
}

/// The same chunk with eauth credentials (for `/run`).
fn with_creds(st: &Stack, mut c: Map<String, Value>) -> Map<String, Value> {
    c.extend(st.creds().as_object().cloned().unwrap_or_default());
    c
}

/// Sends `req_b` to Brine and `req_c` to the reference, logging both answers and their times.
async fn both_timed(st: &Stack, what: &str, req_b: &Req, req_c: &Req) -> (Resp, Resp) {
    let t0 = Instant::now();
    let b = send(&st.brine, req_b).await;
    let tb = t0.elapsed();
    let c = send(&st.cherry, req_c).await;
    eprintln!(
        "{what}: Brine {} in {:.1} s: {}\n  reference {} in {:.1} s: {}",
        b.status,
        tb.as_secs_f64(),
        b.text(),
        c.status,
        (t0.elapsed() - tb).as_secs_f64(),
        serde_json::to_string(&shape(&c).body).unwrap_or_default()
    );
    (b, c)
}

/// `test.ping` and `cmd.run` on the roster's target, by `/run` with eauth credentials and by
/// `/` with a session token. Where the reference answers, Brine's answer has its shape
/// (status, key headers, body with jids and stamps normalized). Where it cannot (a session
/// token on Salt 3008, [`reference_token_bug`]), Brine's body is compared with the
/// reference's answer to the same command by `/run`.
#[tokio::test]
async fn ssh_ping_and_cmd_run_through_a_roster_match_the_reference() {
    let st = st();
    let sshd = sshd();
    let _one = SSH_CALLS.lock().await;
    let s = sessions(st).await;
    for (fun, arg, want) in [
        ("test.ping", json!([]), json!(true)),
        ("cmd.run", json!(["echo hello"]), json!("hello")),
    ] {
        let c = chunk(fun, arg);
        let check = |what: &str, b: &Resp| {
            assert_eq!(b.status, 200, "{what}: {}\nsshd:\n{}", b.text(), sshd.log());
            let ret = &b.json()["return"][0][TARGET];
            assert_eq!(ret["return"], want, "{what}: {}", b.text());
            assert_eq!(ret["retcode"], json!(0), "{what}: {}", b.text());
            assert_eq!(ret["fun"], json!(fun), "{what}: {}", b.text());
            assert_eq!(ret["id"], json!(TARGET), "{what}: {}", b.text());
        };

        let what = format!("ssh {fun} through /run");
        let run = Req::post_json("/run", &json!([with_creds(st, c.clone())]));
        let (b, by_run) = both_timed(st, &what, &run, &run).await;
        check(&what, &b);
        assert_eq!(
            shape(&b),
            shape(&by_run),
            "{what}: Brine (left) and rest_cherrypy (right) differ"
        );

        let what = format!("ssh {fun} through / with a session");
        let body = json!([c]);
        let (b, r) = both_timed(
            st,
            &what,
            &Req::post_json("/", &body).header("X-Auth-Token", &s.brine),
            &Req::post_json("/", &body).header("X-Auth-Token", &s.cherry),
        )
        .await;
        check(&what, &b);
        if reference_token_bug(&r) {
            eprintln!(
                "{what}: the reference refuses its own session's token (Salt 3008's token \
                 check for ssh); Brine's body is compared with its answer by /run"
            );
            assert_eq!(
                shape(&b).body,
                shape(&by_run).body,
                "{what}: Brine (left) and rest_cherrypy by /run (right) differ"
            );
        } else {
            assert_eq!(
                shape(&b),
                shape(&r),
                "{what}: Brine (left) and rest_cherrypy (right) differ"
            );
        }
    }
}

/// Salt 3008's salt-api refuses every token for `ssh`: `NetapiClient` gives its `LoadAuth`
/// options whose `cachedir` is `<cachedir>/saltapi`, and since 3008 tokens live in Salt's
/// cache (`<cachedir>/tokens`, written by the master), so the token the master issued is
/// looked for where it is not and the answer is a 401 `TokenAuthenticationError`. Salt 3006
/// and 3007 read tokens from `token_dir` and are not affected.
fn reference_token_bug(c: &Resp) -> bool {
    c.status == 401 && c.text().contains("TokenAuthenticationError")
}

/// salt-pepper's `tests/integration/test_clients.py::test_ssh_client`: its `pepper_cli`
/// fixture runs the CLI once over `/login` and once with `--run-uri` (a `/token` token in the
/// chunk, sent to `/run`), and the test asserts `ret['ssh']['localhost']['return'] is True`.
/// Both carry a token, so on Salt 3008 the reference refuses both (see
/// [`reference_token_bug`]; pepper says "Authentication denied").
#[tokio::test]
async fn pepper_test_ssh_client_passes_against_brine() {
    let st = st();
    let _sshd = sshd();
    let _one = SSH_CALLS.lock().await;
    for uri in [&[][..], &["--run-uri"][..]] {
        let mut args: Vec<&str> = uri.to_vec();
        args.extend(["--client=ssh", "*", "test.ping"]);
        let b = pepper_cli(st, &st.brine, &args)
            .unwrap_or_else(|e| panic!("pepper {args:?} against Brine failed: {e}"));
        assert_eq!(
            b["ssh"][TARGET]["return"],
            json!(true),
            "pepper {args:?}: {b}"
        );
        match pepper_cli(st, &st.cherry, &args) {
            Err(e) if e.contains("Authentication denied") => eprintln!(
                "pepper {args:?}: the reference refuses the token (Salt 3008's token check \
                 for ssh): {e}"
            ),
            Err(e) => panic!("pepper {args:?} against the reference failed: {e}"),
            Ok(c) => assert_eq!(
                normalize(&b),
                normalize(&c),
                "pepper {args:?}: Brine (left) and rest_cherrypy (right) differ"
            ),
        }
    }
}

/// `brine: {enable_ssh: false}` switches off the client `netapi_enable_clients` lists.
#[tokio::test]
async fn enable_ssh_false_switches_the_listed_client_off() {
    let st = st();
    let conf = st.root.join("ssh-off-conf");
    std::fs::create_dir_all(conf.join("master.d")).unwrap();
    std::fs::copy(st.config_dir().join("master"), conf.join("master")).unwrap();
    // An included file replaces the top-level `brine:` block of the stack's master file.
    write(
        &conf.join("master.d/ssh.conf"),
        "brine:\n  login_rate_limit: 0\n  enable_ssh: false\n",
    );
    let b = st.spawn_extra_brine_with("brine-ssh-off", &conf, &[]);
    let token = login(&b.url, &st.creds()).await;
    let body = Value::Array(vec![Value::Object(chunk("test.ping", json!([])))]);
    let r = send(
        &b.url,
        &Req::post_json("/", &body).header("X-Auth-Token", &token),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("enable_ssh: false"), "{}", r.text());
    let run = Value::Array(vec![Value::Object(with_creds(
        st,
        chunk("test.ping", json!([])),
    ))]);
    let r = send(&b.url, &Req::post_json("/run", &run)).await;
    assert_eq!(r.status, 400, "{}", r.text());
}
