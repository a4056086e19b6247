//! Names, fixed payloads and list entries of the conformance fixtures.
//!
//! The conformance suite looks every fixture up by its exact name and compares texts and MIME
//! types literally, so all of those strings live here, in one place, next to the list entries
//! that advertise them.

use std::sync::Arc;

use rmcp::model::{Prompt, PromptArgument, Resource, ResourceTemplate, Tool};
use serde_json::{json, Value};

use crate::protocol::toolset::JsonObject;

/// A 1x1 RGB PNG, base64: small enough to inline, valid enough for image decoders.
pub const PNG_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR42mPQqzUCAAG6AN76d2wkAAAAAElFTkSuQmCC";
/// Four samples of 16-bit mono 8 kHz PCM silence as a WAV file, base64.
pub const WAV_BASE64: &str =
    "UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAIA+AAACABAAZGF0YQgAAAAAAAAAAAAAAA==";

// Tools of the 2025-11-25 set (most also run under 2026-07-28).
pub const SIMPLE_TEXT: &str = "test_simple_text";
pub const IMAGE_CONTENT: &str = "test_image_content";
pub const AUDIO_CONTENT: &str = "test_audio_content";
pub const EMBEDDED_RESOURCE: &str = "test_embedded_resource";
pub const MULTIPLE_CONTENT: &str = "test_multiple_content_types";
pub const TOOL_WITH_LOGGING: &str = "test_tool_with_logging";
pub const ERROR_HANDLING: &str = "test_error_handling";
pub const TOOL_WITH_PROGRESS: &str = "test_tool_with_progress";
pub const SAMPLING: &str = "test_sampling";
pub const ELICITATION: &str = "test_elicitation";
pub const ELICITATION_DEFAULTS: &str = "test_elicitation_sep1034_defaults";
pub const ELICITATION_ENUMS: &str = "test_elicitation_sep1330_enums";
pub const JSON_SCHEMA_2020_12: &str = "json_schema_2020_12_tool";
pub const RECONNECTION: &str = "test_reconnection";
// Diagnostics of `server-stateless` (2026-07-28).
pub const MISSING_CAPABILITY: &str = "test_missing_capability";
pub const STREAMING_ELICITATION: &str = "test_streaming_elicitation";
pub const LOGGING_TOOL: &str = "test_logging_tool";
pub const TRIGGER_TOOL_CHANGE: &str = "test_trigger_tool_change";
pub const TRIGGER_PROMPT_CHANGE: &str = "test_trigger_prompt_change";
pub const TRIGGER_RESOURCE_UPDATE: &str = "test_trigger_resource_update";
pub const CUSTOM_HEADER: &str = "test_custom_header";
// MRTR (SEP-2322) fixtures.
pub const IRR_ELICITATION: &str = "test_input_required_result_elicitation";
pub const IRR_SAMPLING: &str = "test_input_required_result_sampling";
pub const IRR_LIST_ROOTS: &str = "test_input_required_result_list_roots";
pub const IRR_REQUEST_STATE: &str = "test_input_required_result_request_state";
pub const IRR_MULTIPLE_INPUTS: &str = "test_input_required_result_multiple_inputs";
pub const IRR_MULTI_ROUND: &str = "test_input_required_result_multi_round";
pub const IRR_TAMPERED_STATE: &str = "test_input_required_result_tampered_state";
pub const IRR_CAPABILITIES: &str = "test_input_required_result_capabilities";

// Prompts.
pub const SIMPLE_PROMPT: &str = "test_simple_prompt";
pub const PROMPT_WITH_ARGUMENTS: &str = "test_prompt_with_arguments";
pub const PROMPT_WITH_EMBEDDED_RESOURCE: &str = "test_prompt_with_embedded_resource";
pub const PROMPT_WITH_IMAGE: &str = "test_prompt_with_image";
pub const IRR_PROMPT: &str = "test_input_required_result_prompt";

// Resources.
pub const STATIC_TEXT_URI: &str = "test://static-text";
pub const STATIC_BINARY_URI: &str = "test://static-binary";
pub const WATCHED_URI: &str = "test://watched-resource";
pub const TEMPLATE_URI: &str = "test://template/{id}/data";
pub const TEMPLATE_PREFIX: &str = "test://template/";
pub const TEMPLATE_SUFFIX: &str = "/data";
pub const EMBEDDED_RESOURCE_URI: &str = "test://embedded-resource";
pub const MIXED_CONTENT_URI: &str = "test://mixed-content-resource";

// Texts the suite compares literally.
pub const SIMPLE_TEXT_REPLY: &str = "This is a simple text response for testing.";
pub const EMBEDDED_RESOURCE_TEXT: &str = "This is an embedded resource content.";
pub const MIXED_CONTENT_INTRO: &str = "Multiple content types test:";
pub const MIXED_CONTENT_JSON: &str = r#"{"test":"data","value":123}"#;
pub const ERROR_TEXT: &str = "This tool intentionally returns an error for testing";
pub const LOG_MESSAGES: [&str; 3] = [
    "Tool execution started",
    "Tool processing data",
    "Tool execution completed",
];
pub const STATIC_TEXT: &str = "This is the content of the static text resource.";
pub const WATCHED_TEXT: &str = "Watched resource content";
pub const SIMPLE_PROMPT_TEXT: &str = "This is a simple prompt for testing.";
pub const PROMPT_RESOURCE_TEXT: &str = "Embedded resource content for testing.";
pub const PROMPT_RESOURCE_FOLLOW_UP: &str = "Please process the embedded resource above.";
pub const PROMPT_IMAGE_FOLLOW_UP: &str = "Please analyze the image above.";

/// The logger name on every `notifications/message` the fixtures send.
pub const LOGGER: &str = "conformance";

/// Turns a `json!` object literal into a schema map; anything else becomes an empty object
/// schema, which the catalog tests would catch.
fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

/// The schema of a tool that takes no arguments.
fn no_arguments() -> JsonObject {
    object(json!({ "type": "object", "properties": {} }))
}

/// The schema of a tool with one required string argument.
fn one_string(name: &str, description: &str) -> JsonObject {
    object(json!({
        "type": "object",
        "properties": { name: { "type": "string", "description": description } },
        "required": [name]
    }))
}

/// The suite's SEP-1613/SEP-2106 schema: every keyword in it must survive `tools/list` verbatim.
fn json_schema_2020_12() -> JsonObject {
    object(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "$anchor": "addressDef",
                "type": "object",
                "properties": { "street": { "type": "string" }, "city": { "type": "string" } }
            }
        },
        "properties": {
            "name": { "type": "string" },
            "address": { "$ref": "#/$defs/address" },
            "contactMethod": { "type": "string", "enum": ["phone", "email"] },
            "phone": { "type": "string" },
            "email": { "type": "string" }
        },
        "allOf": [{ "anyOf": [{ "required": ["phone"] }, { "required": ["email"] }] }],
        "if": {
            "properties": { "contactMethod": { "const": "phone" } },
            "required": ["contactMethod"]
        },
        "then": { "required": ["phone"] },
        "else": { "required": ["email"] },
        "additionalProperties": false
    }))
}

/// A tool whose string argument is mirrored into the `Mcp-Param-Region` header (SEP-2243).
fn custom_header_schema() -> JsonObject {
    object(json!({
        "type": "object",
        "properties": {
            "region": {
                "type": "string",
                "description": "Echoed back; clients mirror it into the Mcp-Param-Region header",
                "x-mcp-header": "Region"
            }
        },
        "required": ["region"]
    }))
}

/// One tools/list entry.
fn tool(name: &'static str, description: &'static str, schema: JsonObject) -> Tool {
    Tool::new(name, description, Arc::new(schema))
}

/// Every fixture tool, in a fixed order. `test_simple_text` comes first because the suite's
/// header-validation scenario calls the first listed tool with `{}` and expects success.
pub fn tools() -> Vec<Tool> {
    let none = no_arguments;
    vec![
        tool(SIMPLE_TEXT, "Returns a fixed text content block", none()),
        tool(IMAGE_CONTENT, "Returns a PNG image content block", none()),
        tool(AUDIO_CONTENT, "Returns a WAV audio content block", none()),
        tool(
            EMBEDDED_RESOURCE,
            "Returns an embedded text resource",
            none(),
        ),
        tool(
            MULTIPLE_CONTENT,
            "Returns text, image and resource content",
            none(),
        ),
        tool(
            TOOL_WITH_LOGGING,
            "Sends three info log messages ~50 ms apart",
            none(),
        ),
        tool(
            ERROR_HANDLING,
            "Always fails with a tool-level error",
            none(),
        ),
        tool(
            TOOL_WITH_PROGRESS,
            "Reports progress 0, 50, 100 of 100",
            none(),
        ),
        tool(
            SAMPLING,
            "Asks the client's LLM to answer a prompt",
            one_string("prompt", "The prompt to send to the LLM"),
        ),
        tool(
            ELICITATION,
            "Asks the user for a username and email",
            one_string("message", "The message to show the user"),
        ),
        tool(
            ELICITATION_DEFAULTS,
            "Elicitation whose schema has defaults (SEP-1034)",
            none(),
        ),
        tool(
            ELICITATION_ENUMS,
            "Elicitation with the five enum forms (SEP-1330)",
            none(),
        ),
        tool(
            JSON_SCHEMA_2020_12,
            "Tool with JSON Schema 2020-12 features",
            json_schema_2020_12(),
        ),
        tool(
            RECONNECTION,
            "Takes long enough for the transport to close and resume the stream (SEP-1699)",
            none(),
        ),
        tool(
            MISSING_CAPABILITY,
            "Needs the client's sampling capability",
            none(),
        ),
        tool(
            STREAMING_ELICITATION,
            "Elicits input without putting requests on the response stream",
            none(),
        ),
        tool(
            LOGGING_TOOL,
            "Logs one message, visible only if the request set a log level",
            none(),
        ),
        tool(TRIGGER_TOOL_CHANGE, "Announces a tools list change", none()),
        tool(
            TRIGGER_PROMPT_CHANGE,
            "Announces a prompts list change",
            none(),
        ),
        tool(
            TRIGGER_RESOURCE_UPDATE,
            "Announces an update of test://watched-resource",
            none(),
        ),
        tool(
            CUSTOM_HEADER,
            "Echoes an argument carried in a custom header (SEP-2243)",
            custom_header_schema(),
        ),
        tool(
            IRR_ELICITATION,
            "MRTR: one elicitation (key user_name)",
            none(),
        ),
        tool(
            IRR_SAMPLING,
            "MRTR: one sampling request (key capital_question)",
            none(),
        ),
        tool(
            IRR_LIST_ROOTS,
            "MRTR: one roots/list request (key client_roots)",
            none(),
        ),
        tool(
            IRR_REQUEST_STATE,
            "MRTR: elicitation plus integrity-protected requestState",
            none(),
        ),
        tool(
            IRR_MULTIPLE_INPUTS,
            "MRTR: elicitation, sampling and roots in one round",
            none(),
        ),
        tool(
            IRR_MULTI_ROUND,
            "MRTR: two rounds with evolving requestState",
            none(),
        ),
        tool(
            IRR_TAMPERED_STATE,
            "MRTR: rejects a requestState that fails verification",
            none(),
        ),
        tool(
            IRR_CAPABILITIES,
            "MRTR: asks only for what the client declared",
            none(),
        ),
    ]
}

/// One prompt argument.
fn argument(name: &str, description: &str) -> PromptArgument {
    PromptArgument::new(name)
        .with_description(description)
        .with_required(true)
}

/// Every fixture prompt, in a fixed order.
pub fn prompts() -> Vec<Prompt> {
    let plain = |name: &str, description: &str| Prompt::new(name, Some(description), None);
    vec![
        plain(SIMPLE_PROMPT, "A prompt without arguments"),
        Prompt::new(
            PROMPT_WITH_ARGUMENTS,
            Some("A prompt with two required arguments"),
            Some(vec![
                argument("arg1", "First test argument"),
                argument("arg2", "Second test argument"),
            ]),
        ),
        Prompt::new(
            PROMPT_WITH_EMBEDDED_RESOURCE,
            Some("A prompt that embeds a resource"),
            Some(vec![argument(
                "resourceUri",
                "URI of the resource to embed",
            )]),
        ),
        plain(PROMPT_WITH_IMAGE, "A prompt that includes an image"),
        plain(IRR_PROMPT, "A prompt that needs user input first (MRTR)"),
    ]
}

/// Every direct fixture resource; `test://static-text` first because the caching scenario
/// reads whatever `resources/list` names first.
pub fn resources() -> Vec<Resource> {
    let entry = |uri: &str, name: &str, description: &str, mime: &str| {
        Resource::new(uri, name)
            .with_description(description)
            .with_mime_type(mime)
    };
    vec![
        entry(
            STATIC_TEXT_URI,
            "static-text",
            "A static text resource",
            "text/plain",
        ),
        entry(
            STATIC_BINARY_URI,
            "static-binary",
            "A static PNG resource",
            "image/png",
        ),
        entry(
            WATCHED_URI,
            "watched-resource",
            "A resource clients may subscribe to",
            "text/plain",
        ),
    ]
}

/// The fixture resource templates.
pub fn resource_templates() -> Vec<ResourceTemplate> {
    vec![ResourceTemplate::new(TEMPLATE_URI, "template")
        .with_description("JSON data for any id")
        .with_mime_type("application/json")]
}
