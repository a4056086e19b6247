//! The calculator's five prompts and the completion values for their arguments.
//!
//! Names, titles, descriptions, arguments and message texts are the reference's (seed-behaviour
//! §4). Prompts are declared as data so that listing, validation and completion cannot drift
//! apart.

use std::collections::BTreeMap;

use rmcp::model::{GetPromptResult, Prompt, PromptArgument, PromptMessage, Role};
use serde_json::Value;

use super::args::json_type;
use super::ops::{AdvancedOp, BasicOp};
use crate::protocol::toolset::{DomainError, JsonObject};

/// One declared prompt argument.
struct ArgDef {
    name: &'static str,
    description: &'static str,
    required: bool,
}

/// One declared prompt.
struct PromptDef {
    name: &'static str,
    title: &'static str,
    description: &'static str,
    args: &'static [ArgDef],
}

/// Shorthand for an argument declaration.
const fn arg(name: &'static str, description: &'static str, required: bool) -> ArgDef {
    ArgDef {
        name,
        description,
        required,
    }
}

/// The prompts, in the reference's order.
const PROMPTS: [PromptDef; 5] = [
    PromptDef {
        name: "explain-calculation",
        title: "Explain Calculation",
        description: "Explain how to perform a calculation step by step",
        args: &[
            arg("operation", "The calculation to explain", true),
            arg(
                "level",
                "Explanation level: basic, intermediate, advanced",
                false,
            ),
        ],
    },
    PromptDef {
        name: "generate-problems",
        title: "Generate Practice Problems",
        description: "Generate math practice problems",
        args: &[
            arg(
                "topic",
                "Math topic (e.g., \"fractions\", \"algebra\", \"geometry\")",
                true,
            ),
            arg("difficulty", "Difficulty level: easy, medium, hard", true),
            arg("count", "Number of problems to generate", true),
        ],
    },
    PromptDef {
        name: "solve_math_problem",
        title: "Solve Math Problem",
        description: "Step-by-step problem solving",
        args: &[
            arg("problem", "The problem to solve", true),
            arg("showWork", "Show detailed work", true),
        ],
    },
    PromptDef {
        name: "explain_formula",
        title: "Explain Formula",
        description: "Detailed formula explanation",
        args: &[
            arg("formula", "The formula to explain", true),
            arg("context", "Application context", false),
        ],
    },
    PromptDef {
        name: "calculator_assistant",
        title: "Calculator Assistant",
        description: "General calculation assistance",
        args: &[arg("query", "What you need help calculating", true)],
    },
];

/// The prompt list for `prompts/list`.
pub fn list() -> Vec<Prompt> {
    PROMPTS.iter().map(to_prompt).collect()
}

/// Converts a declaration to the wire type.
fn to_prompt(def: &PromptDef) -> Prompt {
    let args = def
        .args
        .iter()
        .map(|a| {
            PromptArgument::new(a.name)
                .with_description(a.description)
                .with_required(a.required)
        })
        .collect();
    Prompt::new(def.name, Some(def.description), Some(args)).with_title(def.title)
}

/// Finds a declaration by name.
fn find(name: &str) -> Option<&'static PromptDef> {
    PROMPTS.iter().find(|p| p.name == name)
}

/// An `InvalidParams` error.
fn invalid(message: String) -> DomainError {
    DomainError::InvalidParams {
        message,
        data: None,
    }
}

/// Validated string arguments. `null` counts as absent (some clients send unset optionals so).
fn parse_args(
    def: &PromptDef,
    arguments: &JsonObject,
) -> Result<BTreeMap<&'static str, String>, DomainError> {
    if let Some(unknown) = arguments
        .keys()
        .find(|k| !def.args.iter().any(|a| a.name == k.as_str()))
    {
        return Err(invalid(format!(
            "Unknown argument {unknown:?} for prompt {}",
            def.name
        )));
    }
    let mut out = BTreeMap::new();
    for a in def.args {
        match arguments.get(a.name) {
            Some(Value::String(s)) => {
                out.insert(a.name, s.clone());
            }
            None | Some(Value::Null) if a.required => {
                return Err(invalid(format!(
                    "Missing required argument {:?} for prompt {}",
                    a.name, def.name
                )));
            }
            None | Some(Value::Null) => {}
            Some(other) => {
                let got = json_type(other);
                return Err(invalid(format!(
                    "Argument {:?} of prompt {} must be a string, got {got}",
                    a.name, def.name
                )));
            }
        }
    }
    Ok(out)
}

/// Renders a prompt: the reference's description and single user message.
pub fn get(name: &str, arguments: &JsonObject) -> Result<GetPromptResult, DomainError> {
    let def = find(name).ok_or_else(|| invalid(format!("Prompt {name} not found")))?;
    let args = parse_args(def, arguments)?;
    let v = |k: &str| args.get(k).map(String::as_str).unwrap_or_default();
    let (description, text) = match def.name {
        "explain-calculation" => {
            let level = Some(v("level"))
                .filter(|l| !l.is_empty())
                .unwrap_or("basic");
            let op = v("operation");
            (
                format!("Step-by-step explanation of {op} at {level} level"),
                format!("Please explain how to {op} step by step at a {level} level. Include examples and common mistakes to avoid."),
            )
        }
        "generate-problems" => {
            let (topic, difficulty, count) = (v("topic"), v("difficulty"), v("count"));
            (
                format!("Generate {count} {difficulty} {topic} problems"),
                format!("Generate {count} {difficulty}-level practice problems for {topic}. Include solutions and explanations."),
            )
        }
        "solve_math_problem" => {
            let problem = v("problem");
            let tail = if v("showWork") == "true" {
                "Show all work and explain each step."
            } else {
                "Provide the solution."
            };
            (
                format!("Solve: {problem}"),
                format!("Solve this problem: {problem}. {tail}"),
            )
        }
        "explain_formula" => {
            let formula = v("formula");
            let context = match v("context") {
                "" => String::new(),
                c => format!(" in the context of {c}"),
            };
            (
                format!("Explain the formula: {formula}"),
                format!("Explain the formula \"{formula}\"{context}. Include what each variable represents and when to use this formula."),
            )
        }
        _ => (
            "Calculator assistance request".to_owned(),
            format!(
                "I need help with this calculation: {}. Please provide step-by-step guidance.",
                v("query")
            ),
        ),
    };
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
            .with_description(description),
    )
}

/// Completion values for a prompt argument: `None` if the prompt is not ours, an empty list for
/// free-form arguments, otherwise the known values starting with `prefix` (case-insensitive).
pub fn complete(prompt: &str, argument: &str, prefix: &str) -> Option<Vec<String>> {
    find(prompt)?;
    let values: &[&str] = match (prompt, argument) {
        ("explain-calculation", "operation") => &OPERATION_NAMES,
        ("explain-calculation", "level") => &["basic", "intermediate", "advanced"],
        ("generate-problems", "difficulty") => &["easy", "medium", "hard"],
        ("generate-problems", "topic") => &["fractions", "algebra", "geometry"],
        ("solve_math_problem", "showWork") => &["true", "false"],
        _ => &[],
    };
    let prefix = prefix.to_lowercase();
    Some(
        values
            .iter()
            .filter(|v| v.to_lowercase().starts_with(&prefix))
            .map(|v| (*v).to_owned())
            .collect(),
    )
}

/// Every operation the calculator's tools know, basic then advanced.
const OPERATION_NAMES: [&str; 11] = {
    let (b, a) = (BasicOp::NAMES, AdvancedOp::NAMES);
    [
        b[0], b[1], b[2], b[3], a[0], a[1], a[2], a[3], a[4], a[5], a[6],
    ]
};
