//! Reading a catalogue entry from a form or a JSON body, with one set of messages.

use labhub_core::resources::Amount;
use labhub_core::{Contract, ImageFields, ImageKind, ImageRef, Placement};
use serde::Deserialize;

use crate::AppError;

/// A list as words (JSON), or as one text field (forms): a command split on spaces, placement
/// constraints one per line.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Command {
    Words(Vec<String>),
    Line(String),
}

/// What an admin submits for a catalogue entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInput {
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    pub reference: String,
    pub kind: String,
    #[serde(default)]
    pub port: Option<Amount>,
    #[serde(default)]
    pub command: Option<Command>,
    /// Cores, e.g. 1 or "0.5".
    pub cpu: Amount,
    /// Bytes, or a size such as "2G".
    pub memory: Amount,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub recipe: Option<String>,
    /// `labhub` (the default) or `jupyterhub`.
    #[serde(default)]
    pub contract: Option<String>,
    /// Swarm placement constraints: a list (JSON) or one per line (forms).
    #[serde(default)]
    pub placement: Option<Command>,
}

fn yes() -> bool {
    true
}

impl ImageInput {
    /// Checks everything and returns the fields to store.
    pub fn into_fields(self) -> Result<ImageFields, AppError> {
        let bad = |m: String| AppError::BadRequest(m);
        let reference = ImageRef::parse(self.reference.trim()).map_err(|e| bad(e.to_string()))?;
        let kind = ImageKind::parse(self.kind.trim())
            .ok_or_else(|| bad(format!("'kind' must be jupyter, rstudio or custom, not {:?}", self.kind)))?;
        let port = match &self.port {
            None => None,
            Some(p) if p.text().trim().is_empty() => None,
            Some(p) => Some(
                p.text()
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("'port' must be 1-65535".into()))?,
            ),
        };
        let command = match self.command {
            None => None,
            Some(Command::Words(w)) => Some(w),
            Some(Command::Line(l)) => Some(l.split_whitespace().map(str::to_string).collect()),
        }
        .filter(|c: &Vec<String>| !c.is_empty());
        let contract = match self.contract.as_deref().map(str::trim) {
            None | Some("") => Contract::default(),
            Some(c) => {
                Contract::parse(c).ok_or_else(|| bad(format!("'contract' must be labhub or jupyterhub, not {c:?}")))?
            }
        };
        let placement = match self.placement {
            None => Vec::new(),
            Some(Command::Words(w)) => w,
            Some(Command::Line(l)) => l.lines().map(str::to_string).collect(),
        }
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .map(|p| Placement::parse(p).map_err(|e| bad(e.to_string())))
        .collect::<Result<_, _>>()?;
        let cpu_millis = self.cpu.cpu_millis()?;
        let memory_bytes = self.memory.memory_bytes()?;
        Ok(ImageFields {
            display_name: self.display_name.trim().to_string(),
            description: self.description.trim().to_string(),
            reference,
            kind,
            port,
            command,
            cpu_millis,
            memory_bytes,
            enabled: self.enabled,
            recipe: self.recipe.map(|r| r.trim().to_string()).filter(|r| !r.is_empty()),
            contract,
            placement,
        })
    }
}
