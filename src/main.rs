//! The `nurture` binary: everything lives in the library; see `cli`.

fn main() -> std::process::ExitCode {
    nurture::cli::main()
}
