//! Protocol versions and eras (`basic/versioning.mdx`).

/// Legacy versions served with `initialize` and sessions, newest first.
pub const LEGACY_VERSIONS: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];
/// The modern, stateless version.
pub const MODERN_VERSION: &str = "2026-07-28";
/// Every version this server speaks, newest first (for `server/discover` and -32022 data).
pub const ALL_VERSIONS: [&str; 4] = ["2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26"];

/// The `_meta` key that marks a modern request.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` key of the modern client capabilities.
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// The `_meta` key of the modern per-request log level.
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// The `_meta` key of `serverInfo` on modern results.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// The `_meta` key of the listen subscription id on notifications.
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// Picks the version to answer `initialize` with: the requested one if we speak it as a
/// legacy version, else our newest legacy version (`basic/lifecycle.mdx`).
pub fn negotiate(requested: &str) -> &'static str {
    LEGACY_VERSIONS
        .iter()
        .find(|v| **v == requested)
        .copied()
        .unwrap_or(LEGACY_VERSIONS[0])
}

/// True if `v` is a legacy version we speak.
pub fn is_legacy(v: &str) -> bool {
    LEGACY_VERSIONS.contains(&v)
}

/// True if batches (JSON arrays) are allowed: only 2025-03-26 (batching removed in 2025-06-18).
pub fn allows_batches(v: &str) -> bool {
    v == "2025-03-26"
}

/// True if tool input-validation failures are tool errors rather than JSON-RPC errors
/// (SEP-1303, from 2025-11-25 on).
pub fn validation_is_tool_error(v: &str) -> bool {
    v >= "2025-11-25"
}

/// True if a legacy session may use 2025-11-25's experimental tasks (`params.task`,
/// `tasks/*`): older versions have no tasks at all.
pub fn has_legacy_tasks(v: &str) -> bool {
    v == "2025-11-25"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_echoes_supported_and_falls_back_to_newest_legacy() {
        assert_eq!(negotiate("2025-06-18"), "2025-06-18");
        assert_eq!(negotiate("2024-11-05"), "2025-11-25");
        assert_eq!(negotiate("1.0.0"), "2025-11-25");
        assert_eq!(negotiate("2026-07-28"), "2025-11-25");
    }

    #[test]
    fn era_rules() {
        assert!(allows_batches("2025-03-26"));
        assert!(!allows_batches("2025-06-18"));
        assert!(validation_is_tool_error("2025-11-25"));
        assert!(validation_is_tool_error("2026-07-28"));
        assert!(!validation_is_tool_error("2025-06-18"));
    }
}
