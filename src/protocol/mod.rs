//! The MCP protocol layer: JSON-RPC envelopes, eras and versions, method dispatch, and the
//! [`toolset`] boundary that domains implement.

pub mod dispatch;
pub mod error;
pub mod jsonrpc;
pub mod limits;
pub mod registry;
pub mod tasks;
pub mod testing;
pub mod toolset;
pub mod version;
