//! The conformance fixtures: the tools, resources, prompts and completions that the official
//! suite `@modelcontextprotocol/conformance@0.2.0-alpha.12` looks up by exact name, for both
//! requirement sets (2025-11-25, legacy era; 2026-07-28, modern era).
//!
//! Fixtures that need client input are written once against [`input::Ask`]: server→client
//! requests in the legacy era, `InputRequiredResult` round trips (SEP-2322) in the modern era.

mod catalog;
mod input;
mod mrtr;
mod prompts;
mod resources;
mod tasks;
mod tools;

#[cfg(test)]
mod tests;

use async_trait::async_trait;
use rmcp::model::{
    CallToolResult, ContentBlock, GetPromptResult, Prompt, ReadResourceResult, Resource,
    ResourceTemplate, Tool,
};

use crate::protocol::toolset::{
    CompletionRef, DomainError, Era, JsonObject, Outcome, RequestContext, ToolResult, Toolset,
};

/// The conformance fixture toolset. Stateless: everything a fixture needs across rounds travels
/// in the sealed `requestState`, so any pod can serve any round.
#[derive(Debug, Clone, Copy, Default)]
pub struct Conformance;

impl Conformance {
    /// Builds the toolset; it holds no state, so this cannot fail.
    pub fn new() -> Self {
        Self
    }
}

/// Reports failures of the client side as tool errors, so the caller sees why the tool failed:
/// an error answer to a server→client request, and (legacy era only, where -32021 does not
/// exist) a capability the client did not declare.
fn client_failures_as_tool_errors(
    era: Era,
    outcome: Result<Outcome<CallToolResult>, DomainError>,
) -> Result<Outcome<CallToolResult>, DomainError> {
    let message = match outcome {
        Err(DomainError::ClientRequestFailed(reason)) => format!("Client request failed: {reason}"),
        Err(DomainError::MissingCapability(caps)) if era == Era::Legacy => {
            format!("The client did not declare the required capability: {caps}")
        }
        other => return other,
    };
    Ok(Outcome::Complete(CallToolResult::error(vec![
        ContentBlock::text(message),
    ])))
}

#[async_trait]
impl Toolset for Conformance {
    fn tools(&self) -> Vec<Tool> {
        let mut tools = catalog::tools();
        tools.extend(tasks::tools());
        tools
    }

    async fn call_tool(
        &self,
        name: &str,
        arguments: JsonObject,
        ctx: &RequestContext,
    ) -> Result<Outcome<ToolResult>, DomainError> {
        let outcome = tools::call(name, &arguments, ctx).await;
        client_failures_as_tool_errors(ctx.era, outcome).map(|o| o.map(ToolResult::from))
    }

    fn resources(&self, _ctx: &RequestContext) -> Vec<Resource> {
        catalog::resources()
    }

    fn resource_templates(&self) -> Vec<ResourceTemplate> {
        catalog::resource_templates()
    }

    async fn read_resource(
        &self,
        uri: &str,
        _ctx: &RequestContext,
    ) -> Result<Option<Outcome<ReadResourceResult>>, DomainError> {
        Ok(resources::read(uri).map(Outcome::Complete))
    }

    fn can_subscribe(&self, uri: &str) -> bool {
        resources::owns(uri)
    }

    fn prompts(&self) -> Vec<Prompt> {
        catalog::prompts()
    }

    async fn get_prompt(
        &self,
        name: &str,
        arguments: JsonObject,
        ctx: &RequestContext,
    ) -> Result<Outcome<GetPromptResult>, DomainError> {
        prompts::get(name, &arguments, ctx).await
    }

    fn complete(
        &self,
        reference: &CompletionRef,
        argument: &str,
        value: &str,
        _context: &JsonObject,
    ) -> Option<Vec<String>> {
        prompts::complete(reference, argument, value)
    }
}
