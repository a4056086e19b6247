//! The `abacus` binary: reads settings, wires the application, serves until SIGTERM/SIGINT,
//! then drains (readiness 503, streams closed with `retry:`, in-flight work finished within
//! the grace period) and exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use abacus::app::App;

/// mimalloc: the request path allocates many small, short-lived objects (JSON values, headers);
/// glibc malloc spent about a fifth of the CPU on them in `make bench` profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use abacus::config::startup::Startup;

/// What the command line asks for.
enum Command {
    /// Serve, with an optional `--config FILE`.
    Serve(Option<PathBuf>),
    /// Print the AbacusConfig JSON Schema (`--markdown`: the README's settings table).
    Schema { markdown: bool },
    /// Probe the local server's readiness (exit 0 when ready, 1 otherwise).
    Healthcheck,
    /// Readiness plus a real MCP session against a URL (the Helm chart's test Pod).
    Check(String),
}

const USAGE: &str = "usage: abacus [--config FILE]\n       abacus --version\n       abacus schema [--markdown]\n       abacus healthcheck    (GET /health/ready on 127.0.0.1:$PORT; exit 0 when ready)\n       abacus check URL      (ready, then an MCP session with a calculation, e.g. http://abacus:1453)\n\nSettings come from defaults, then an AbacusConfig document (the ConfigMap named by\nCONFIG_CONFIGMAP, or FILE), then the environment; see README.md.";

fn command() -> Result<Command, String> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("schema") {
        args.next();
        let markdown = match args.next().as_deref() {
            None => false,
            Some("--markdown") => true,
            Some(other) => return Err(format!("unknown argument {other:?} (try --help)")),
        };
        return Ok(Command::Schema { markdown });
    }
    if args.peek().map(String::as_str) == Some("healthcheck") {
        return Ok(Command::Healthcheck);
    }
    if args.peek().map(String::as_str) == Some("check") {
        args.next();
        let url = args
            .next()
            .ok_or("check needs a URL, e.g. http://abacus:1453")?;
        return Ok(Command::Check(url));
    }
    let mut path = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => {
                path = Some(args.next().ok_or("--config needs a file path")?.into())
            }
            s if s.starts_with("--config=") => path = Some(s["--config=".len()..].into()),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--version" | "-V" => {
                println!("abacus {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(Command::Serve(path))
}

#[tokio::main]
async fn main() -> ExitCode {
    let path = match command() {
        Ok(Command::Serve(path)) => path,
        Ok(Command::Schema { markdown }) => {
            if markdown {
                print!("{}", abacus::config::document::markdown_table());
            } else {
                print!("{}", abacus::config::document::schema_text());
            }
            return ExitCode::SUCCESS;
        }
        Ok(Command::Healthcheck) => return healthcheck(),
        Ok(Command::Check(url)) => return check(&url),
        Err(e) => {
            eprintln!("abacus: {e}");
            return ExitCode::from(2);
        }
    };
    let startup = match Startup::load(path).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("abacus: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = startup.loaded.settings.clone();
    let (traces, trace_error) = match abacus::telemetry::otel::Tracing::start(&settings.telemetry) {
        Ok(t) => (t, None),
        Err(e) => (None, Some(e)),
    };
    let logs =
        abacus::telemetry::init_logging(&settings.log_level, settings.log_format, traces.as_ref());
    if let Some(e) = trace_error {
        tracing::warn!("traces are off: the OTLP exporter could not be built: {e}");
    }
    for warning in &startup.warnings {
        tracing::warn!("{warning}");
    }
    let app = match App::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            // Start-up errors go to stderr like configuration errors, not only to the log.
            eprintln!("abacus: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(traces) = &traces {
        app.metrics.watch_spans(traces.counters.clone());
    }
    abacus::app::apply_live_settings(app.clone(), logs);
    let reloader = abacus::app::reloader(&app, startup.env.clone());
    startup.watch(reloader);
    let addr = SocketAddr::new(
        app.settings.host.parse().expect("validated"),
        app.settings.port,
    );
    let stop = shutdown_signal();
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, "cannot listen: {e}");
            eprintln!("abacus: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(address = %local, storage = app.store.mode(), "abacus listening");
    println!("abacus listening on {local}");
    let router = abacus::http::router(app.clone());
    let lifecycle = abacus::http::server::Lifecycle::default();
    let server = tokio::spawn(abacus::http::server::serve(
        listener,
        router,
        app.clone(),
        abacus::http::server::ConnectionLimits::from_settings(&app.settings),
        lifecycle.clone(),
    ));
    stop.await;
    drain(&app, &lifecycle, server).await;
    if let Some(traces) = traces {
        // The spans of the last requests, exported before the process exits.
        traces.shutdown(Duration::from_secs(5)).await;
    }
    tracing::info!("shutdown complete");
    ExitCode::SUCCESS
}

/// The drain after SIGTERM/SIGINT, bounded by the grace period (plus 5 s to close connections):
/// readiness fails and streams close with a `retry:` hint at once; no new connection is taken;
/// the connections clients hold are still served, each answer with `Connection: close`, while
/// in-flight work finishes (at least [`LINGER`], so a client sending right now is answered
/// rather than cut); then idle connections are closed and the store is shut down.
async fn drain(
    app: &abacus::app::AppState,
    lifecycle: &abacus::http::server::Lifecycle,
    server: tokio::task::JoinHandle<()>,
) {
    /// How long kept-alive connections stay open after SIGTERM even with nothing in flight.
    const LINGER: Duration = Duration::from_secs(1);
    tracing::info!("shutdown: readiness failing, closing streams, finishing in-flight work");
    let started = tokio::time::Instant::now();
    app.drain.begin();
    lifecycle.stop_accepting.cancel();
    let grace = Duration::from_millis(app.live.current().shutdown_grace_ms);
    // Tasks get the grace period minus a margin to record the ending of those that are left.
    let tasks = {
        let tasks = app.dispatcher.tasks.clone();
        let budget = grace.saturating_sub(Duration::from_millis(500));
        tokio::spawn(async move { tasks.drain(budget).await })
    };
    let finished = app.drain.wait(grace).await;
    tokio::time::sleep_until(started + LINGER.min(grace)).await;
    lifecycle.close_connections.cancel();
    if tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .is_err()
    {
        tracing::warn!("shutdown: connections still open 5 s after the drain; closing them");
    }
    // Work that arrived on a kept-alive connection during the linger, within what is left.
    let left = grace.saturating_sub(started.elapsed());
    if !finished || !app.drain.wait(left).await {
        tracing::warn!("shutdown: grace period over with requests still running");
    }
    let _ = tasks.await;
    app.store.shutdown().await;
}

/// `abacus healthcheck`: the port comes from `PORT` (default 1453), like the server's.
fn check(url: &str) -> ExitCode {
    match abacus::http::probe::check(url) {
        Ok(summary) => {
            println!("abacus check: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("abacus check: {e}");
            ExitCode::from(1)
        }
    }
}

fn healthcheck() -> ExitCode {
    let port = match std::env::var("PORT").ok().filter(|p| !p.trim().is_empty()) {
        None => 1453,
        Some(p) => match p.trim().parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => {
                eprintln!("abacus healthcheck: PORT={p:?} is not a port number");
                return ExitCode::from(2);
            }
        },
    };
    match abacus::http::probe::ready(port) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("abacus healthcheck: {e}");
            ExitCode::from(1)
        }
    }
}

/// SIGTERM or SIGINT, registered at once (before the listener is bound): a signal that arrives
/// while the first connections are being served must start the drain, not kill the process
/// through the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {},
                        _ = int.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
