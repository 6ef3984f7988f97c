//! `hostloop-worker`: the process an isolated plugin runs in, and the headless runner.
//!
//! - `hostloop-worker --fd <socket> ...`: a host starts it (see `hostloop::plugin::LoadOptions`)
//!   with one end of a socket pair; it loads the plugins the host names, with the same loader
//!   and services as in-process, and runs until the host tells it to quit or goes away.
//! - `hostloop-worker run [OPTIONS] PLUGIN`: steps a simulation plugin headless, with snapshots
//!   and a frame cache (`hostloop-worker run --help`); the unit of work of a farm.
//! - `hostloop-worker openjd [OPTIONS] [PLUGIN]`: prints the Open Job Description job
//!   template of a run as chained `run` segments (`hostloop-worker openjd --help`).
//!
//! All of it is `hostloop`'s code (`sdk/src/isolate/worker.rs`, `sdk/src/farm/runner.rs`,
//! `sdk/src/farm/openjd.rs`); this file only picks which.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("run") => hostloop::farm_runner_main(&args[2..]),
        Some("openjd") => hostloop::farm_openjd_main(&args[2..]),
        Some("-h" | "--help") => {
            println!("usage: hostloop-worker run [OPTIONS] PLUGIN   (hostloop-worker run --help)");
            println!("       hostloop-worker openjd [OPTIONS] [PLUGIN]   (hostloop-worker openjd --help)");
            println!("       hostloop-worker --fd <socket> [--workers N] [--parent PID]");
            println!("The last form is started by a host for an isolated plugin, not by hand.");
            std::process::ExitCode::SUCCESS
        }
        _ => hostloop::isolate_worker_main(),
    }
}
