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
        Self {
            max_factorial: 1_000_000,
            max_progress_steps: 100,
            max_batch_size: 100,
            history_cap: 50,
        }
    }
}

/// Temporary stub.
pub struct Calculator;
impl Calculator {
    pub fn new(
        _s: Option<String>,
        _l: tokio::sync::watch::Receiver<Limits>,
    ) -> Result<Self, String> {
        Ok(Self)
    }
}
#[async_trait::async_trait]
impl crate::protocol::toolset::Toolset for Calculator {
    fn tools(&self) -> Vec<rmcp::model::Tool> {
        vec![]
    }
    async fn call_tool(
        &self,
        _n: &str,
        _a: crate::protocol::toolset::JsonObject,
        _c: &crate::protocol::toolset::RequestContext,
    ) -> Result<
        crate::protocol::toolset::Outcome<rmcp::model::CallToolResult>,
        crate::protocol::toolset::DomainError,
    > {
        unreachable!()
    }
    fn resources(
        &self,
        _c: &crate::protocol::toolset::RequestContext,
    ) -> Vec<rmcp::model::Resource> {
        vec![]
    }
    fn resource_templates(&self) -> Vec<rmcp::model::ResourceTemplate> {
        vec![]
    }
    async fn read_resource(
        &self,
        _u: &str,
        _c: &crate::protocol::toolset::RequestContext,
    ) -> Result<
        Option<crate::protocol::toolset::Outcome<rmcp::model::ReadResourceResult>>,
        crate::protocol::toolset::DomainError,
    > {
        Ok(None)
    }
    fn can_subscribe(&self, _u: &str) -> bool {
        false
    }
    fn prompts(&self) -> Vec<rmcp::model::Prompt> {
        vec![]
    }
    async fn get_prompt(
        &self,
        _n: &str,
        _a: crate::protocol::toolset::JsonObject,
        _c: &crate::protocol::toolset::RequestContext,
    ) -> Result<
        crate::protocol::toolset::Outcome<rmcp::model::GetPromptResult>,
        crate::protocol::toolset::DomainError,
    > {
        unreachable!()
    }
    fn complete(
        &self,
        _r: &crate::protocol::toolset::CompletionRef,
        _a: &str,
        _v: &str,
        _c: &crate::protocol::toolset::JsonObject,
    ) -> Option<Vec<String>> {
        None
    }
}
