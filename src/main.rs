fn main() -> std::process::ExitCode {
    portknock::cli::run()
}
