//! Abacus: a Kubernetes-native, dual-era MCP calculator server.
//!
//! Module map (one concern each): [`config`] settings and live updates; [`protocol`] JSON-RPC,
//! eras and dispatch; [`transport`] Streamable HTTP for both eras; [`session`] the session store
//! boundary and its implementations; [`calculator`] and [`conformance`] the domains; [`telemetry`]
//! logs and metrics; [`http`] health, metrics endpoint, guards and error mapping; [`auth`] the
//! OAuth 2.1 resource server.

pub mod app;
pub mod auth;
pub mod calculator;
pub mod config;
pub mod conformance;
pub mod http;
pub mod protocol;
pub mod session;
pub mod tasks;
pub mod telemetry;
pub mod transport;
