//! The `sysom-mcp` binary; all logic lives in the library (`app` wires it together).

fn main() -> std::process::ExitCode {
    sysom_mcp::app::main()
}
