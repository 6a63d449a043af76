//! Real clients run as processes against either server: uploads with Python's `http.client`
//! (`tests/clients/upload.py`) and with curl, and the `pepper` CLI.

use std::process::Command;

use serde_json::{Map, Value};

use super::{repo, Stack};

/// How a client that sends its whole body before reading saw a request end: the status and
/// body, or the error it got instead (`BrokenPipeError`, a reset).
pub type UploadOutcome = Result<(u16, String), String>;

/// POSTs a body of `mib` MiB to `url` with Python's `http.client` (tests/clients/upload.py),
/// from `source` when given; `headers` as `Name: value`.
pub fn upload_python(
    st: &Stack,
    url: &str,
    mib: u32,
    source: Option<&str>,
    headers: &[&str],
) -> UploadOutcome {
    let mut cmd = Command::new(st.venv.join("bin/python"));
    cmd.arg(repo().join("crates/brine/tests/clients/upload.py"))
        .arg(url)
        .arg(mib.to_string());
    if let Some(s) = source {
        cmd.args(["--source", s]);
    }
    for h in headers {
        cmd.args(["--header", h]);
    }
    let out = cmd.output().map_err(|e| format!("python: {e}"))?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("upload.py: {e}: {}", String::from_utf8_lossy(&out.stderr)))?;
    match v["status"].as_u64() {
        Some(s) => Ok((s as u16, v["body"].as_str().unwrap_or("").to_owned())),
        None => Err(v["error"].as_str().unwrap_or("?").to_owned()),
    }
}

/// The same with curl, posting a file of `mib` MiB (`--data-binary @file`) without
/// `Expect: 100-continue` (so curl sends the body at once, as a script's client does).
pub fn upload_curl(
    st: &Stack,
    url: &str,
    mib: u32,
    source: Option<&str>,
    headers: &[&str],
) -> UploadOutcome {
    let file = st.root.join(format!("upload-{mib}.bin"));
    if !file.exists() {
        let f = std::fs::File::create(&file).map_err(|e| e.to_string())?;
        f.set_len(u64::from(mib) << 20).map_err(|e| e.to_string())?;
    }
    let body_file = st
        .root
        .join(format!("upload-answer-{}.txt", std::process::id()));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "120", "-H", "Expect:"])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg("-o")
        .arg(&body_file)
        .args(["-w", "%{http_code}"]);
    if let Some(s) = source {
        cmd.args(["--interface", s]);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().map_err(|e| format!("curl: {e}"))?;
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        return Err(format!(
            "curl exit {}: {} (code {code})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let body = std::fs::read_to_string(&body_file).unwrap_or_default();
    Ok((code.parse().unwrap_or(0), body))
}

/// Runs the `pepper` CLI (salt-pepper, from the venv) against `base` as `saltdev` with the
/// `auto` eauth, JSON output: its output documents merged into one map (a bare value under
/// `_value`), or its exit status and output when it fails.
pub fn pepper_cli(st: &Stack, base: &str, args: &[&str]) -> Result<Value, String> {
    let home = st.root.join("pepper-home");
    let _ = std::fs::create_dir_all(&home);
    let out = Command::new(st.venv.join("bin/pepper"))
        .env("HOME", &home)
        .args(["-u", base, "-a", "auto", "--username", "saltdev"])
        .args([
            "--password",
            "saltdev",
            "--non-interactive",
            "--out",
            "json",
        ])
        .args(args)
        .output()
        .map_err(|e| format!("pepper: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut merged = Map::new();
    for doc in serde_json::Deserializer::from_str(&stdout).into_iter::<Value>() {
        match doc {
            Ok(Value::Object(m)) => merged.extend(m),
            Ok(other) => {
                merged.insert("_value".into(), other);
            }
            Err(e) => return Err(format!("pepper output is not JSON ({e}): {stdout}")),
        }
    }
    Ok(Value::Object(merged))
}
