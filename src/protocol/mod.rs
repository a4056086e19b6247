//! The MCP protocol layer: JSON-RPC envelopes, eras and versions, method dispatch, and the
//! [`toolset`] boundary that domains implement.

pub mod testing;
pub mod toolset;
