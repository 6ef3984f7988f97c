//! The header is the contract: each header compiles on its own, and the headers and the library
//! agree on symbols, signatures, constants and struct layouts.
//!
//! Signatures are checked from both sides: the table below is checked against the bridge's
//! exports by the Rust compiler (each `hl_*` function item is coerced to the table's Rust type)
//! and against the header by the C compiler (a `_Generic` on each function's address must match
//! the table's C type exactly, qualifiers included).

use std::collections::BTreeSet;
use std::ffi::{c_char, c_int, c_void};
use std::fmt::Write as _;
use std::process::Command;

use bridge::ffi::cache::*;
use bridge::ffi::common::*;
use bridge::ffi::event::*;
use bridge::ffi::farm::*;
use bridge::ffi::job::*;
use bridge::ffi::plugin::*;
use bridge::ffi::pool::*;
use bridge::ffi::runtime::*;
use bridge::ffi::sink::*;
use bridge::sdk;
use hostloop_tests::headers::Declarations;
use hostloop_tests::{c_headers, lib_dir, run, run_program, test_dir, Build, Lang, HANG_LIMIT};

// ---- 6. every header compiles alone ------------------------------------------------------------

#[test]
fn every_header_compiles_alone_and_twice_as_c11_and_cxx17_with_warnings_as_errors() {
    let dir = test_dir!("headers-standalone");
    let headers = c_headers();
    assert!(
        headers.len() >= 8,
        "expected hostloop.h, hostloop_plugin.h and the parts in include/hostloop/"
    );
    for (i, header) in headers.iter().enumerate() {
        let include = format!("#include \"{}\"\n", header.display());
        for (lang, ext) in [(Lang::C, "c"), (Lang::Cxx, "cpp")] {
            for (times, label) in [(1, "once"), (2, "twice")] {
                let src = dir.write(&format!("h{i}_{label}.{ext}"), &include.repeat(times));
                Build::new(lang)
                    .source(&src)
                    .object_only()
                    .compile(dir.join(format!("h{i}_{label}_{ext}.o")));
            }
        }
    }
}

// ---- 7a. symbols ---------------------------------------------------------------------------------

fn header_declarations() -> Declarations {
    Declarations::read(&c_headers())
}

/// `hl_*` symbols defined by a library file, per `nm`.
fn defined_hl_symbols(nm_args: &[&str], file: &str) -> BTreeSet<String> {
    let path = lib_dir().join(file);
    let mut cmd = Command::new("nm");
    cmd.args(nm_args).arg(&path);
    let out = run(&mut cmd, HANG_LIMIT);
    out.assert_success("nm");
    out.stdout
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace().rev();
            let name = parts.next()?;
            let kind = parts.next()?;
            (kind == "T" && name.starts_with("hl_")).then(|| name.to_owned())
        })
        .collect()
}

#[test]
fn the_shared_library_exports_exactly_the_functions_the_headers_declare() {
    let declared: BTreeSet<String> = header_declarations().function_names().into_iter().collect();
    assert!(declared.len() >= 25, "the header reader found {declared:?}");
    let exported = defined_hl_symbols(&["-D", "--defined-only"], "libhostloop.so");
    let missing: Vec<_> = declared.difference(&exported).collect();
    let undeclared: Vec<_> = exported.difference(&declared).collect();
    assert!(
        missing.is_empty() && undeclared.is_empty(),
        "declared but not exported: {missing:?}\nexported but not declared: {undeclared:?}"
    );
    // Nothing but the C API leaks out of the shared library.
    let mut cmd = Command::new("nm");
    cmd.args(["-D", "--defined-only"])
        .arg(lib_dir().join("libhostloop.so"));
    let all = run(&mut cmd, HANG_LIMIT);
    let others: Vec<&str> = all
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|name| !name.starts_with("hl_"))
        .collect();
    assert!(others.is_empty(), "non-API dynamic symbols: {others:?}");
}

#[test]
fn the_static_library_defines_every_function_the_headers_declare() {
    let declared: BTreeSet<String> = header_declarations().function_names().into_iter().collect();
    let defined = defined_hl_symbols(&["--defined-only"], "libhostloop.a");
    let missing: Vec<_> = declared.difference(&defined).collect();
    let undeclared: Vec<_> = defined.difference(&declared).collect();
    assert!(
        missing.is_empty() && undeclared.is_empty(),
        "declared but not in libhostloop.a: {missing:?}\nin libhostloop.a but not declared: \
         {undeclared:?}"
    );
}

// ---- 7b. signatures ------------------------------------------------------------------------------

/// `name: "C pointer type" => Rust pointer type;` — the Rust type is checked here against the
/// bridge's function item, the C type in C against the header's declaration.
macro_rules! signatures {
    ($($name:ident : $c:literal => $rust:ty;)*) => {
        fn signatures() -> Vec<(&'static str, &'static str)> {
            $(let _: $rust = $name;)*
            vec![$((stringify!($name), $c)),*]
        }
    };
}

signatures! {
    hl_last_error: "const char *(*)(void)" => extern "C" fn() -> *const c_char;
    hl_status_name: "const char *(*)(hl_status_t)" => extern "C" fn(hl_status_t) -> *const c_char;
    hl_version: "uint32_t (*)(void)" => extern "C" fn() -> u32;
    hl_abi_version: "uint32_t (*)(void)" => extern "C" fn() -> u32;
    hl_runtime_options_init: "hl_status_t (*)(hl_runtime_options_t *)"
        => unsafe extern "C" fn(*mut hl_runtime_options_t) -> hl_status_t;
    hl_runtime_new: "hl_status_t (*)(const hl_runtime_options_t *, hl_runtime_t **)"
        => unsafe extern "C" fn(*const hl_runtime_options_t, *mut *mut hl_runtime_t) -> hl_status_t;
    hl_runtime_free: "hl_status_t (*)(hl_runtime_t *)"
        => unsafe extern "C" fn(*mut hl_runtime_t) -> hl_status_t;
    hl_runtime_shutdown: "hl_status_t (*)(hl_runtime_t *, uint32_t, hl_shutdown_report_t *)"
        => unsafe extern "C" fn(*mut hl_runtime_t, u32, *mut hl_shutdown_report_t) -> hl_status_t;
    hl_runtime_wake_fd: "hl_status_t (*)(const hl_runtime_t *, int *)"
        => unsafe extern "C" fn(*const hl_runtime_t, *mut c_int) -> hl_status_t;
    hl_runtime_set_request_pump:
        "hl_status_t (*)(hl_runtime_t *, hl_request_pump_fn, void *, hl_finalizer_fn)"
        => unsafe extern "C" fn(*mut hl_runtime_t, hl_request_pump_fn, *mut c_void, hl_finalizer_fn)
            -> hl_status_t;
    hl_runtime_pump: "hl_status_t (*)(hl_runtime_t *, uint64_t, hl_pump_report_t *)"
        => unsafe extern "C" fn(*mut hl_runtime_t, u64, *mut hl_pump_report_t) -> hl_status_t;
    hl_runtime_run_until:
        "hl_status_t (*)(hl_runtime_t *, hl_until_fn, void *, uint64_t, uint32_t, hl_run_report_t *)"
        => unsafe extern "C" fn(*mut hl_runtime_t, hl_until_fn, *mut c_void, u64, u32, *mut hl_run_report_t)
            -> hl_status_t;
    hl_runtime_stats: "hl_status_t (*)(const hl_runtime_t *, hl_stats_t *)"
        => unsafe extern "C" fn(*const hl_runtime_t, *mut hl_stats_t) -> hl_status_t;
    hl_runtime_backlog: "hl_status_t (*)(const hl_runtime_t *, uint64_t *, uint64_t *, uint64_t *)"
        => unsafe extern "C" fn(*const hl_runtime_t, *mut u64, *mut u64, *mut u64) -> hl_status_t;
    hl_runtime_set_sink: "hl_status_t (*)(hl_runtime_t *, hl_sink_fn, void *, hl_finalizer_fn)"
        => unsafe extern "C" fn(*mut hl_runtime_t, hl_sink_fn, *mut c_void, hl_finalizer_fn)
            -> hl_status_t;
    hl_runtime_emit: "hl_status_t (*)(hl_runtime_t *, const char *, const void *, size_t)"
        => unsafe extern "C" fn(*mut hl_runtime_t, *const c_char, *const c_void, usize)
            -> hl_status_t;
    hl_runtime_emit_array:
        "hl_status_t (*)(hl_runtime_t *, const char *, const hl_array_view_t *)"
        => unsafe extern "C" fn(*mut hl_runtime_t, *const c_char, *const hl_array_view_t)
            -> hl_status_t;
    hl_message_lend: "hl_lease_t *(*)(const hl_message_t *)"
        => unsafe extern "C" fn(*const hl_message_t) -> *mut hl_lease_t;
    hl_lease_release: "void (*)(hl_lease_t *)" => unsafe extern "C" fn(*mut hl_lease_t);
    hl_runtime_post_event: "hl_status_t (*)(hl_runtime_t *, const hl_event_t *)"
        => unsafe extern "C" fn(*mut hl_runtime_t, *const hl_event_t) -> hl_status_t;
    hl_runtime_subscribe:
        "hl_status_t (*)(hl_runtime_t *, uint32_t, hl_event_fn, void *, hl_finalizer_fn, uint64_t *)"
        => unsafe extern "C" fn(*mut hl_runtime_t, u32, hl_event_fn, *mut c_void, hl_finalizer_fn,
            *mut u64) -> hl_status_t;
    hl_runtime_unsubscribe: "hl_status_t (*)(hl_runtime_t *, uint64_t)"
        => extern "C" fn(*mut hl_runtime_t, u64) -> hl_status_t;
    hl_job_spawn: "hl_status_t (*)(hl_runtime_t *, const hl_job_desc_t *, hl_job_t **)"
        => unsafe extern "C" fn(*mut hl_runtime_t, *const hl_job_desc_t, *mut *mut hl_job_t)
            -> hl_status_t;
    hl_job_cancel: "hl_status_t (*)(const hl_job_t *)"
        => extern "C" fn(*const hl_job_t) -> hl_status_t;
    hl_job_progress: "hl_status_t (*)(const hl_job_t *, float *)"
        => unsafe extern "C" fn(*const hl_job_t, *mut f32) -> hl_status_t;
    hl_job_status: "hl_status_t (*)(const hl_job_t *, hl_status_t *)"
        => unsafe extern "C" fn(*const hl_job_t, *mut hl_status_t) -> hl_status_t;
    hl_job_free: "hl_status_t (*)(hl_job_t *)" => extern "C" fn(*mut hl_job_t) -> hl_status_t;
    hl_job_ctx_check: "hl_status_t (*)(const hl_job_ctx_t *)"
        => unsafe extern "C" fn(*const hl_job_ctx_t) -> hl_status_t;
    hl_job_ctx_progress: "hl_status_t (*)(hl_job_ctx_t *, float)"
        => unsafe extern "C" fn(*mut hl_job_ctx_t, f32) -> hl_status_t;
    hl_plugin_load: "hl_status_t (*)(hl_runtime_t *, const char *, hl_plugin_t **)"
        => unsafe extern "C" fn(*mut hl_runtime_t, *const c_char, *mut *mut hl_plugin_t)
            -> hl_status_t;
    hl_plugin_unload: "hl_status_t (*)(hl_plugin_t *, uint32_t, hl_unload_report_t *)"
        => unsafe extern "C" fn(*mut hl_plugin_t, u32, *mut hl_unload_report_t) -> hl_status_t;
    hl_plugin_reload: "hl_status_t (*)(hl_plugin_t *, const char *, uint32_t)"
        => unsafe extern "C" fn(*mut hl_plugin_t, *const c_char, u32) -> hl_status_t;
    hl_plugin_info: "hl_status_t (*)(const hl_plugin_t *, hl_plugin_info_t *)"
        => unsafe extern "C" fn(*const hl_plugin_t, *mut hl_plugin_info_t) -> hl_status_t;
    hl_runtime_plugin_stats: "hl_status_t (*)(const hl_runtime_t *, hl_plugin_stats_t *)"
        => unsafe extern "C" fn(*const hl_runtime_t, *mut hl_plugin_stats_t) -> hl_status_t;
    hl_plugin_load_options_init: "hl_status_t (*)(hl_plugin_load_options_t *)"
        => unsafe extern "C" fn(*mut hl_plugin_load_options_t) -> hl_status_t;
    hl_plugin_load_ex:
        "hl_status_t (*)(hl_runtime_t *, const char *, const hl_plugin_load_options_t *, hl_plugin_t **)"
        => unsafe extern "C" fn(*mut hl_runtime_t, *const c_char, *const hl_plugin_load_options_t,
            *mut *mut hl_plugin_t) -> hl_status_t;
    hl_plugin_process: "hl_status_t (*)(const hl_plugin_t *, hl_plugin_process_t *)"
        => unsafe extern "C" fn(*const hl_plugin_t, *mut hl_plugin_process_t) -> hl_status_t;
    hl_blob_create: "hl_status_t (*)(hl_runtime_t *, const char *, const void *, size_t)"
        => unsafe extern "C" fn(*mut hl_runtime_t, *const c_char, *const c_void, usize)
            -> hl_status_t;
    hl_blob_create_from_file: "hl_status_t (*)(hl_runtime_t *, const char *, const char *)"
        => unsafe extern "C" fn(*mut hl_runtime_t, *const c_char, *const c_char) -> hl_status_t;
    hl_task_pool_new:
        "hl_status_t (*)(hl_runtime_t *, const char *, uint32_t, const hl_plugin_load_options_t *, hl_task_pool_t **)"
        => unsafe extern "C" fn(*mut hl_runtime_t, *const c_char, u32,
            *const hl_plugin_load_options_t, *mut *mut hl_task_pool_t) -> hl_status_t;
    hl_task_pool_free: "hl_status_t (*)(hl_task_pool_t *, uint32_t)"
        => extern "C" fn(*mut hl_task_pool_t, u32) -> hl_status_t;
    hl_task_submit:
        "hl_status_t (*)(hl_task_pool_t *, const char *, const void *, size_t, hl_task_done_fn, void *, hl_finalizer_fn, hl_task_t **)"
        => unsafe extern "C" fn(*mut hl_task_pool_t, *const c_char, *const c_void, usize,
            hl_task_done_fn, *mut c_void, hl_finalizer_fn, *mut *mut hl_task_t) -> hl_status_t;
    hl_task_cancel: "hl_status_t (*)(const hl_task_t *)"
        => extern "C" fn(*const hl_task_t) -> hl_status_t;
    hl_task_progress: "hl_status_t (*)(const hl_task_t *, float *)"
        => unsafe extern "C" fn(*const hl_task_t, *mut f32) -> hl_status_t;
    hl_task_free: "hl_status_t (*)(hl_task_t *)"
        => extern "C" fn(*mut hl_task_t) -> hl_status_t;
    hl_cache_open: "hl_status_t (*)(const char *, hl_cache_t **)"
        => unsafe extern "C" fn(*const c_char, *mut *mut hl_cache_t) -> hl_status_t;
    hl_cache_free: "hl_status_t (*)(hl_cache_t *)"
        => extern "C" fn(*mut hl_cache_t) -> hl_status_t;
    hl_cache_frame_count: "hl_status_t (*)(const hl_cache_t *, uint64_t *)"
        => unsafe extern "C" fn(*const hl_cache_t, *mut u64) -> hl_status_t;
    hl_cache_damage: "hl_status_t (*)(const hl_cache_t *, hl_cache_damage_t *)"
        => unsafe extern "C" fn(*const hl_cache_t, *mut hl_cache_damage_t) -> hl_status_t;
    hl_cache_verify: "hl_status_t (*)(hl_cache_t *, uint64_t *)"
        => unsafe extern "C" fn(*mut hl_cache_t, *mut u64) -> hl_status_t;
    hl_cache_frame:
        "hl_status_t (*)(const hl_cache_t *, uint64_t, uint32_t, hl_cache_frame_t *)"
        => unsafe extern "C" fn(*const hl_cache_t, u64, u32, *mut hl_cache_frame_t) -> hl_status_t;
    hl_cache_payload:
        "hl_status_t (*)(const hl_cache_t *, uint64_t, uint32_t, hl_cache_payload_t *)"
        => unsafe extern "C" fn(*const hl_cache_t, u64, u32, *mut hl_cache_payload_t)
            -> hl_status_t;
    hl_farm_spec_init: "hl_status_t (*)(hl_farm_spec_t *)"
        => unsafe extern "C" fn(*mut hl_farm_spec_t) -> hl_status_t;
    hl_farm_run:
        "hl_status_t (*)(hl_runtime_t *, const hl_farm_spec_t *, hl_farm_progress_fn, hl_farm_done_fn, void *, hl_finalizer_fn, hl_farm_run_t **)"
        => unsafe extern "C" fn(*mut hl_runtime_t, *const hl_farm_spec_t, hl_farm_progress_fn,
            hl_farm_done_fn, *mut c_void, hl_finalizer_fn, *mut *mut hl_farm_run_t) -> hl_status_t;
    hl_farm_run_cancel: "hl_status_t (*)(const hl_farm_run_t *)"
        => extern "C" fn(*const hl_farm_run_t) -> hl_status_t;
    hl_farm_run_progress: "hl_status_t (*)(const hl_farm_run_t *, float *)"
        => unsafe extern "C" fn(*const hl_farm_run_t, *mut f32) -> hl_status_t;
    hl_farm_run_status: "hl_status_t (*)(const hl_farm_run_t *, hl_status_t *)"
        => unsafe extern "C" fn(*const hl_farm_run_t, *mut hl_status_t) -> hl_status_t;
    hl_farm_run_free: "hl_status_t (*)(hl_farm_run_t *)"
        => extern "C" fn(*mut hl_farm_run_t) -> hl_status_t;
}

/// The callback typedefs: `name: "C type" => Rust type;`, checked the same way.
macro_rules! callbacks {
    ($($name:ident : $c:literal => $rust:ty;)*) => {
        fn callbacks() -> Vec<(&'static str, &'static str)> {
            $({
                let bridge_type: $name = None;
                let _: $rust = bridge_type;
            })*
            vec![$((stringify!($name), $c)),*]
        }
    };
}

callbacks! {
    hl_finalizer_fn: "void (*)(void *)"
        => Option<unsafe extern "C" fn(*mut c_void)>;
    hl_request_pump_fn: "void (*)(void *)"
        => Option<unsafe extern "C" fn(*mut c_void)>;
    hl_until_fn: "int32_t (*)(void *)"
        => Option<unsafe extern "C" fn(*mut c_void) -> i32>;
    hl_sink_fn: "void (*)(void *, const hl_message_t *)"
        => Option<unsafe extern "C" fn(*mut c_void, *const hl_message_t)>;
    hl_event_fn: "void (*)(void *, const hl_event_t *)"
        => Option<unsafe extern "C" fn(*mut c_void, *const hl_event_t)>;
    hl_job_run_fn: "int32_t (*)(void *, hl_job_ctx_t *)"
        => Option<unsafe extern "C" fn(*mut c_void, *mut hl_job_ctx_t) -> i32>;
    hl_job_done_fn: "void (*)(void *, hl_status_t, int32_t)"
        => Option<unsafe extern "C" fn(*mut c_void, hl_status_t, i32)>;
    hl_job_progress_fn: "void (*)(void *, float)"
        => Option<unsafe extern "C" fn(*mut c_void, f32)>;
    hl_task_done_fn: "void (*)(void *, hl_status_t, const uint8_t *, size_t)"
        => Option<unsafe extern "C" fn(*mut c_void, hl_status_t, *const u8, usize)>;
    hl_task_fn: "void (*)(void *)" => Option<unsafe extern "C" fn(*mut c_void)>;
    hl_main_task_fn: "uint32_t (*)(void *, uint64_t)"
        => Option<unsafe extern "C" fn(*mut c_void, u64) -> u32>;
    hl_drop_fn: "void (*)(void *)" => Option<unsafe extern "C" fn(*mut c_void)>;
    hl_write_fn: "void (*)(void *, const uint8_t *, size_t)"
        => Option<unsafe extern "C" fn(*mut c_void, *const u8, usize)>;
    hl_plugin_entry_fn: "const hl_plugin_descriptor_t *(*)(void)"
        => Option<unsafe extern "C" fn() -> *const hl_plugin_descriptor_t>;
    hl_farm_progress_fn: "void (*)(void *, float, const char *)"
        => Option<unsafe extern "C" fn(*mut c_void, f32, *const c_char)>;
    hl_farm_done_fn: "void (*)(void *, hl_status_t, const char *)"
        => Option<unsafe extern "C" fn(*mut c_void, hl_status_t, *const c_char)>;
}

/// `R (*)(P)` with a name: `R (*name)(P)`.
fn declarator(c_type: &str, name: &str) -> String {
    c_type.replacen("(*)", &format!("(*{name})"), 1)
}

#[test]
fn every_function_and_callback_has_the_same_signature_in_the_header_and_the_library() {
    let sigs = signatures();
    let declared: BTreeSet<String> = header_declarations().function_names().into_iter().collect();
    let checked: BTreeSet<String> = sigs.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        declared, checked,
        "the signature table must list exactly the header's functions"
    );
    let cbs = callbacks();
    let declared_cbs: BTreeSet<String> = header_declarations().callbacks.into_iter().collect();
    let checked_cbs: BTreeSet<String> = cbs.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        declared_cbs, checked_cbs,
        "the callback table must list exactly the header's callback typedefs"
    );

    // C: exact types via _Generic, typed pointers, and a call of every function (with zeros:
    // NULL for pointers, so every status-returning function must say NULL_ARG).
    let mut c = String::from(
        "#include \"hostloop.h\"\n#include \"hostloop_plugin.h\"\n#include <stdio.h>\n\n\
         _Static_assert(sizeof(hl_status_t) == 4, \"hl_status_t is 32 bits\");\n",
    );
    for (name, ty) in &sigs {
        let _ = writeln!(
            c,
            "_Static_assert(_Generic(&{name}, {ty}: 1, default: 0), \"{name} is {ty}\");"
        );
    }
    for (name, ty) in &cbs {
        let _ = writeln!(
            c,
            "_Static_assert(_Generic(({name})0, {ty}: 1, default: 0), \"{name} is {ty}\");"
        );
    }
    c.push_str("\nint main(void) {\n");
    let decls = header_declarations();
    for (name, ty) in &sigs {
        let _ = writeln!(c, "    {} = {name};", declarator(ty, &format!("p_{name}")));
        let f = decls.functions.iter().find(|f| f.name == *name).unwrap();
        let args = if f.params == "void" {
            String::new()
        } else {
            vec!["0"; f.params.split(',').count()].join(", ")
        };
        let call = format!("p_{name}({args})");
        match f.return_type.as_str() {
            "hl_status_t" => {
                let _ = writeln!(c, "    printf(\"{name}=%u\\n\", (unsigned){call});");
            }
            "const char *" => {
                let _ = writeln!(c, "    printf(\"{name}=%s\\n\", {call});");
            }
            "void" => {
                let _ = writeln!(c, "    {call};\n    printf(\"{name}=void\\n\");");
            }
            _ => {
                let _ = writeln!(c, "    printf(\"{name}=%lu\\n\", (unsigned long){call});");
            }
        }
    }
    c.push_str("    return 0;\n}\n");

    let dir = test_dir!("headers-signatures");
    let src = dir.write("signatures.c", &c);
    let exe = Build::new(Lang::C)
        .source(&src)
        .compile(dir.join("signatures"));
    let out = run_program(&exe, &[], &[]);
    out.assert_success("signatures.c");
    for f in &decls.functions {
        let value = out
            .value(&f.name)
            .unwrap_or_else(|| panic!("{} was not called:\n{}", f.name, out.describe()));
        if f.return_type == "hl_status_t" {
            assert_eq!(
                value,
                HL_STATUS_NULL_ARG.to_string(),
                "{}(0, ...) must be NULL_ARG\n{}",
                f.name,
                out.describe()
            );
        }
    }
    assert_eq!(out.value("hl_status_name"), Some("HL_STATUS_OK"));
    assert_eq!(out.value("hl_version"), Some(&*hl_version().to_string()));
    assert_eq!(
        out.value("hl_abi_version"),
        Some(&*HL_ABI_VERSION.to_string())
    );
}

// ---- 7c. constants -------------------------------------------------------------------------------

/// Every `HL_*` constant of the headers with the value the library uses for it.
fn library_constants() -> Vec<(&'static str, i64)> {
    use sdk::{ElemType, EventKind};
    let version = env!("CARGO_PKG_VERSION");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
    let (major, minor, patch) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    assert_eq!(
        (HL_VERSION_MAJOR, HL_VERSION_MINOR, HL_VERSION_PATCH),
        (major, minor, patch),
        "the bridge's version constants follow the workspace version {version}"
    );
    let v = |x: u32| i64::from(x);
    vec![
        ("HL_VERSION_MAJOR", v(HL_VERSION_MAJOR)),
        ("HL_VERSION_MINOR", v(HL_VERSION_MINOR)),
        ("HL_VERSION_PATCH", v(HL_VERSION_PATCH)),
        ("HL_VERSION", v(hl_version())),
        ("HL_ABI_VERSION", v(HL_ABI_VERSION)),
        ("HL_STATUS_OK", v(HL_STATUS_OK)),
        ("HL_STATUS_NULL_ARG", v(HL_STATUS_NULL_ARG)),
        ("HL_STATUS_INVALID_ARG", v(HL_STATUS_INVALID_ARG)),
        ("HL_STATUS_WRONG_THREAD", v(HL_STATUS_WRONG_THREAD)),
        ("HL_STATUS_REENTRANT", v(HL_STATUS_REENTRANT)),
        ("HL_STATUS_HOST_BUSY", v(HL_STATUS_HOST_BUSY)),
        ("HL_STATUS_SHUT_DOWN", v(HL_STATUS_SHUT_DOWN)),
        ("HL_STATUS_VERSION_MISMATCH", v(HL_STATUS_VERSION_MISMATCH)),
        ("HL_STATUS_PANIC", v(HL_STATUS_PANIC)),
        ("HL_STATUS_INVALID_HANDLE", v(HL_STATUS_INVALID_HANDLE)),
        ("HL_STATUS_CANCELLED", v(HL_STATUS_CANCELLED)),
        ("HL_STATUS_TIMEOUT", v(HL_STATUS_TIMEOUT)),
        ("HL_STATUS_FAILED", v(HL_STATUS_FAILED)),
        ("HL_STATUS_PENDING", v(HL_STATUS_PENDING)),
        ("HL_STATUS_INVALID_UTF8", v(HL_STATUS_INVALID_UTF8)),
        ("HL_STATUS_OS", v(HL_STATUS_OS)),
        ("HL_STATUS_FILE_NOT_FOUND", v(HL_STATUS_FILE_NOT_FOUND)),
        ("HL_STATUS_NOT_A_LIBRARY", v(HL_STATUS_NOT_A_LIBRARY)),
        ("HL_STATUS_NO_ENTRY_SYMBOL", v(HL_STATUS_NO_ENTRY_SYMBOL)),
        ("HL_STATUS_BAD_DESCRIPTOR", v(HL_STATUS_BAD_DESCRIPTOR)),
        ("HL_STATUS_ALREADY_LOADED", v(HL_STATUS_ALREADY_LOADED)),
        ("HL_STATUS_WORKER", v(HL_STATUS_WORKER)),
        ("HL_STATUS_OUT_OF_MEMORY", v(HL_STATUS_OUT_OF_MEMORY)),
        ("HL_STATUS_BACKLOG", v(HL_STATUS_BACKLOG)),
        ("HL_ISOLATION_IN_PROCESS", v(HL_ISOLATION_IN_PROCESS)),
        ("HL_ISOLATION_OWN_PROCESS", v(HL_ISOLATION_OWN_PROCESS)),
        (
            "HL_ISOLATION_SHARED_PROCESS",
            v(HL_ISOLATION_SHARED_PROCESS),
        ),
        ("HL_PLUGIN_ABI_VERSION", v(HL_PLUGIN_ABI_VERSION)),
        ("HL_PLUGIN_LANE_HIGH", v(HL_PLUGIN_LANE_HIGH)),
        ("HL_PLUGIN_LANE_NORMAL", v(HL_PLUGIN_LANE_NORMAL)),
        ("HL_PLUGIN_LANE_LOW", v(HL_PLUGIN_LANE_LOW)),
        ("HL_PLUGIN_LANE_BACKGROUND", v(HL_PLUGIN_LANE_BACKGROUND)),
        ("HL_PLUGIN_LANE_IO", v(HL_PLUGIN_LANE_IO)),
        ("HL_STEP_DONE", v(HL_STEP_DONE)),
        ("HL_STEP_CONTINUE", v(HL_STEP_CONTINUE)),
        (
            "HL_PLUGIN_FLAG_RETAIN_IMAGE",
            v(HL_PLUGIN_FLAG_RETAIN_IMAGE),
        ),
        // The bridge hands the sdk's discriminants to C (`a.elem() as u32`, `e.kind() as u32`).
        ("HL_ELEM_U8", v(ElemType::U8 as u32)),
        ("HL_ELEM_I32", v(ElemType::I32 as u32)),
        ("HL_ELEM_U32", v(ElemType::U32 as u32)),
        ("HL_ELEM_I64", v(ElemType::I64 as u32)),
        ("HL_ELEM_U64", v(ElemType::U64 as u32)),
        ("HL_ELEM_F32", v(ElemType::F32 as u32)),
        ("HL_ELEM_F64", v(ElemType::F64 as u32)),
        ("HL_PAYLOAD_BYTES", v(HL_PAYLOAD_BYTES)),
        ("HL_PAYLOAD_ARRAY", v(HL_PAYLOAD_ARRAY)),
        ("HL_EVENT_FRAME_CHANGED", v(EventKind::FrameChanged as u32)),
        (
            "HL_EVENT_SELECTION_CHANGED",
            v(EventKind::SelectionChanged as u32),
        ),
        ("HL_EVENT_SCENE_OPENED", v(EventKind::SceneOpened as u32)),
        ("HL_EVENT_SCENE_SAVED", v(EventKind::SceneSaved as u32)),
        (
            "HL_EVENT_PLAYBACK_STARTED",
            v(EventKind::PlaybackStarted as u32),
        ),
        (
            "HL_EVENT_PLAYBACK_STOPPED",
            v(EventKind::PlaybackStopped as u32),
        ),
        (
            "HL_EVENT_SHUTDOWN_REQUESTED",
            v(EventKind::ShutdownRequested as u32),
        ),
        ("HL_EVENT_CUSTOM", v(EventKind::Custom as u32)),
        // The bridge has no Rust constants for these: they are the numbers its `match` in
        // bridge/src/ffi/job.rs accepts (bad_input's lanes_and_priorities case checks that the
        // IO lane really is the IO lane).
        ("HL_PRIORITY_HIGH", 0),
        ("HL_PRIORITY_NORMAL", 1),
        ("HL_PRIORITY_LOW", 2),
        ("HL_PRIORITY_BACKGROUND", 3),
        ("HL_LANE_CPU", 0),
        ("HL_LANE_IO", 1),
        ("HL_CACHE_DAMAGE_NONE", v(HL_CACHE_DAMAGE_NONE)),
        ("HL_CACHE_DAMAGE_TRUNCATED", v(HL_CACHE_DAMAGE_TRUNCATED)),
        ("HL_CACHE_DAMAGE_BAD_HEADER", v(HL_CACHE_DAMAGE_BAD_HEADER)),
        ("HL_CACHE_DAMAGE_BAD_DATA", v(HL_CACHE_DAMAGE_BAD_DATA)),
        ("HL_FARM_SLURM", v(HL_FARM_SLURM)),
    ]
}

#[test]
fn every_public_constant_evaluates_in_c_to_the_value_the_library_uses() {
    let declared = header_declarations().constants;
    let expected = library_constants();
    let declared_set: BTreeSet<&str> = declared.iter().map(String::as_str).collect();
    let expected_set: BTreeSet<&str> = expected.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        declared_set, expected_set,
        "the headers' HL_* constants and the test's table differ"
    );
    assert_eq!(
        declared.len(),
        declared_set.len(),
        "a constant is defined twice"
    );

    let mut c = String::from("#include \"hostloop.h\"\n#include \"hostloop_plugin.h\"\n#include <stdio.h>\n\nint main(void) {\n");
    for name in &declared {
        let _ = writeln!(c, "    printf(\"{name}=%lld\\n\", (long long)({name}));");
    }
    // The one string constant: the symbol the loader looks up.
    c.push_str("    printf(\"HL_PLUGIN_ENTRY_SYMBOL=%s\\n\", HL_PLUGIN_ENTRY_SYMBOL);\n");
    c.push_str("    return 0;\n}\n");
    let dir = test_dir!("headers-constants");
    let src = dir.write("constants.c", &c);
    let exe = Build::new(Lang::C)
        .source(&src)
        .compile(dir.join("constants"));
    let out = run_program(&exe, &[], &[]);
    out.assert_success("constants.c");
    assert_eq!(
        out.value("HL_PLUGIN_ENTRY_SYMBOL"),
        sdk::abi::HL_PLUGIN_ENTRY_SYMBOL.to_str().ok(),
        "the entry symbol's name in C vs the loader"
    );
    for (name, value) in expected {
        assert_eq!(
            out.value(name),
            Some(&*value.to_string()),
            "{name} in C vs the library\n{}",
            out.describe()
        );
    }
}

// ---- 7c. struct layouts --------------------------------------------------------------------------

#[derive(Debug)]
struct Layout {
    name: &'static str,
    size: usize,
    align: usize,
    /// (field, offset, size)
    fields: Vec<(&'static str, usize, usize)>,
}

fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    std::mem::size_of::<F>()
}

macro_rules! layouts {
    ($($ty:ident { $($field:ident),* $(,)? })*) => {
        fn layouts() -> Vec<Layout> {
            vec![$(Layout {
                name: stringify!($ty),
                size: std::mem::size_of::<$ty>(),
                align: std::mem::align_of::<$ty>(),
                fields: vec![$((
                    stringify!($field),
                    std::mem::offset_of!($ty, $field),
                    field_size(|s: &$ty| &s.$field),
                )),*],
            }),*]
        }
    };
}

layouts! {
    hl_runtime_options_t {
        struct_size, abi_version, workers, io_threads, default_budget_us, call_timeout_ms,
        free_deadline_ms, main_backlog_limit, stack_size, thread_name,
    }
    hl_shutdown_report_t {
        struct_size, threads_joined, cancelled_queued, cancelled_running, stragglers,
        main_items_dropped, elapsed_us,
    }
    hl_pump_report_t { struct_size, reserved, ran, remaining, elapsed_us, overrun_us }
    hl_run_report_t { struct_size, reserved, pumps, ran, elapsed_us }
    hl_stats_t {
        struct_size, workers, jobs_spawned, jobs_finished, jobs_failed, jobs_cancelled,
        jobs_panicked, queued_cpu, queued_io, queued_main, pumps, pump_p50_us, pump_p99_us,
        budget_overruns, main_items_run, main_items_panicked, doorbell_rings, sink_messages,
        sink_dropped, events_dropped, workers_busy_us, sleeping_workers,
    }
    hl_array_view_t { elem_type, components, count, stride, data, byte_len }
    hl_message_t {
        struct_size, payload_kind, topic, topic_len, bytes, bytes_len, array, lender,
    }
    hl_lender_t { data, retain, release }
    hl_event_t { struct_size, kind, frame, path, topic, bytes, bytes_len, coalesce, reserved }
    hl_job_desc_t {
        struct_size, priority, lane, reserved, name, run, done, user_data, finalize, progress,
    }
    hl_plugin_info_t { struct_size, generation, flags, reserved, name, version, path, pending }
    hl_unload_report_t { struct_size, retired, dropped, stragglers, elapsed_us }
    hl_plugin_load_options_t {
        struct_size, isolation, group, worker_program, heartbeat_ms, checkpoint_interval_ms,
        restart_limit, restart_backoff_ms, worker_threads, echo_stderr, timeout_ms, reserved,
    }
    hl_plugin_process_t {
        struct_size, isolation, pid, restarts, crashes, down, checkpoints, last_crash,
        down_reason,
    }
    hl_plugin_stats_t {
        struct_size, reserved, loaded, loads, unloads, reloads, failed_reloads, images_retired,
        images_closed, stragglers, images_retained,
    }
    hl_plugin_services_t {
        struct_size, abi_version, host, spawn, post_main, emit, post_event, is_main_thread,
        is_worker_thread, workers, is_closing, blob,
    }
    hl_plugin_descriptor_t {
        struct_size, abi_version, flags, reserved, name, version, load, unload, event,
        save_state, restore_state, checkpoint_state, run_task,
    }
    hl_task_ctx_t { struct_size, reserved, ctx, cancelled, progress }
    hl_cache_damage_t { struct_size, damaged, offset, file_len, reason, payload }
    hl_cache_frame_t { struct_size, payload_count, step, topic, topic_len }
    hl_cache_payload_t { struct_size, elem, components, reserved, count, data, len }
    hl_farm_spec_t {
        struct_size, backend, worker, plugin, dir, configure, restore, restore_step, steps,
        segments, cpus, save_every, cache, reserved, slurm_bin_dir, slurm_partition,
    }
}

#[test]
fn every_struct_has_the_same_fields_size_alignment_and_offsets_in_c_and_in_the_library() {
    let layouts = layouts();
    let declared = header_declarations().structs;
    let declared_names: BTreeSet<&str> = declared.iter().map(|s| s.name.as_str()).collect();
    let mirrored: BTreeSet<&str> = layouts.iter().map(|l| l.name).collect();
    assert_eq!(
        declared_names, mirrored,
        "every header struct has a #[repr(C)] mirror in the test"
    );
    for layout in &layouts {
        let header = declared.iter().find(|s| s.name == layout.name).unwrap();
        let rust_fields: Vec<&str> = layout.fields.iter().map(|f| f.0).collect();
        assert_eq!(
            header.fields, rust_fields,
            "{}: the header's fields (in order) vs the Rust mirror's",
            layout.name
        );
    }

    let mut c = String::from(
        "#include \"hostloop.h\"\n#include \"hostloop_plugin.h\"\n#include <stddef.h>\n#include <stdio.h>\n\nint main(void) {\n",
    );
    for l in &layouts {
        let n = l.name;
        let _ = writeln!(
            c,
            "    printf(\"{n}.sizeof=%zu {n}.alignof=%zu\\n\", sizeof({n}), _Alignof({n}));"
        );
        for (f, _, _) in &l.fields {
            let _ = writeln!(
                c,
                "    printf(\"{n}.{f}.offset=%zu {n}.{f}.size=%zu\\n\", offsetof({n}, {f}), \
                 sizeof((({n} *)0)->{f}));"
            );
        }
    }
    c.push_str("    return 0;\n}\n");
    let dir = test_dir!("headers-layouts");
    let src = dir.write("layouts.c", &c);
    let exe = Build::new(Lang::C)
        .source(&src)
        .compile(dir.join("layouts"));
    let out = run_program(&exe, &[], &[]);
    out.assert_success("layouts.c");
    let mut mismatches = Vec::new();
    let mut check = |key: String, rust: usize| {
        let c = out.number(&key) as usize;
        if c != rust {
            mismatches.push(format!("{key}: C {c}, Rust {rust}"));
        }
    };
    for l in &layouts {
        check(format!("{}.sizeof", l.name), l.size);
        check(format!("{}.alignof", l.name), l.align);
        for (f, offset, size) in &l.fields {
            check(format!("{}.{f}.offset", l.name), *offset);
            check(format!("{}.{f}.size", l.name), *size);
        }
    }
    assert!(
        mismatches.is_empty(),
        "layout mismatches:\n{}",
        mismatches.join("\n")
    );
}
