//! `ffrtmp`: the client CLI (docs/CLI.md). All of it is the `ffrtmp-cli`
//! library, which links none of the server.

fn main() -> std::process::ExitCode {
    ffrtmp_cli::main()
}
