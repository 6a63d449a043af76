//! The process's two tokio runtimes: one for requests and one, running at a lower CPU
//! priority, for event streams (`http::server` hands streaming connections to it), so that a
//! burst of events fanned out to thousands of streams never delays the answer to a request.

/// How much nicer than the rest of Brine the streams runtime's threads run. Fanning an
/// event out to thousands of streams is a burst of socket writes that can take every CPU;
/// with the kernel preferring the request threads, `/stats`, `/login` and `/run` are answered
/// first and the streams catch up from their buffers (each stream is bounded by
/// `stream_buffer` and `stream_buffer_bytes`). Lowering one's own threads' priority needs no
/// privilege.
pub const STREAMS_NICENESS: i32 = 5;

/// A multi-threaded runtime whose worker threads are called `name` and run `nicer` steps
/// nicer than the thread that starts them.
pub fn new_runtime(name: &str, nicer: i32) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.thread_name(name).enable_all();
    if nicer != 0 {
        let name = name.to_owned();
        builder.on_thread_start(move || {
            if let Err(e) = lower_priority(nicer) {
                tracing::warn!("cannot lower the priority of a {name} thread: {e}");
            }
        });
    }
    builder.build()
}

/// Raises the calling thread's nice value by `nicer` (on Linux, `setpriority` on a thread id
/// changes that thread alone; threads started by it inherit the new value).
fn lower_priority(nicer: i32) -> rustix::io::Result<()> {
    let me = Some(rustix::thread::gettid());
    let now = rustix::process::getpriority_process(me)?;
    rustix::process::setpriority_process(me, (now + nicer).min(19))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn my_niceness() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(i32::MIN)
    }

    #[test]
    fn the_streams_runtime_runs_nicer_than_the_thread_that_built_it() {
        // Built from a fresh thread, so that the test runner's own threads keep their value.
        let seen = std::thread::spawn(|| {
            let mine = my_niceness();
            let rt = new_runtime("nicer-test", 3).ok()?;
            let theirs = rt.block_on(rt.spawn(async { my_niceness() })).ok()?;
            let plain = new_runtime("plain-test", 0).ok()?;
            let plain = plain.block_on(plain.spawn(async { my_niceness() })).ok()?;
            Some((mine, theirs, plain))
        })
        .join()
        .ok()
        .flatten();
        let Some((mine, theirs, plain)) = seen else {
            panic!("no runtime");
        };
        assert!(mine > i32::MIN && mine <= 16, "niceness {mine}");
        assert_eq!(theirs, mine + 3);
        assert_eq!(plain, mine);
    }
}
