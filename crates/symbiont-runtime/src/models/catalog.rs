//! The model catalog: an immutable, indexed view of a validated [`Slm`].
//!
//! It answers which models exist, which an agent may use, and which fits a
//! set of needs. It never loads or runs a model.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::config::{
    ConfigError, Model, ModelCapability, ModelResourceRequirements, SandboxProfile, Slm,
    UnmappedAgentAccess,
};

/// Key that lets agents without an entry in `agent_model_maps` use models.
pub const UNMAPPED_AGENT_ACCESS_KEY: &str = "slm.model_allow_lists.unmapped_agent_access";

/// Why a catalog operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelCatalogError {
    /// The config breaks a rule.
    #[error("invalid config: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// No model has that id.
    #[error("unknown model `{model_id}`")]
    ModelNotFound {
        /// The id asked for.
        model_id: String,
    },
    /// The agent may not use the model.
    #[error("agent `{agent_id}` may not use model `{model_id}`: {reason}")]
    AccessDenied {
        /// The agent.
        agent_id: String,
        /// The model.
        model_id: String,
        /// Which rule denied it.
        reason: DenialReason,
    },
}

/// Which rule denied an access.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenialReason {
    /// The agent's entry in `agent_model_maps` does not list the model.
    NotInAgentMap,
    /// The agent has no entry and unmapped agents may use nothing.
    UnmappedAgent,
}

impl std::fmt::Display for DenialReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotInAgentMap => f.write_str(
                "the model is not in the agent's list in slm.model_allow_lists.agent_model_maps",
            ),
            Self::UnmappedAgent => write!(
                f,
                "the agent has no entry in slm.model_allow_lists.agent_model_maps and \
                 `{UNMAPPED_AGENT_ACCESS_KEY}` is \"deny\" (set it to \"all_global_models\" \
                 to let unmapped agents use every global model)"
            ),
        }
    }
}

/// Counts that describe a catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CatalogStatistics {
    /// Models defined.
    pub total_models: usize,
    /// Models per capability (capabilities no model has are left out).
    pub models_by_capability: BTreeMap<ModelCapability, usize>,
    /// Models per provider kind.
    pub models_by_provider: BTreeMap<&'static str, usize>,
    /// Agents with an entry in `agent_model_maps`.
    pub mapped_agents: usize,
    /// Sandbox profiles defined.
    pub sandbox_profiles: usize,
    /// The default profile's name.
    pub default_sandbox_profile: String,
    /// Smallest `min_memory_mb` of any model.
    pub min_memory_mb: Option<u64>,
    /// Largest `min_memory_mb` of any model.
    pub max_memory_mb: Option<u64>,
}

/// Registry of models, agent allow-lists and sandbox profiles.
///
/// Built once from a validated [`Slm`]; immutable afterwards. Cloning is an
/// `Arc` clone, and the catalog is `Send + Sync`.
#[derive(Debug, Clone)]
pub struct ModelCatalog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    slm: Slm,
    by_id: HashMap<String, usize>,
    /// Per capability, model indices in config order.
    by_capability: HashMap<ModelCapability, Vec<usize>>,
    /// Capability bit set per model, for fast filtering.
    capability_bits: Vec<u8>,
    /// Per agent, sorted and deduplicated model indices.
    agent_models: HashMap<String, Vec<usize>>,
    all_indices: Vec<usize>,
}

fn bit(c: ModelCapability) -> u8 {
    1 << (c as u8)
}

impl ModelCatalog {
    /// Validates the config and builds the indices.
    pub fn new(slm: Slm) -> Result<Self, ModelCatalogError> {
        slm.validate()?;
        let models = &slm.model_allow_lists.global_models;
        let by_id: HashMap<String, usize> = models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        let mut by_capability: HashMap<ModelCapability, Vec<usize>> = HashMap::new();
        let mut capability_bits = Vec::with_capacity(models.len());
        for (i, m) in models.iter().enumerate() {
            let mut bits = 0u8;
            for &c in &m.capabilities {
                if bits & bit(c) == 0 {
                    by_capability.entry(c).or_default().push(i);
                }
                bits |= bit(c);
            }
            capability_bits.push(bits);
        }
        let agent_models = slm
            .model_allow_lists
            .agent_model_maps
            .iter()
            .map(|(agent, ids)| {
                let mut idx: Vec<usize> =
                    ids.iter().filter_map(|id| by_id.get(id).copied()).collect();
                idx.sort_unstable();
                idx.dedup();
                (agent.clone(), idx)
            })
            .collect();
        let all_indices = (0..models.len()).collect();
        Ok(Self {
            inner: Arc::new(Inner {
                slm,
                by_id,
                by_capability,
                capability_bits,
                agent_models,
                all_indices,
            }),
        })
    }

    /// The config the catalog was built from.
    pub fn config(&self) -> &Slm {
        &self.inner.slm
    }

    fn models(&self) -> &[Model] {
        &self.inner.slm.model_allow_lists.global_models
    }

    /// The model with this id.
    pub fn get_model(&self, model_id: &str) -> Option<&Model> {
        self.inner.by_id.get(model_id).map(|&i| &self.models()[i])
    }

    /// Every model, in config order.
    pub fn list_models(&self) -> &[Model] {
        self.models()
    }

    /// Indices of the models an agent may use, in config order.
    fn agent_indices(&self, agent_id: &str) -> &[usize] {
        match self.inner.agent_models.get(agent_id) {
            Some(idx) => idx,
            None => match self.inner.slm.model_allow_lists.unmapped_agent_access {
                UnmappedAgentAccess::AllGlobalModels => &self.inner.all_indices,
                UnmappedAgentAccess::Deny => &[],
            },
        }
    }

    /// The models an agent may use, in config order. An agent with no entry
    /// in `agent_model_maps` gets none unless `unmapped_agent_access` is
    /// `"all_global_models"`.
    pub fn get_models_for_agent(&self, agent_id: &str) -> Vec<&Model> {
        let models = self.models();
        self.agent_indices(agent_id)
            .iter()
            .map(|&i| &models[i])
            .collect()
    }

    /// The models that have a capability, in config order (from an index).
    pub fn get_models_with_capability(&self, capability: &ModelCapability) -> Vec<&Model> {
        let models = self.models();
        self.inner
            .by_capability
            .get(capability)
            .map(|idx| idx.iter().map(|&i| &models[i]).collect())
            .unwrap_or_default()
    }

    /// The profile named by `default_sandbox_profile`.
    pub fn get_default_sandbox_profile(&self) -> Option<&SandboxProfile> {
        self.inner.slm.default_profile()
    }

    /// The profile with this name.
    pub fn get_sandbox_profile(&self, name: &str) -> Option<&SandboxProfile> {
        self.inner.slm.sandbox_profiles.get(name)
    }

    /// Names of every profile, sorted.
    pub fn list_sandbox_profiles(&self) -> Vec<&str> {
        self.inner
            .slm
            .sandbox_profiles
            .keys()
            .map(String::as_str)
            .collect()
    }

    /// Checks that the model exists and the agent may use it.
    pub fn validate_model_access(
        &self,
        model_id: &str,
        agent_id: &str,
    ) -> Result<(), ModelCatalogError> {
        let &index =
            self.inner
                .by_id
                .get(model_id)
                .ok_or_else(|| ModelCatalogError::ModelNotFound {
                    model_id: model_id.into(),
                })?;
        if self.agent_indices(agent_id).binary_search(&index).is_ok() {
            return Ok(());
        }
        let reason = if self.inner.agent_models.contains_key(agent_id) {
            DenialReason::NotInAgentMap
        } else {
            DenialReason::UnmappedAgent
        };
        Err(ModelCatalogError::AccessDenied {
            agent_id: agent_id.into(),
            model_id: model_id.into(),
            reason,
        })
    }

    /// What the model needs to run.
    pub fn get_model_requirements(&self, model_id: &str) -> Option<&ModelResourceRequirements> {
        self.get_model(model_id).map(|m| &m.resource_requirements)
    }

    /// The best model that has every capability asked for, needs at most
    /// `max_memory_mb` (when given) and that the agent may use (when given).
    ///
    /// Among those, the best is the one needing the least memory
    /// (`min_memory_mb`), then the fewest preferred CPU cores, then the one
    /// defined first in the config. The result is deterministic.
    pub fn find_best_model_for_requirements(
        &self,
        capabilities: &[ModelCapability],
        max_memory_mb: Option<u64>,
        agent_id: Option<&str>,
    ) -> Option<&Model> {
        let wanted = capabilities.iter().fold(0u8, |acc, &c| acc | bit(c));
        let agent: Option<&[usize]> = agent_id.map(|a| self.agent_indices(a));
        // Walk the smallest index that every answer must be in.
        let mut candidates: &[usize] = &self.inner.all_indices;
        for c in capabilities {
            let idx = self
                .inner
                .by_capability
                .get(c)
                .map_or(&[][..], Vec::as_slice);
            if idx.len() < candidates.len() {
                candidates = idx;
            }
        }
        if let Some(a) = agent {
            if a.len() < candidates.len() {
                candidates = a;
            }
        }
        let models = self.models();
        let bits = &self.inner.capability_bits;
        let mut best: Option<usize> = None;
        for &i in candidates {
            if bits[i] & wanted != wanted {
                continue;
            }
            let req = &models[i].resource_requirements;
            if max_memory_mb.is_some_and(|max| req.min_memory_mb > max) {
                continue;
            }
            if let Some(a) = agent {
                if !std::ptr::eq(a, candidates) && a.binary_search(&i).is_err() {
                    continue;
                }
            }
            best = match best {
                Some(b) if !better(req, &models[b].resource_requirements) => Some(b),
                _ => Some(i),
            };
        }
        best.map(|i| &models[i])
    }

    /// Counts describing the catalog.
    pub fn get_statistics(&self) -> CatalogStatistics {
        let models = self.models();
        let mut by_provider = BTreeMap::new();
        for m in models {
            *by_provider.entry(m.provider.kind()).or_insert(0) += 1;
        }
        CatalogStatistics {
            total_models: models.len(),
            models_by_capability: self
                .inner
                .by_capability
                .iter()
                .map(|(c, v)| (*c, v.len()))
                .collect(),
            models_by_provider: by_provider,
            mapped_agents: self.inner.agent_models.len(),
            sandbox_profiles: self.inner.slm.sandbox_profiles.len(),
            default_sandbox_profile: self.inner.slm.default_sandbox_profile.clone(),
            min_memory_mb: models
                .iter()
                .map(|m| m.resource_requirements.min_memory_mb)
                .min(),
            max_memory_mb: models
                .iter()
                .map(|m| m.resource_requirements.min_memory_mb)
                .max(),
        }
    }
}

/// Whether `a` beats `b` (strictly); ties keep the earlier model because
/// candidates are visited in config order.
fn better(a: &ModelResourceRequirements, b: &ModelResourceRequirements) -> bool {
    (a.min_memory_mb, a.preferred_cpu_cores) < (b.min_memory_mb, b.preferred_cpu_cores)
}
