//! Gives `libhostloop.so` a SONAME, `libhostloop.so.<major>`, as distributions expect (so
//! `scripts/install` can lay out `libhostloop.so.0.1.0`, `.so.0` and `.so` the usual way), and
//! puts a `libhostloop.so.<major>` link beside the built library: a program linked against
//! `target/<profile>/libhostloop.so` (the tests, the example hosts) records the SONAME and
//! looks it up by that name at run time.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version");
    let soname = format!("libhostloop.so.{major}");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    link_beside_the_library(&soname);
}

/// `OUT_DIR` is `<target>/<profile>/build/<package>-<hash>/out`; the library lands in
/// `<target>/<profile>`. The link may dangle until the library is linked.
#[cfg(unix)]
fn link_beside_the_library(soname: &str) {
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return;
    };
    let out = std::path::PathBuf::from(out);
    let Some(profile_dir) = out.ancestors().nth(3) else {
        return;
    };
    let link = profile_dir.join(soname);
    if std::fs::symlink_metadata(&link).is_err() {
        if let Err(e) = std::os::unix::fs::symlink("libhostloop.so", &link) {
            println!(
                "cargo:warning=could not link {} to libhostloop.so: {e}",
                link.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn link_beside_the_library(_soname: &str) {}
