//! `hostloop-worker`: the process an isolated plugin runs in.
//!
//! A host starts it (see `hostloop::plugin::LoadOptions`) with one end of a socket pair; it
//! loads the plugins the host names, with the same loader and services as in-process, and runs
//! until the host tells it to quit or goes away. All of it is `hostloop`'s code
//! (`sdk/src/isolate/worker.rs`); this file is only the program's entry point.

fn main() -> std::process::ExitCode {
    hostloop::isolate_worker_main()
}
