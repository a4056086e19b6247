//! The set of active toolsets. All available toolsets are checked for name clashes once at
//! start-up (a clash is a start-up error, not a failure at first use); which of them are active
//! follows the live `toolsets` setting, and each change reports which lists changed so that
//! `list_changed` can be announced.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;
use rmcp::model::{Prompt, Tool};
use serde_json::Value;

use super::toolset::{ListKind, Toolset};

/// A toolset with the name `TOOLSETS` uses for it.
pub type NamedToolset = (&'static str, Arc<dyn Toolset>);

/// Why toolsets cannot be combined.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{kind} name {name:?} is defined by both the {a} and the {b} toolset")]
    Clash {
        kind: &'static str,
        name: String,
        a: &'static str,
        b: &'static str,
    },
    #[error("unknown toolset {0:?}")]
    Unknown(String),
}

/// The active toolsets with lookup indexes and pre-serialized lists (the hot path never
/// re-serializes `tools/list`).
pub struct Active {
    /// Active toolsets in configuration order.
    pub toolsets: Vec<Arc<dyn Toolset>>,
    /// Names of the active toolsets.
    pub names: Vec<String>,
    tool_owner: HashMap<String, usize>,
    prompt_owner: HashMap<String, usize>,
    /// `tools` array of `tools/list`.
    pub tools_json: Arc<Value>,
    /// `prompts` array of `prompts/list`.
    pub prompts_json: Arc<Value>,
    /// `resourceTemplates` array of `resources/templates/list`.
    pub templates_json: Arc<Value>,
}

impl Active {
    /// The toolset owning a tool.
    pub fn tool_owner(&self, name: &str) -> Option<&Arc<dyn Toolset>> {
        self.tool_owner.get(name).map(|i| &self.toolsets[*i])
    }
    /// The toolset owning a prompt.
    pub fn prompt_owner(&self, name: &str) -> Option<&Arc<dyn Toolset>> {
        self.prompt_owner.get(name).map(|i| &self.toolsets[*i])
    }
}

/// Available and active toolsets.
pub struct Registry {
    available: Vec<NamedToolset>,
    active: RwLock<Arc<Active>>,
}

impl Registry {
    /// Checks that the available toolsets never clash and activates `active`.
    pub fn new(available: Vec<NamedToolset>, active: &[String]) -> Result<Self, RegistryError> {
        check_clashes(&available)?;
        let first = build(&available, active)?;
        Ok(Self {
            available,
            active: RwLock::new(Arc::new(first)),
        })
    }

    /// The active toolsets (a cheap snapshot).
    pub fn active(&self) -> Arc<Active> {
        self.active.read().clone()
    }

    /// Activates another set of toolsets; returns the lists that changed.
    pub fn activate(&self, names: &[String]) -> Result<Vec<ListKind>, RegistryError> {
        let next = build(&self.available, names)?;
        let mut cur = self.active.write();
        let mut changed = Vec::new();
        if cur.tools_json != next.tools_json {
            changed.push(ListKind::Tools);
        }
        if cur.prompts_json != next.prompts_json {
            changed.push(ListKind::Prompts);
        }
        if cur.names != next.names {
            changed.push(ListKind::Resources);
        }
        *cur = Arc::new(next);
        Ok(changed)
    }
}

impl Registry {
    /// The toolset, other than `owner`, that already defines a tool called `name` — checked
    /// before a live configuration renames a tool, so that a clash is rejected, not served.
    pub fn tool_defined_elsewhere(&self, name: &str, owner: &str) -> Option<&'static str> {
        self.available
            .iter()
            .filter(|(set, _)| *set != owner)
            .find(|(_, ts)| ts.tools().iter().any(|t| t.name == name))
            .map(|(set, _)| *set)
    }
}

fn check_clashes(available: &[NamedToolset]) -> Result<(), RegistryError> {
    let mut tools: HashMap<String, &'static str> = HashMap::new();
    let mut prompts: HashMap<String, &'static str> = HashMap::new();
    let mut templates: HashMap<String, &'static str> = HashMap::new();
    for (set, ts) in available {
        let names = [
            (
                "tool",
                ts.tools()
                    .into_iter()
                    .map(|t| t.name.to_string())
                    .collect::<Vec<_>>(),
                &mut tools,
            ),
            (
                "prompt",
                ts.prompts().into_iter().map(|p| p.name).collect(),
                &mut prompts,
            ),
            (
                "resource template",
                ts.resource_templates()
                    .into_iter()
                    .map(|t| t.uri_template.clone())
                    .collect(),
                &mut templates,
            ),
        ];
        for (kind, list, seen) in names {
            let mut local = HashSet::new();
            for name in list {
                if !local.insert(name.clone()) {
                    return Err(RegistryError::Clash {
                        kind,
                        name,
                        a: set,
                        b: set,
                    });
                }
                if let Some(other) = seen.insert(name.clone(), set) {
                    return Err(RegistryError::Clash {
                        kind,
                        name,
                        a: other,
                        b: set,
                    });
                }
            }
        }
    }
    Ok(())
}

fn build(available: &[NamedToolset], names: &[String]) -> Result<Active, RegistryError> {
    let mut toolsets = Vec::new();
    for name in names {
        let (_, ts) = available
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| RegistryError::Unknown(name.clone()))?;
        toolsets.push(ts.clone());
    }
    let mut tool_owner = HashMap::new();
    let mut prompt_owner = HashMap::new();
    let mut tools: Vec<Tool> = Vec::new();
    let mut prompts: Vec<Prompt> = Vec::new();
    let mut templates = Vec::new();
    for (i, ts) in toolsets.iter().enumerate() {
        for t in ts.tools() {
            tool_owner.insert(t.name.to_string(), i);
            tools.push(t);
        }
        for p in ts.prompts() {
            prompt_owner.insert(p.name.clone(), i);
            prompts.push(p);
        }
        templates.extend(ts.resource_templates());
    }
    let to_json = |v: Value| Arc::new(v);
    Ok(Active {
        toolsets,
        names: names.to_vec(),
        tool_owner,
        prompt_owner,
        tools_json: to_json(serde_json::to_value(&tools).unwrap_or_default()),
        prompts_json: to_json(serde_json::to_value(&prompts).unwrap_or_default()),
        templates_json: to_json(serde_json::to_value(&templates).unwrap_or_default()),
    })
}
