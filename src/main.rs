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

use abacus::config::Settings;
use axum::serve::ListenerExt;

fn config_path() -> Result<Option<PathBuf>, String> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => {
                path = Some(args.next().ok_or("--config needs a file path")?.into())
            }
            s if s.starts_with("--config=") => path = Some(s["--config=".len()..].into()),
            "--help" | "-h" => {
                println!("usage: abacus [--config FILE]\nSettings come from FILE (YAML) and the environment; see README.md.");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(path)
}

#[tokio::main]
async fn main() -> ExitCode {
    let settings =
        match config_path().and_then(|p| Settings::load(p.as_deref()).map_err(|e| e.to_string())) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("abacus: configuration error: {e}");
                return ExitCode::from(2);
            }
        };
    let logs = abacus::telemetry::init_logging(&settings.runtime.log_level, settings.log_format);
    let app = match App::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            // Start-up errors go to stderr like configuration errors, not only to the log.
            eprintln!("abacus: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    abacus::app::apply_live_settings(app.clone(), logs);
    let addr = SocketAddr::new(
        app.settings.host.parse().expect("validated"),
        app.settings.port,
    );
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
    let router =
        abacus::http::router(app.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let drain_app = app.clone();
    let shutdown = async move {
        shutdown_signal().await;
        tracing::info!("shutdown: readiness failing, closing streams, finishing in-flight work");
        drain_app.drain.begin();
        let grace = Duration::from_millis(drain_app.settings.shutdown_grace_ms);
        if !drain_app.drain.wait(grace).await {
            tracing::warn!("shutdown: grace period over with requests still running");
        }
        drain_app.store.shutdown().await;
    };
    // Nagle's algorithm would add ~40 ms to small responses on kept-alive connections.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let serve = axum::serve(listener, router).with_graceful_shutdown(shutdown);
    let grace = Duration::from_millis(app.settings.shutdown_grace_ms);
    let server = tokio::spawn(async move { serve.await });
    // After the drain, idle keep-alive connections are closed by axum; never wait past grace+5s.
    let result = tokio::select! {
        r = server => r.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())),
        _ = async { app.drain.streams.cancelled().await; tokio::time::sleep(grace + Duration::from_secs(5)).await } => Ok(()),
    };
    match result {
        Ok(()) => {
            tracing::info!("shutdown complete");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("server error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
