//! `ffrtmp`: the client CLI (docs/CLI.md). All of it is the `ffrtmp-cli`
//! library, which links none of the server.

#![warn(unreachable_pub, unsafe_op_in_unsafe_fn)]
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

fn main() -> std::process::ExitCode {
    ffrtmp_cli::main()
}
