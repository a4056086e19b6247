//! The calculator domain: the reference server's tools, resources, prompts and completions,
//! with its texts kept byte for byte and its defects fixed.
//!
//! Layout: [`numfmt`] prints numbers and JSON like JavaScript; `ops` is the pure arithmetic;
//! `args` validates tool arguments; `history` records calculations and defines calculation ids;
//! `tools`, `resources` and `prompts` implement the three MCP surfaces.
//!
//! History scope per era:
//! - Legacy (sessions): calculations go to the session's history (`ctx.scope(None)`), ids are
//!   `c-<16 hex>`, and `calculator://history/<id>` reads only the caller's session.
//! - Modern (no sessions, SEP-2567 state handles): the history tools take an optional
//!   `historyHandle`; without one, `ctx.scope(None)` mints a new handle. The handle is returned
//!   in `structuredContent.historyHandle` (the text stays the reference's), and calculation ids
//!   are `c-<16 hex>.<base64url(handle)>` so that the history template can reopen the scope.
//!
//! Limits come from a `watch` channel and are read on every call, so configuration reloads
//! apply to the next request without a restart.

mod args;
mod history;
pub mod numfmt;
mod ops;
mod prompts;
mod resources;
mod tools;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use rmcp::model::{GetPromptResult, Prompt, ReadResourceResult, Resource, ResourceTemplate, Tool};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use numfmt::js_number;

use crate::protocol::toolset::{
    CompletionRef, DomainError, JsonObject, Outcome, RequestContext, ToolResult, Toolset,
};

/// Bounds on the work one request may cause (defect D14 of the reference: unbounded factorial,
/// progress steps and batches). Embedded in the configuration (camelCase keys like the rest of
/// it), every field optional.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Largest accepted `factorial` input (default 1 000 000). The computation itself stops at
    /// the first overflow (at most 171 multiplications), so inputs from 171 up to this bound
    /// give `Infinity` as in the reference; larger inputs are a tool error, because they are
    /// almost certainly a mistake rather than a request for `Infinity`.
    pub max_factorial: u64,
    /// Largest `demo_progress.steps` (default 100: 20 s of 200 ms steps). Values below 1 are
    /// treated as 1.
    #[schemars(range(min = 1))]
    pub max_progress_steps: u64,
    /// Largest number of items in one `batch_calculate` call (default 100).
    #[schemars(range(min = 1))]
    pub max_batch_size: usize,
    /// History entries kept per session or state handle (default 50, as the reference). The
    /// history store trims to it; the calculator only carries it in the shared configuration.
    #[schemars(range(min = 1))]
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

impl Limits {
    /// Checks the limits make sense; configuration loading calls this to fail fast at start-up.
    pub fn validate(&self) -> Result<(), CalculatorError> {
        let problem = if self.max_progress_steps == 0 {
            "max_progress_steps must be at least 1"
        } else if self.max_batch_size == 0 {
            "max_batch_size must be at least 1"
        } else if self.history_cap == 0 {
            "history_cap must be at least 1"
        } else {
            return Ok(());
        };
        Err(CalculatorError::InvalidLimits(problem.to_owned()))
    }

    /// The effective `demo_progress` step bound (never below 1, even if a bad value slips in live).
    fn steps_cap(&self) -> u64 {
        self.max_progress_steps.max(1)
    }

    /// The effective batch length bound.
    fn batch_cap(&self) -> usize {
        self.max_batch_size
    }
}

/// Start-up errors of the calculator domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalculatorError {
    /// The sample tool would shadow a built-in tool (the reference crashed at run time instead).
    #[error("sample tool name {0:?} clashes with the built-in tool of the same name")]
    SampleToolClash(String),
    /// The sample tool name is not a valid tool name.
    #[error(
        "sample tool name {0:?} is invalid: it must be 1 to 128 characters from A-Z a-z 0-9 _ . -"
    )]
    InvalidSampleToolName(String),
    /// A limit is out of range.
    #[error("invalid calculator limits: {0}")]
    InvalidLimits(String),
}

/// What the calculator reads from the live configuration on every call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CalculatorSettings {
    /// Bounds on the work one call may cause.
    pub limits: Limits,
    /// The optional echo tool's name (already validated with [`check_sample_name`]).
    pub sample_tool: Option<Arc<str>>,
}

/// The calculator toolset.
pub struct Calculator {
    settings: watch::Receiver<CalculatorSettings>,
}

impl Calculator {
    /// Builds the toolset on a live settings channel; invalid initial settings are start-up
    /// errors (later values are validated by the configuration reload before they are sent).
    pub fn new(settings: watch::Receiver<CalculatorSettings>) -> Result<Self, CalculatorError> {
        {
            let current = settings.borrow();
            current.limits.validate()?;
            if let Some(name) = &current.sample_tool {
                check_sample_name(name)?;
            }
        }
        Ok(Self { settings })
    }

    /// The settings in force for this call (cheap: limits are `Copy`, the name an `Arc`).
    fn current(&self) -> CalculatorSettings {
        self.settings.borrow().clone()
    }
}

/// Validates a (trimmed) sample tool name: tool-name characters, and no clash with a built-in
/// tool (the reference crashed at run time instead).
pub fn check_sample_name(name: &str) -> Result<String, CalculatorError> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if name.is_empty() || name.len() > 128 || !name.chars().all(valid_char) {
        return Err(CalculatorError::InvalidSampleToolName(name.to_owned()));
    }
    if tools::BUILT_IN.contains(&name) {
        return Err(CalculatorError::SampleToolClash(name.to_owned()));
    }
    Ok(name.to_owned())
}

#[async_trait]
impl Toolset for Calculator {
    fn tools(&self) -> Vec<Tool> {
        let current = self.current();
        tools::definitions(current.sample_tool.as_deref(), &current.limits)
    }

    async fn call_tool(
        &self,
        name: &str,
        arguments: JsonObject,
        ctx: &RequestContext,
    ) -> Result<Outcome<ToolResult>, DomainError> {
        let CalculatorSettings {
            limits,
            sample_tool,
        } = self.current();
        let result = match name {
            _ if sample_tool.as_deref() == Some(name) => tools::sample(&arguments)?.into(),
            tools::CALCULATE => tools::calculate(&arguments, ctx).await?,
            tools::BATCH_CALCULATE => tools::batch(&arguments, ctx, &limits).await?,
            tools::ADVANCED_CALCULATE => tools::advanced(&arguments, ctx, &limits).await?,
            tools::DEMO_PROGRESS => {
                return tools::demo_progress(&arguments, &limits).map(|o| o.map(ToolResult::from))
            }
            _ => {
                let message = format!("Tool {name} not found");
                return Err(DomainError::InvalidParams {
                    message,
                    data: None,
                });
            }
        };
        Ok(Outcome::Complete(result))
    }

    fn resources(&self, ctx: &RequestContext) -> Vec<Resource> {
        resources::list(ctx)
    }

    fn resource_templates(&self) -> Vec<ResourceTemplate> {
        resources::templates()
    }

    async fn read_resource(
        &self,
        uri: &str,
        ctx: &RequestContext,
    ) -> Result<Option<Outcome<ReadResourceResult>>, DomainError> {
        Ok(resources::read(uri, ctx).await?.map(Outcome::Complete))
    }

    fn can_subscribe(&self, uri: &str) -> bool {
        resources::can_subscribe(uri)
    }

    fn prompts(&self) -> Vec<Prompt> {
        prompts::list()
    }

    async fn get_prompt(
        &self,
        name: &str,
        arguments: JsonObject,
        _ctx: &RequestContext,
    ) -> Result<Outcome<GetPromptResult>, DomainError> {
        prompts::get(name, &arguments).map(Outcome::Complete)
    }

    fn complete(
        &self,
        reference: &CompletionRef,
        argument: &str,
        value: &str,
        _context: &JsonObject,
    ) -> Option<Vec<String>> {
        match reference {
            CompletionRef::Prompt { name } => prompts::complete(name, argument, value),
            // History ids live in per-request scopes this synchronous call cannot reach.
            CompletionRef::Resource { uri } => resources::owns(uri).then(Vec::new),
        }
    }
}
