//! The reference host (work in progress).

fn main() {
    println!("hostloop-demo: not yet");
}
