//! The `pactfs` binary: everything lives in the library's `cli` module.

fn main() {
    std::process::exit(pactfs::cli::main());
}
