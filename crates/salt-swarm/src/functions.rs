//! The execution functions a simulated minion runs, with the return values, `retcode`s and
//! outputters a real 3008 minion gives (`salt/modules/test.py`, `grains.py`, `saltutil.py`,
//! `sys.py`, `state.py`; argument handling from `salt.minion.load_args_and_kwargs`; errors
//! from `Minion._thread_return`).
//!
//! `state.apply`/`state.highstate` answer a canned highstate of successful `test` states,
//! sized by `--return-size`. A function the swarm does not have answers as a real minion
//! without that module: `"'<fun>' is not available."`, `retcode` 1 (`EX_GENERIC`),
//! `success` false, `out: nested`.

use std::time::Duration;

use rmpv::Value as Mp;

/// What a function sees of its minion.
pub struct Env<'a> {
    /// Its grains, built on demand.
    pub grains: &'a dyn Fn() -> Mp,
    /// Entries of `saltutil.running`: the other jobs this minion runs now.
    pub running: Vec<Mp>,
    /// Claimed Salt version.
    pub salt_version: &'a str,
    /// Approximate size of a `state.apply` return, in bytes.
    pub return_size: usize,
}

/// A function's result, before the return load is built around it.
#[derive(Debug, PartialEq)]
pub struct Outcome {
    /// `return`.
    pub ret: Mp,
    /// `retcode`.
    pub retcode: i64,
    /// `out`, when the function (or the error) names an outputter.
    pub out: Option<&'static str>,
}

/// What running a function asks of the caller.
#[derive(Debug, PartialEq)]
pub enum Run {
    /// Done: return this.
    Done(Outcome),
    /// Sleep this long, then return this (`test.sleep`).
    After(Duration, Outcome),
}

/// The functions `sys.list_functions` lists.
pub const FUNCTIONS: &[&str] = &[
    "grains.get",
    "grains.item",
    "grains.items",
    "saltutil.find_job",
    "saltutil.running",
    "state.apply",
    "state.highstate",
    "sys.list_functions",
    "test.arg",
    "test.echo",
    "test.ping",
    "test.sleep",
    "test.version",
];

fn ok(ret: Mp) -> Run {
    Run::Done(Outcome {
        ret,
        retcode: 0,
        out: None,
    })
}

fn error(msg: String) -> Run {
    Run::Done(Outcome {
        ret: Mp::from(msg),
        retcode: 1,
        out: Some("nested"),
    })
}

fn missing_arg(fun: &str, pyname: &str, arg: &str) -> Run {
    error(format!(
        "Passed invalid arguments to {fun}: {pyname}() missing 1 required positional argument: '{arg}'"
    ))
}

/// Splits a publish's `arg` into positional arguments and keyword arguments (maps marked
/// `__kwarg__: true`).
pub fn split_args(arg: &Mp) -> (Vec<Mp>, Vec<(Mp, Mp)>) {
    let mut args = Vec::new();
    let mut kwargs = Vec::new();
    for item in arg.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        match item.as_map() {
            Some(map)
                if map
                    .iter()
                    .any(|(k, v)| k.as_str() == Some("__kwarg__") && *v == Mp::Boolean(true)) =>
            {
                kwargs.extend(
                    map.iter()
                        .filter(|(k, _)| k.as_str() != Some("__kwarg__"))
                        .cloned(),
                );
            }
            _ => args.push(item.clone()),
        }
    }
    (args, kwargs)
}

fn kwarg<'a>(kwargs: &'a [(Mp, Mp)], name: &str) -> Option<&'a Mp> {
    kwargs
        .iter()
        .find_map(|(k, v)| (k.as_str() == Some(name)).then_some(v))
}

/// The first positional argument, or the keyword argument of that name.
fn arg0<'a>(args: &'a [Mp], kwargs: &'a [(Mp, Mp)], name: &str) -> Option<&'a Mp> {
    args.first().or_else(|| kwarg(kwargs, name))
}

fn as_seconds(v: &Mp) -> Option<f64> {
    match v {
        Mp::Integer(i) => i.as_f64(),
        Mp::F32(f) => Some(f64::from(*f)),
        Mp::F64(f) => Some(*f),
        Mp::String(s) => s.as_str()?.trim().parse().ok(),
        _ => None,
    }
}

/// Runs `fun` with the publish `load` (the decoded publish, with the keys the minion adds).
pub fn run(fun: &str, load: &Mp, env: &Env<'_>) -> Run {
    let arg = crate::channel::get(load, "arg")
        .cloned()
        .unwrap_or(Mp::Array(vec![]));
    let (args, kwargs) = split_args(&arg);
    match fun {
        "test.ping" => ok(Mp::Boolean(true)),
        "test.version" => ok(Mp::from(env.salt_version)),
        "test.echo" => match arg0(&args, &kwargs, "text") {
            Some(text) => ok(text.clone()),
            None => missing_arg(fun, "echo", "text"),
        },
        "test.sleep" => match arg0(&args, &kwargs, "length").map(as_seconds) {
            Some(Some(s)) if s.is_finite() && s >= 0.0 => Run::After(
                Duration::from_secs_f64(s.min(86_400.0)),
                Outcome {
                    ret: Mp::Boolean(true),
                    retcode: 0,
                    out: None,
                },
            ),
            Some(_) => error(format!(
                "The minion function caused an exception: ValueError: could not convert the length of {fun} to float"
            )),
            None => missing_arg(fun, "sleep", "length"),
        },
        "test.arg" => {
            let mut kw = kwargs.clone();
            for (k, v) in load.as_map().map(Vec::as_slice).unwrap_or(&[]) {
                if let Some(name) = k.as_str() {
                    if !name.starts_with("__") {
                        kw.push((Mp::from(format!("__pub_{name}")), v.clone()));
                    }
                }
            }
            ok(Mp::Map(vec![
                (Mp::from("args"), Mp::Array(args)),
                (Mp::from("kwargs"), Mp::Map(kw)),
            ]))
        }
        "grains.items" => ok((env.grains)()),
        "grains.get" => {
            let Some(key) = arg0(&args, &kwargs, "key").and_then(Mp::as_str) else {
                return missing_arg(fun, "get", "key");
            };
            let default = args
                .get(1)
                .or_else(|| kwarg(&kwargs, "default"))
                .cloned()
                .unwrap_or(Mp::from(""));
            let grains = (env.grains)();
            let mut ptr = Some(&grains);
            for part in key.split(':') {
                ptr = ptr.and_then(|p| crate::channel::get(p, part));
            }
            ok(ptr.cloned().unwrap_or(default))
        }
        "grains.item" => {
            let grains = (env.grains)();
            let items = args
                .iter()
                .filter_map(Mp::as_str)
                .map(|k| {
                    (
                        Mp::from(k),
                        crate::channel::get(&grains, k).cloned().unwrap_or(Mp::from("")),
                    )
                })
                .collect();
            ok(Mp::Map(items))
        }
        "saltutil.running" => ok(Mp::Array(env.running.clone())),
        "saltutil.find_job" => {
            let Some(jid) = arg0(&args, &kwargs, "jid") else {
                return missing_arg(fun, "find_job", "jid");
            };
            let jid = match jid {
                Mp::String(s) => s.as_str().unwrap_or_default().to_owned(),
                other => other.to_string(),
            };
            let found = env
                .running
                .iter()
                .find(|r| crate::channel::get(r, "jid").and_then(Mp::as_str) == Some(jid.as_str()))
                .cloned();
            ok(found.unwrap_or(Mp::Map(vec![])))
        }
        "sys.list_functions" => ok(Mp::Array(FUNCTIONS.iter().map(|f| Mp::from(*f)).collect())),
        "state.apply" | "state.highstate" => Run::Done(Outcome {
            ret: highstate(env.return_size),
            retcode: 0,
            out: Some("highstate"),
        }),
        other => Run::Done(Outcome {
            ret: Mp::from(format!("'{other}' is not available.")),
            retcode: 1,
            out: Some("nested"),
        }),
    }
}

/// A highstate of successful `test.succeed_without_changes` states, about `size` bytes
/// as msgpack (one state at least).
pub fn highstate(size: usize) -> Mp {
    let now = chrono::Local::now().format("%H:%M:%S%.6f").to_string();
    let count = (size / 260).max(1);
    let states = (0..count)
        .map(|i| {
            let name = format!("swarm_state_{i}");
            (
                Mp::from(format!("test_|-{name}_|-{name}_|-succeed_without_changes")),
                Mp::Map(vec![
                    (Mp::from("name"), Mp::from(name.as_str())),
                    (Mp::from("changes"), Mp::Map(vec![])),
                    (Mp::from("result"), Mp::Boolean(true)),
                    (Mp::from("comment"), Mp::from("Success!")),
                    (Mp::from("__sls__"), Mp::from("swarm")),
                    (Mp::from("__run_num__"), Mp::from(i)),
                    (Mp::from("start_time"), Mp::from(now.as_str())),
                    (Mp::from("duration"), Mp::F64(0.412)),
                    (Mp::from("__id__"), Mp::from(name.as_str())),
                ]),
            )
        })
        .collect();
    Mp::Map(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(fun: &str, arg: Mp) -> Mp {
        Mp::Map(vec![
            (Mp::from("fun"), Mp::from(fun)),
            (Mp::from("arg"), arg),
            (Mp::from("tgt"), Mp::from("*")),
            (Mp::from("jid"), Mp::from("20261206211334521904")),
            (Mp::from("ret"), Mp::from("")),
            (Mp::from("tgt_type"), Mp::from("glob")),
            (Mp::from("user"), Mp::from("root")),
        ])
    }

    fn grains() -> Mp {
        Mp::Map(vec![
            (Mp::from("os"), Mp::from("Debian")),
            (
                Mp::from("nested"),
                Mp::Map(vec![(Mp::from("a"), Mp::from(1))]),
            ),
        ])
    }

    fn env(running: Vec<Mp>) -> Env<'static> {
        Env {
            grains: &grains,
            running,
            salt_version: "3008.4",
            return_size: 1000,
        }
    }

    fn done(r: Run) -> Outcome {
        match r {
            Run::Done(o) => o,
            Run::After(_, o) => o,
        }
    }

    #[test]
    fn ping_echo_version_sleep() {
        let e = env(vec![]);
        assert_eq!(
            done(run("test.ping", &load("test.ping", Mp::Array(vec![])), &e)).ret,
            Mp::Boolean(true)
        );
        let echo = done(run(
            "test.echo",
            &load("test.echo", Mp::Array(vec![Mp::from("hi")])),
            &e,
        ));
        assert_eq!((echo.ret, echo.retcode), (Mp::from("hi"), 0));
        let bad = done(run("test.echo", &load("test.echo", Mp::Array(vec![])), &e));
        assert_eq!((bad.retcode, bad.out), (1, Some("nested")));
        assert_eq!(
            done(run(
                "test.version",
                &load("test.version", Mp::Array(vec![])),
                &e
            ))
            .ret,
            Mp::from("3008.4")
        );
        assert!(matches!(
            run("test.sleep", &load("test.sleep", Mp::Array(vec![Mp::from(2)])), &e),
            Run::After(d, _) if d == Duration::from_secs(2)
        ));
    }

    #[test]
    fn test_arg_has_kwargs_and_pub_keys() {
        let arg = Mp::Array(vec![
            Mp::from("a"),
            Mp::from(1),
            Mp::Map(vec![
                (Mp::from("__kwarg__"), Mp::Boolean(true)),
                (Mp::from("k"), Mp::from("v")),
            ]),
        ]);
        let out = done(run(
            "test.arg",
            &load("test.arg", arg.clone()),
            &env(vec![]),
        ));
        let args = crate::channel::get(&out.ret, "args").cloned();
        assert_eq!(args, Some(Mp::Array(vec![Mp::from("a"), Mp::from(1)])));
        let kwargs = crate::channel::get(&out.ret, "kwargs")
            .cloned()
            .unwrap_or(Mp::Nil);
        assert_eq!(crate::channel::get(&kwargs, "k"), Some(&Mp::from("v")));
        assert_eq!(
            crate::channel::get(&kwargs, "__pub_fun"),
            Some(&Mp::from("test.arg"))
        );
        assert_eq!(crate::channel::get(&kwargs, "__pub_arg"), Some(&arg));
    }

    #[test]
    fn unknown_functions_and_find_job() {
        let e = env(vec![load("test.sleep", Mp::Array(vec![Mp::from(30)]))]);
        let nope = done(run("nope.nope", &load("nope.nope", Mp::Array(vec![])), &e));
        assert_eq!(
            nope,
            Outcome {
                ret: Mp::from("'nope.nope' is not available."),
                retcode: 1,
                out: Some("nested")
            }
        );
        let found = done(run(
            "saltutil.find_job",
            &load(
                "saltutil.find_job",
                Mp::Array(vec![Mp::from("20261206211334521904")]),
            ),
            &e,
        ));
        assert_eq!(
            crate::channel::get(&found.ret, "fun"),
            Some(&Mp::from("test.sleep"))
        );
        let none = done(run(
            "saltutil.find_job",
            &load("saltutil.find_job", Mp::Array(vec![Mp::from("1")])),
            &e,
        ));
        assert_eq!(none.ret, Mp::Map(vec![]));
    }

    #[test]
    fn grains_and_highstate() {
        let e = env(vec![]);
        let g = done(run(
            "grains.get",
            &load("grains.get", Mp::Array(vec![Mp::from("nested:a")])),
            &e,
        ));
        assert_eq!(g.ret, Mp::from(1));
        let missing = done(run(
            "grains.get",
            &load("grains.get", Mp::Array(vec![Mp::from("x")])),
            &e,
        ));
        assert_eq!(missing.ret, Mp::from(""));
        let hs = done(run(
            "state.apply",
            &load("state.apply", Mp::Array(vec![])),
            &e,
        ));
        assert_eq!(hs.out, Some("highstate"));
        let mut bytes = Vec::new();
        let _ = rmpv::encode::write_value(&mut bytes, &highstate(50_000));
        assert!((35_000..70_000).contains(&bytes.len()), "{}", bytes.len());
    }
}
