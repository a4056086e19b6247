//! The fixture prompts and completions.

use rmcp::model::{ContentBlock, GetPromptResult, PromptMessage, Role};
use serde_json::Value;

use super::catalog::*;
use super::input::invalid;
use super::mrtr;
use super::resources;
use super::tools::embedded_text;
use crate::protocol::toolset::{CompletionRef, DomainError, JsonObject, Outcome, RequestContext};

/// Completion candidates for `test_prompt_with_arguments`, per argument.
const ARG1_VALUES: [&str; 4] = ["hello", "help", "test", "testValue1"];
const ARG2_VALUES: [&str; 3] = ["world", "work", "testValue2"];

/// Gets the fixture prompt `name` after checking its arguments.
pub async fn get(
    name: &str,
    args: &JsonObject,
    ctx: &RequestContext,
) -> Result<Outcome<GetPromptResult>, DomainError> {
    let done = |messages| Ok(Outcome::Complete(GetPromptResult::new(messages)));
    match name {
        SIMPLE_PROMPT => {
            check_arguments(args, &[])?;
            done(vec![PromptMessage::new_text(
                Role::User,
                SIMPLE_PROMPT_TEXT,
            )])
        }
        PROMPT_WITH_ARGUMENTS => {
            let values = check_arguments(args, &["arg1", "arg2"])?;
            let text = format!(
                "Prompt with arguments: arg1='{}', arg2='{}'",
                values[0], values[1]
            );
            done(vec![PromptMessage::new_text(Role::User, text)])
        }
        PROMPT_WITH_EMBEDDED_RESOURCE => {
            let values = check_arguments(args, &["resourceUri"])?;
            let resource = embedded_text(values[0], "text/plain", PROMPT_RESOURCE_TEXT);
            done(vec![
                PromptMessage::new(Role::User, resource),
                PromptMessage::new_text(Role::User, PROMPT_RESOURCE_FOLLOW_UP),
            ])
        }
        PROMPT_WITH_IMAGE => {
            check_arguments(args, &[])?;
            done(vec![
                PromptMessage::new(Role::User, ContentBlock::image(PNG_BASE64, "image/png")),
                PromptMessage::new_text(Role::User, PROMPT_IMAGE_FOLLOW_UP),
            ])
        }
        IRR_PROMPT => {
            check_arguments(args, &[])?;
            mrtr::prompt(ctx).await
        }
        _ => Err(invalid(&format!("Unknown prompt: {name}"))),
    }
}

/// Checks that `args` holds exactly the `required` string arguments and returns their values in
/// that order. Missing, non-string or unknown arguments are invalid params.
fn check_arguments<'a>(
    args: &'a JsonObject,
    required: &[&str],
) -> Result<Vec<&'a str>, DomainError> {
    if let Some(unknown) = args.keys().find(|k| !required.contains(&k.as_str())) {
        return Err(invalid(&format!("Unknown prompt argument: {unknown}")));
    }
    required
        .iter()
        .map(|name| {
            args.get(*name)
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("Missing required string argument: {name}")))
        })
        .collect()
}

/// Completion values for an argument of a fixture reference, or `None` when the reference is not
/// a fixture. Candidates are filtered by case-insensitive prefix.
pub fn complete(reference: &CompletionRef, argument: &str, value: &str) -> Option<Vec<String>> {
    let candidates: &[&str] = match reference {
        CompletionRef::Prompt { name } if name == PROMPT_WITH_ARGUMENTS => match argument {
            "arg1" => &ARG1_VALUES,
            "arg2" => &ARG2_VALUES,
            _ => &[],
        },
        CompletionRef::Prompt { name } if is_fixture_prompt(name) => &[],
        CompletionRef::Resource { uri } if uri == TEMPLATE_URI && argument == "id" => {
            &["1", "42", "123"]
        }
        CompletionRef::Resource { uri } if uri == TEMPLATE_URI || resources::owns(uri) => &[],
        _ => return None,
    };
    let prefix = value.to_lowercase();
    Some(
        candidates
            .iter()
            .filter(|c| c.to_lowercase().starts_with(&prefix))
            .map(|c| (*c).to_owned())
            .collect(),
    )
}

/// True if `name` is one of the fixture prompts.
fn is_fixture_prompt(name: &str) -> bool {
    prompts().iter().any(|p| p.name == name)
}
