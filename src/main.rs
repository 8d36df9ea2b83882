fn main() -> std::process::ExitCode {
    openlambda::cli::main()
}
