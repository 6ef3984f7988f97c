//! Builds the C++ kernel and its cxx bridge with the system C++ compiler.
fn main() {
    cxx_build::bridge("src/cpp.rs")
        .file("cpp/kernel.cc")
        .std("c++17")
        // Same float results as the Rust kernel: no fused multiply-add contraction.
        .flag_if_supported("-ffp-contract=off")
        .flag_if_supported("-Wall")
        .flag_if_supported("-Wextra")
        .compile("hostloop-particles-kernel");
    println!("cargo:rerun-if-changed=src/cpp.rs");
    println!("cargo:rerun-if-changed=cpp/kernel.cc");
    println!("cargo:rerun-if-changed=cpp/kernel.h");
}
