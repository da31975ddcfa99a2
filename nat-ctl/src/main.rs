use clap::{CommandFactory as _, Parser as _};
use nat_ctl::{
    cli::{Cli, Command},
    commands,
    pins::Instance,
};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Everything passes env_logger's own filter; the global max level decides (`run` sets it
    // from --log-level / the config), unless RUST_LOG says otherwise.
    let from_env = std::env::var_os("RUST_LOG").is_some();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("trace"))
        .format_timestamp_secs()
        .init();
    if !from_env {
        log::set_max_level(log::LevelFilter::Info);
    }
    // clap prints its own usage errors and exits 2.
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        // A command whose reader went away (`nat-ctl status | head -2`) ends quietly, as
        // other Unix tools do, instead of panicking on its next print. The daemon keeps
        // SIGPIPE ignored: a closed log pipe must not kill the NAT's control plane.
        // SAFETY: restoring the default disposition of one signal, before any thread starts.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
    match dispatch(&cli) {
        Ok(code) => ExitCode::from(code),
        // A reader that went away (`nat-ctl man | head`) is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: &Cli) -> anyhow::Result<u8> {
    let instance = Instance::new(&cli.instance)?;
    match &cli.command {
        Command::Run(args) => commands::run::run(&instance, args).map(|()| 0),
        Command::Status(a) => commands::status::status(&instance, a.json),
        Command::Sessions(a) => commands::sessions::sessions(&instance, a).map(|()| 0),
        Command::Top(a) => commands::top::top(&instance, a).map(|()| 0),
        Command::Stats(a) => commands::stats::stats(&instance, a.json).map(|()| 0),
        Command::Passthrough(a) => {
            commands::passthrough::passthrough(&instance, a.action.as_ref(), a.json).map(|()| 0)
        }
        Command::Forward(a) => {
            commands::forward::forward(&instance, a.action.as_ref(), a.json).map(|()| 0)
        }
        Command::Flush(a) => commands::flush::flush(&instance, a.proto).map(|()| 0),
        Command::Reload => commands::reload::reload(&instance).map(|()| 0),
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "nat-ctl",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(0)
        }
        Command::Detach => commands::detach::detach(&instance).map(|()| 0),
    }
}

/// The whole cause chain on one line, with a hint when the cause is missing privileges.
fn describe(e: &anyhow::Error) -> String {
    let mut s = format!("{e:#}");
    let denied = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
            || c.to_string().contains("Operation not permitted")
    });
    if denied {
        s.push_str(" (nat-ctl needs root, or CAP_BPF + CAP_NET_ADMIN)");
    }
    s.replace('\n', " ")
}
