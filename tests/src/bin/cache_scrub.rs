//! Reads a frame cache the way a host scrubbing it would: `cache_scrub CACHE` opens it by
//! memory map and reads every frame with its checksums checked, then prints
//! `frames=N bytes=B damaged=0|1`. `cache_scrub --load CACHE` reads the whole file into memory
//! first, as a reader without a memory map would (the control of `tests/tests/cache_memory.rs`).

use std::process::ExitCode;

use bridge::sdk::cache::Cache;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (load, path) = match args.as_slice() {
        [flag, path] if flag == "--load" => (true, path),
        [path] => (false, path),
        _ => {
            eprintln!("usage: cache_scrub [--load] CACHE");
            return ExitCode::from(2);
        }
    };
    if load {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("cache_scrub: {path}: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Touch it all, so that none of it can stay unallocated.
        let sum = bytes
            .iter()
            .step_by(4096)
            .fold(0u64, |s, &b| s + u64::from(b));
        println!("loaded={} sum={sum}", bytes.len());
        return ExitCode::SUCCESS;
    }
    let cache = match Cache::open(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cache_scrub: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut bytes = 0usize;
    for i in 0..cache.len() {
        match cache.frame(i) {
            Ok(f) => {
                bytes += (0..f.len())
                    .filter_map(|p| f.bytes(p))
                    .map(<[u8]>::len)
                    .sum::<usize>()
            }
            Err(e) => {
                eprintln!("cache_scrub: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "frames={} bytes={bytes} damaged={}",
        cache.len(),
        u8::from(cache.damage().is_some())
    );
    ExitCode::SUCCESS
}
