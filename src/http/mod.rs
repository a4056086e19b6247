//! HTTP concerns around the MCP endpoint: error mapping, health, metrics endpoint, CORS,
//! Host/Origin guards and rate limiting.

pub mod error;
