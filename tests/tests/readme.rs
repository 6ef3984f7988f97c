//! The README's C example (`## Integrating from C`) is `tests/c/readme_example.c`, byte for byte,
//! and it builds and runs.

use hostloop_tests::{c_dir, repo_root, run_program, test_dir, Build, Lang};

/// The first ```c block of README.md, without its fences.
fn readme_c_block() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let start = readme.find("\n```c\n").expect("README.md has a ```c block") + "\n```c\n".len();
    let len = readme[start..]
        .find("\n```\n")
        .expect("the ```c block is closed")
        + 1;
    readme[start..start + len].to_owned()
}

#[test]
fn the_readme_c_example_is_tests_c_readme_example_c_byte_for_byte() {
    let file = std::fs::read_to_string(c_dir().join("readme_example.c")).unwrap();
    let block = readme_c_block();
    assert!(
        block == file,
        "README.md's ```c block differs from tests/c/readme_example.c; paste the file into the \
         README.\n--- README ---\n{block}\n--- file ---\n{file}"
    );
}

#[test]
fn the_readme_c_example_compiles_with_warnings_as_errors_and_runs() {
    let dir = test_dir!("readme-example");
    let exe = Build::new(Lang::C)
        .source(c_dir().join("readme_example.c"))
        .compile(dir.join("readme_example"));
    let run = run_program(&exe, &[], &[]);
    run.assert_success("readme_example.c");
    assert_eq!(
        run.stdout,
        "demo/answer: 42\njob: HL_STATUS_OK (0)\n",
        "the sink's message, then the job's done\n{}",
        run.describe()
    );
}
