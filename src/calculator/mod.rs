//! The calculator domain.

/// Placeholder until the domain lands.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct Limits {
    pub max_factorial: u64,
    pub max_progress_steps: u64,
    pub max_batch_size: usize,
    pub history_cap: usize,
}
impl Default for Limits {
    fn default() -> Self {
        Self { max_factorial: 1_000_000, max_progress_steps: 100, max_batch_size: 100, history_cap: 50 }
    }
}
