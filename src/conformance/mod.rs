/// Temporary stub.
pub struct Conformance;
impl Conformance {
    pub fn new() -> Self {
        Self
    }
}
#[async_trait::async_trait]
impl crate::protocol::toolset::Toolset for Conformance {
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
